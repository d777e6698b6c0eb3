"""lib.evals."""
