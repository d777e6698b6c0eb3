"""defs.evals."""
