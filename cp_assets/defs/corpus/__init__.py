"""defs.corpus."""
