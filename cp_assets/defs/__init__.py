"""Dagster definitions, one module per asset family, named by the noun it produces."""
