"""`rollouts`: what each model says to each eval sample, partitioned by eval set x model, graded, resumable.

Each finished rollout is written as it completes, keyed by (sample id, model, sampling-parameter hash): a killed run
resumes where it stopped and a rerun with the same parameters generates nothing. Runs in the `gpu` pool. The work is
`cp_assets.lib.evals.rollouts.eval_rollouts`.
"""


import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import eval_model_partitions
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.lib.evals.generation import SamplingParams
from cp_assets.lib.evals.rollouts import eval_rollouts, rollouts_consistent
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
    group_name="rollouts",
    kinds={"duckdb", "pytorch"},
    owners=["team:evals"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
    description="Model rollouts for one eval set x model (models.yaml): completion, token ids, logprobs, sampling "
                "params, latency, `correct`; table `rollouts` in the results DuckDB. Resumable and idempotent.",
)
def rollouts(context: dg.AssetExecutionContext, config: RolloutsConfig, llm: LLMResource,
             results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                            seed=config.seed)
    meta, version = eval_rollouts(llm.backend(keys["model"]), keys["eval_set"], params, results.db(),
                                  limit=config.limit, system_prompt=config.system_prompt, log=context.log.info)
    return result(meta, data_version=dg.DataVersion(version))


@dg.asset_check(asset=rollouts, partitions_def=eval_model_partitions, blocking=True,
                description="Rows, and one logprob per completion token wherever both are recorded (rollouts of "
                            "samples no longer in eval_samples and completions without token ids are counted).")
def check_rollouts_consistent(context: dg.AssetCheckExecutionContext, results: ResultsStore) -> dg.AssetCheckResult:
    keys = context.partition_key.keys_by_dimension
    passed, figures = rollouts_consistent(results.db(), keys["eval_set"], keys["model"])
    return dg.AssetCheckResult(passed=passed, metadata=figures)
