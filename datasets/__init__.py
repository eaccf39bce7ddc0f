"""Dataset builders (run from the repository root as ``python -m datasets.<name>.<script>``)."""
