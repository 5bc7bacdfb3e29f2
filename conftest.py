"""Repository-level pytest configuration: the repo root on sys.path for `tests.*` imports."""

# `pytester` for the plugin's own tests (tests/plugin/); pytest only honours this at the root.
pytest_plugins = ["pytester"]
