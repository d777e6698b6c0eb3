"""`eval_samples`: one eval set's samples (GSM8K, MATH-500, MATH, verbatim recall) in the results DuckDB."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import eval_set_partitions
from cp_assets.lib.evals.eval_registry import samples_consistent, store_samples
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=eval_set_partitions,
    group_name="evals",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    description="Samples of one eval set (evals.yaml): stable ids like `gsm8k:17`, prompt, reference answer, "
                "metadata (level, subject, steps, category), and the prompt sent to models; table `eval_samples`.",
)
def eval_samples(context: dg.AssetExecutionContext, results: ResultsStore) -> dg.MaterializeResult:
    meta, version = store_samples(context.partition_key, results.db(), log=context.log.info)
    return result(meta, data_version=dg.DataVersion(version))


@dg.asset_check(asset=eval_samples, partitions_def=eval_set_partitions, blocking=True,
                description="Rows, no empty prompt, row indexes 0..n-1 once each.")
def check_eval_samples_consistent(context: dg.AssetCheckExecutionContext,
                                  results: ResultsStore) -> dg.AssetCheckResult:
    passed, figures = samples_consistent(results.db(), context.partition_key)
    return dg.AssetCheckResult(passed=passed, metadata=figures)
