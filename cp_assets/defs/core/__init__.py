"""defs.core."""
