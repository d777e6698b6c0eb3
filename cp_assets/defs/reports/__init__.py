"""defs.reports."""
