"""What a node does besides gossip, one module per node type."""
