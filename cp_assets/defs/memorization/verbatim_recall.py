"""`verbatim_recall`: greedy completion of every prefix of the verbatim-recall set by one model, scored against the
true continuation (exact, normalized, character and word edit distance and similarity, longest matching prefix in
words), with rates by category and 95% intervals. Table `verbatim_recall`; the completions are stored as rollouts."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_partitions
from cp_assets.lib.memorization.materialize import materialize_verbatim_recall
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.results import ResultsStore


class VerbatimRecallConfig(dg.Config):
    eval_set: str = "recall"
    max_tokens: int = 64  # the continuations are 5-60 words
    limit: int | None = None


@dg.asset(
    partitions_def=model_partitions,
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    description="Verbatim recall of famous passages: greedy completion of each prefix, scored against the "
                "continuation (exact / normalized match, char and word edit distance and similarity, longest "
                "matching word prefix); rates by category with Wilson intervals. Table `verbatim_recall`.",
)
def verbatim_recall(context: dg.AssetExecutionContext, config: VerbatimRecallConfig, llm: LLMResource,
                    results: ResultsStore) -> dg.MaterializeResult:
    model_id = context.partition_key
    return result(materialize_verbatim_recall(results.db(), llm.backend(model_id), model_id, eval_set=config.eval_set,
                                              max_tokens=config.max_tokens, limit=config.limit, log=context.log.info))
