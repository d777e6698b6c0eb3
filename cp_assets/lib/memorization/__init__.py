"""lib.memorization."""
