"""lib.corpus."""
