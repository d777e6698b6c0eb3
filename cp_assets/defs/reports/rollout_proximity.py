"""`rollout_proximity`: how near each model answer, and each of its sentences, sits to a corpus split, per model x
split.

Every rollout of the model (all eval sets, every sampling-parameter hash) is embedded whole (unit `answer`) and
sentence by sentence (unit `sentence`, with character offsets into the completion), and matched to its nearest chunk
of the split, with the percentile in the split's reference distribution (shared with `eval_proximity`). Table
`rollout_proximity` in the results DuckDB (`cp_assets.lib.reports.answer_proximity`).
"""


import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_split_partitions, rollouts_of_model, shards_of_split
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.embeddings import embeddings
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.lib.reports import answer_proximity, proximity
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class RolloutProximityConfig(dg.Config):
    min_words: int = 3  # sentences of fewer words are not matched
    reference_size: int = proximity.REFERENCE_SIZE
    reference_seed: int = proximity.REFERENCE_SEED
    exact: bool = True  # FAISS flat (exact); False: HNSW with `ef_search`
    ef_search: int = 100
    examples: int = 3  # annotated answers shown in the metadata


@dg.asset(
    partitions_def=model_split_partitions,
    deps=[dg.AssetDep(rollouts, partition_mapping=rollouts_of_model),
          dg.AssetDep(embeddings, partition_mapping=shards_of_split)],
    group_name="reports",
    pool="gpu",  # encodes texts with the embedding model
    op_tags=GPU_OP_TAGS,
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    retry_policy=PG_RETRY,
    description="Model answer x corpus split proximity: for every rollout of the model, the whole answer and each "
                "sentence (char offsets) with its nearest chunk, cosine / l2 / inner-product distance and percentile "
                "in the split's reference distribution; table `rollout_proximity`. Replaced per partition.",
)
def rollout_proximity(context: dg.AssetExecutionContext, config: RolloutProximityConfig, encoder: SentenceEncoder,
                      pg: PgVectorStore, results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    return result(answer_proximity.rollout_proximity_report(
        pg.store(), results.db(), encoder.model, keys["model"], keys["split"], min_words=config.min_words,
        reference_size=config.reference_size, reference_seed=config.reference_seed, exact=config.exact,
        ef_search=config.ef_search, examples=config.examples, log=context.log.info))


@dg.asset_check(asset=rollout_proximity, partitions_def=model_split_partitions, blocking=True,
                description="One row per (rollout, unit, idx), percentiles within 0-100, l2^2 = 2 x cosine; no rows "
                            "only when no answer has text.")
def check_rollout_proximity_rows_consistent(context: dg.AssetCheckExecutionContext,
                                            results: ResultsStore) -> dg.AssetCheckResult:
    keys = context.partition_key.keys_by_dimension
    passed, figures = proximity.rollout_rows_consistent(results.db(), keys["model"], keys["split"])
    return dg.AssetCheckResult(passed=passed, metadata=figures)
