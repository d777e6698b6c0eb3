"""`ResultsStore`: the results DuckDB file (eval samples, rollouts, reports), `CPROX_HOME/results.duckdb` by default."""


from functools import lru_cache

import dagster as dg

from cp_assets.lib.reports.results_db import ResultsDB


@lru_cache(maxsize=8)
def _db(path: str | None) -> ResultsDB:
    return ResultsDB(path)  # one per file: its schema is set up once per process


class ResultsStore(dg.ConfigurableResource):
    path: str | None = None  # default: $CPROX_HOME/results.duckdb

    def db(self) -> ResultsDB:
        return _db(self.path or None)
