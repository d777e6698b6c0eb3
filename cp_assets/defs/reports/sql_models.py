"""SQL report assets: one unpartitioned asset per `dbt_like_sql/*.sql` file (file stem = asset = table name).

Dependencies come from the tables each query reads (`cp_assets.lib.reports.sql_models`): the asset owning a report table
(`report_tables.OWNERS`), or another SQL model. Upstream assets are partitioned; these read whatever partitions have
been written. Each run replaces the model's table in the results DuckDB in one transaction.
"""


import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.lib.reports.sql_models import SqlModel, discover, run_model_report
from cp_assets.resources.results import ResultsStore


def build_sql_model_asset(model: SqlModel) -> dg.AssetsDefinition:
    @dg.asset(
        name=model.name,
        deps=[dg.AssetKey(d) for d in model.deps],
        group_name="reports",
        kinds={"duckdb", "sql"},
        owners=["team:evals"],
        description=model.description or f"SQL report {model.path.name}",
        metadata={"sql_file": str(model.path)},
    )
    def _sql_model(context: dg.AssetExecutionContext, results: ResultsStore) -> dg.MaterializeResult:
        return result(run_model_report(results.db(), model, log=context.log.info))

    return _sql_model


def build_sql_model_assets(directory=None) -> list[dg.AssetsDefinition]:
    """One asset per SQL file of `directory` (default `dbt_like_sql/`)."""
    return [build_sql_model_asset(m) for m in discover(directory).values()]


sql_model_assets = build_sql_model_assets()
