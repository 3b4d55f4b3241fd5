"""Subcommands of the `openvlthinker` console script (one module each)."""
