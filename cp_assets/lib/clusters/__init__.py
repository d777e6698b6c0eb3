"""lib.clusters."""
