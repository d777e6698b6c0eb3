"""`difficulty_report`: are harder eval questions further from the training data (Spearman rho with bootstrap 95%
intervals per split), do models get close questions right more often, and how contaminated is each eval set?

Reads eval_proximity, rollout_proximity, contamination, eval_samples and rollouts in the results DuckDB (whatever
partitions exist; missing inputs are skipped with a note), writes table `proximity_correlations` and attaches the
plots and tables to the materialization (`cp_assets.lib.reports.difficulty`).
"""


import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.lib.reports import difficulty
from cp_assets.resources.results import ResultsStore


class DifficultyReportConfig(dg.Config):
    n_boot: int = 1000  # bootstrap resamples of the items per correlation
    seed: int = 0
    n_bins: int = 5  # distance quantile bins for accuracy by distance
    embed_model: str | None = None  # default: CPROX_EMBED_MODEL when present in eval_proximity, else the most rows


@dg.asset(
    deps=["eval_proximity", "rollout_proximity", "contamination", "eval_samples", "rollouts"],
    group_name="reports",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    description="Spearman rho (bootstrap 95% CI) of question distance vs MATH level / GSM8K steps per split, distance "
                "vs correctness per model, accuracy by distance quintile, contamination rates; table "
                "`proximity_correlations` and plots.",
)
def difficulty_report(context: dg.AssetExecutionContext, config: DifficultyReportConfig,
                      results: ResultsStore) -> dg.MaterializeResult:
    return result(difficulty.difficulty_report(results.db(), n_boot=config.n_boot, seed=config.seed,
                                               n_bins=config.n_bins, embed_model=config.embed_model,
                                               warn=context.log.warning))
