"""defs.memorization."""
