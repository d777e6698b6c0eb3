"""`eval_samples`: one eval set's samples (GSM8K, MATH-500, MATH, verbatim recall) in the results DuckDB."""


import collections

import dagster as dg

from cp_assets.defs.partitions import eval_set_partitions
from cp_assets.lib.evals import load_evals, load_samples, to_request
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
    name = context.partition_key
    definition = load_evals().get(name)
    samples = load_samples(name)
    rows = [{"sample_id": s.id, "row_idx": i, "prompt": s.prompt, "reference": s.reference,
             "request_prompt": to_request(s, definition).prompt, "metadata": s.metadata}
            for i, s in enumerate(samples)]
    n = results.db().replace_samples(name, rows)
    context.log.info(f"{name}: {n} samples into {results.db().path}")
    by = collections.Counter(str(s.metadata.get("level") or s.metadata.get("category") or "all") for s in samples)
    return dg.MaterializeResult(metadata={
        "samples": n, "by_level_or_category": dict(sorted(by.items())), "results_db": str(results.db().path),
        "first_id": rows[0]["sample_id"] if rows else None,
        "preview": dg.MetadataValue.md("\n".join(f"- `{r['sample_id']}`: {r['prompt'][:120]!r}" for r in rows[:5])),
    })
