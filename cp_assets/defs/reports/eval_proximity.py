"""`eval_proximity`: how near each eval question sits to a corpus split in embedding space, per eval set x split.

For every question (`eval_samples.prompt`): its top-k chunks of the split (table `eval_neighbors`), the nearest one's
cosine / l2 / inner-product distance and its percentile in the split's reference distribution (table
`eval_proximity`); see `cp_assets.lib.reports.proximity`. Question embeddings and the reference are cached in the
results DuckDB, so the 2nd and 3rd split of an eval set encode nothing and an unchanged split reuses its reference.
"""


import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import eval_split_partitions, shards_of_split
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.embeddings import embeddings
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.lib.reports import proximity
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class EvalProximityConfig(dg.Config):
    k: int = 10  # neighbours per question in `eval_neighbors`
    reference_size: int = proximity.REFERENCE_SIZE  # random chunks of the split in its reference distribution
    reference_seed: int = proximity.REFERENCE_SEED
    exact: bool = True  # FAISS flat (exact); False: HNSW with `ef_search`, for splits of millions of chunks
    ef_search: int = 100
    limit: int | None = None  # the first N questions of the eval set (None: all)


@dg.asset(
    partitions_def=eval_split_partitions,
    deps=[eval_samples, dg.AssetDep(embeddings, partition_mapping=shards_of_split)],
    group_name="reports",
    pool="gpu",  # encodes texts with the embedding model
    op_tags=GPU_OP_TAGS,
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    retry_policy=PG_RETRY,
    description="Eval question x corpus split proximity: top-k nearest chunks (`eval_neighbors`), nearest-chunk "
                "cosine / l2 / inner-product distance and its percentile in the split's reference distribution "
                "(`eval_proximity`, `reference_distances`), in the results DuckDB. Replaced per partition.",
)
def eval_proximity(context: dg.AssetExecutionContext, config: EvalProximityConfig, encoder: SentenceEncoder,
                   pg: PgVectorStore, results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    return result(proximity.eval_proximity_report(
        pg.store(), results.db(), encoder.model, keys["eval_set"], keys["split"], k=config.k,
        reference_size=config.reference_size, reference_seed=config.reference_seed, exact=config.exact,
        ef_search=config.ef_search, limit=config.limit, log=context.log.info))


@dg.asset_check(asset=eval_proximity, partitions_def=eval_split_partitions, blocking=True,
                description="One row per question, percentiles within 0-100, l2^2 = 2 x cosine (unit vectors).")
def check_eval_proximity_rows_consistent(context: dg.AssetCheckExecutionContext, encoder: SentenceEncoder,
                                         results: ResultsStore) -> dg.AssetCheckResult:
    keys = context.partition_key.keys_by_dimension
    passed, figures = proximity.rows_consistent(
        results.db(), "eval_proximity", {"eval_set": keys["eval_set"], "split": keys["split"],
                                         "embed_model": encoder.model}, ["sample_id"], "min_cosine", "min_l2")
    return dg.AssetCheckResult(passed=passed, metadata=figures)
