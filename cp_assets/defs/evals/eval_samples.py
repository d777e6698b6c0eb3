"""`eval_samples`: one eval set's samples (GSM8K, MATH-500, MATH, verbatim recall) in the results DuckDB."""


import collections

import dagster as dg

from cp_assets.defs.core.partitions import eval_set_partitions
from cp_assets.lib.core.versions import samples_version
from cp_assets.lib.evals.eval_registry import sample_rows
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
    name, db = context.partition_key, results.db()
    rows = sample_rows(name)
    n = db.replace_samples(name, rows)
    context.log.info(f"{name}: {n} samples into {db.path}")
    by = collections.Counter(str(r["metadata"].get("level") or r["metadata"].get("category") or "all") for r in rows)
    return dg.MaterializeResult(data_version=dg.DataVersion(samples_version(rows)), metadata={
        "samples": n, "by_level_or_category": dict(sorted(by.items())), "results_db": str(db.path),
        "first_id": rows[0]["sample_id"] if rows else None,
        "preview": dg.MetadataValue.md("\n".join(f"- `{r['sample_id']}`: {r['prompt'][:120]!r}" for r in rows[:5])),
    })
