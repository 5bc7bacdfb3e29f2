"""Repository-level pytest configuration: the repo root on sys.path for `tests.*` imports."""
