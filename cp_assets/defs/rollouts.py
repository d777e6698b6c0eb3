"""`rollouts`: what each model says to each eval sample, partitioned by eval set x model, graded, resumable.

Each finished rollout is written as it completes, keyed by (sample id, model, sampling-parameter hash): a killed run
resumes where it stopped and a rerun with the same parameters generates nothing. Runs in the `gpu` pool.
"""


import collections

import dagster as dg

from cp_assets.lib import plots, settings

from cp_assets.defs.eval_samples import eval_samples
from cp_assets.defs.partitions import eval_model_partitions
from cp_assets.lib.evals import load_evals, load_samples, to_request
from cp_assets.lib.generate import generate_and_store
from cp_assets.lib.grading import grade
from cp_assets.lib.rollouts import SamplingParams, accuracy_by
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.results import ResultsStore


class RolloutsConfig(dg.Config):
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = 0
    system_prompt: str | None = None
    limit: int | None = None  # the first N samples of the eval set (None: all)


@dg.asset(
    partitions_def=eval_model_partitions,
    deps=[eval_samples],
    group_name="evals",
    kinds={"duckdb", "pytorch"},
    owners=["team:evals"],
    pool="gpu",
    op_tags={"cprox/resource": "gpu"},
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
    description="Model rollouts for one eval set x model (models.yaml): completion, token ids, logprobs, sampling "
                "params, latency, `correct`; table `rollouts` in the results DuckDB. Resumable and idempotent.",
)
def rollouts(context: dg.AssetExecutionContext, config: RolloutsConfig, llm: LLMResource,
             results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    eval_set, model_id = keys["eval_set"], keys["model"]
    definition = load_evals().get(eval_set)
    samples = load_samples(eval_set, limit=config.limit)
    by_id = {s.id: s for s in samples}
    requests = [to_request(s, definition).model_copy(update={"system_prompt": config.system_prompt})
                for s in samples]
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                            seed=config.seed)
    backend = llm.backend(model_id)
    db = results.db()
    figures = generate_and_store(backend, requests, params, db, log=context.log.info,
                                 grade=lambda r: grade(by_id[r.sample_id], r.completion))
    stored = [r for r in db.rollouts(eval_set=eval_set, model_id=model_id, params_hash=figures["params_hash"])
              if r.sample_id in by_id]
    graded = [r.correct for r in stored if r.correct is not None]
    finish = collections.Counter(r.finish_reason for r in stored)
    extra = {}
    field, by = accuracy_by(stored)
    if by:
        png = plots.bars([str(k) for k in by], [a for a, _ in by.values()],
                         settings.home() / "plots" / f"rollouts_{eval_set}_{model_id}.png",
                         f"{model_id} on {eval_set}: accuracy by {field}", "accuracy", [n for _, n in by.values()])
        extra[f"accuracy_by_{field}"] = dg.MetadataValue.md(plots.markdown_image(png, f"accuracy by {field}"))
    return dg.MaterializeResult(metadata={k: v for k, v in (extra | figures | {
        "model": model_id, "backend": backend.backend, "eval_set": eval_set, "rollouts": len(stored),
        "accuracy": round(sum(graded) / len(graded), 4) if graded else None,
        "finish_reasons": dict(finish), "params": params.model_dump(mode="json"),
        "mean_latency_s": round(sum(r.latency_s for r in stored) / len(stored), 3) if stored else None,
    }).items() if v is not None})
