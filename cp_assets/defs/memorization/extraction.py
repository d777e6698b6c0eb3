"""`extraction`: Carlini et al.'s k-extractability test of one model on one split: windows of P + S tokens sampled
from the split's documents, the first P tokens as the prompt, S tokens greedy-generated; exact-match rate (with a
Wilson interval) and the edit-distance distribution. For models trained here each window is marked member or not."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_split_partitions, shards_of_split
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.memorization.materialize import materialize_extraction
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore



class ExtractionConfig(dg.Config):
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    n: int = 200  # windows sampled (seeded)
    seed: int = 0
    members_only: bool = True  # for models trained here on this split: sample only the documents they saw


@dg.asset(
    partitions_def=model_split_partitions,
    deps=[dg.AssetDep(raw_corpus, partition_mapping=shards_of_split)],
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="k-extractability (Carlini et al.): P-token prefixes of windows sampled from the split, S tokens "
                "greedy-generated; exact-match rate with a Wilson interval, edit distances. Table `extraction`.",
)
def extraction(context: dg.AssetExecutionContext, config: ExtractionConfig, llm: LLMResource, pg: PgVectorStore,
               results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    model_id, split = keys["model"], keys["split"]
    return result(materialize_extraction(
        pg.store(), results.db(), llm.backend(model_id), llm.registry().get(model_id), model_id, split,
        prefix_tokens=config.prefix_tokens, suffix_tokens=config.suffix_tokens, n=config.n, seed=config.seed,
        members_only=config.members_only, log=context.log.info))
