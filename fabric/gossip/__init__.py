"""Per-mesh gossip: a protocol core without I/O (``proto``), signed digests (``digest``),
a deterministic simulator (``sim``) and the adapter that runs the core over iroh (``net``)."""
