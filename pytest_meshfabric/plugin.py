"""The pytest11 entry point of meshfabric (options and fixtures arrive with the plugin issue)."""
