"""corpus-proximity tests: lib tests, assets through Dagster, end-to-end runs on the shared data (see conftest.py)."""
