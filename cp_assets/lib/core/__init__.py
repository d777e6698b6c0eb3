"""lib.core."""
