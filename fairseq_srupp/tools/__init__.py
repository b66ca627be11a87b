"""Command-line tools behind this package's console entry points (setup.py)."""
