"""`ResultsStore`: the results DuckDB file (eval samples, rollouts, reports), `CPROX_HOME/results.duckdb` by default."""


import dagster as dg

from cp_assets.lib.results_db import ResultsDB


class ResultsStore(dg.ConfigurableResource):
    path: str | None = None  # default: $CPROX_HOME/results.duckdb

    def db(self) -> ResultsDB:
        return ResultsDB(self.path or None)
