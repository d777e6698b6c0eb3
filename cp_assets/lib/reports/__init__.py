"""lib.reports."""
