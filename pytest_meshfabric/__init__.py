"""pytest plugin and chaos harness for meshfabric clusters."""
