"""History checking: what a producer published against what the worker stored and emitted."""
