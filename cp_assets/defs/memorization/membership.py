"""`membership`: membership inference on one model: loss, zlib ratio, Min-K% and Min-K%++ per passage from the
model's token logprobs, and each score's AUROC (bootstrap interval, TPR at 1% / 5% FPR) at telling member passages
from non-members. Labels are exact for models trained here (`tiny_models`), a proxy for any other model."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.lib.memorization.materialize import materialize_membership
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class MembershipConfig(dg.Config):
    n: int = 150  # passages per class (one per document)
    words: int = 64  # words per passage
    max_tokens: int = 256
    seed: int = 0


@dg.asset(
    partitions_def=model_partitions,
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Membership inference: loss, zlib ratio, Min-K% and Min-K%++ per passage (teacher-forced token "
                "logprobs) and the AUROC of each at separating member from non-member passages, with bootstrap "
                "intervals and TPR at low FPR. Tables `membership_scores`, `membership_auroc`.",
)
def membership(context: dg.AssetExecutionContext, config: MembershipConfig, llm: LLMResource, pg: PgVectorStore,
               results: ResultsStore) -> dg.MaterializeResult:
    model_id = context.partition_key
    return result(materialize_membership(
        pg.store(), results.db(), llm.backend(model_id), llm.registry().get(model_id), model_id, n=config.n,
        words=config.words, max_tokens=config.max_tokens, seed=config.seed, log=context.log.info))
