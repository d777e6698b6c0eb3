"""defs.clusters."""
