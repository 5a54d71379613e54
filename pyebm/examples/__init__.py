"""Small, self-contained problems the tutorials and benchmarks share (no downloads: data ship with a PyPI package)."""
