"""`ngram_index`: the exact token n-gram index of one shard of a split (DuckDB,
`CPROX_HOME/ngrams/<split>/<shard>.duckdb`), updated incrementally from the shard's documents; a split's shards are
read as one index by `contamination`, `rollout_traces` and `cprox trace`."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import split_and_shard, split_shard_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.corpus.ngram_index import DEFAULT_N
from cp_assets.lib.corpus.ngram_split import index_matches_corpus, index_split
from cp_assets.resources.pgvector_store import PgVectorStore


class NgramIndexConfig(dg.Config):
    n: int = DEFAULT_N  # window length: the shortest traceable span and the lower bound of contamination n-grams
    batch_tokens: int = 2_000_000  # tokens per committed batch
    rebuild: bool = False  # drop the index file and build it from scratch


@dg.asset(
    partitions_def=split_shard_partitions,
    deps=[raw_corpus],
    group_name="corpus",
    kinds={"duckdb", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Exact token n-gram postings (hash, document, position) of one split in DuckDB; incremental (new or "
                "changed documents are added in committed batches, removed ones deleted) and sorted by hash for "
                "lookups. Answers n-gram contamination and maximal verbatim span tracing with exact counts.",
)
def ngram_index(context: dg.AssetExecutionContext, config: NgramIndexConfig, pg: PgVectorStore) -> dg.MaterializeResult:
    split, shard = split_and_shard(context.partition_key)
    meta, version = index_split(pg.store(), split, shard=shard, n=config.n, batch_tokens=config.batch_tokens,
                                rebuild=config.rebuild, log=context.log.info)
    return result(meta, data_version=dg.DataVersion(version))


@dg.asset_check(asset=ngram_index, partitions_def=split_shard_partitions, blocking=True,
                retry_policy=PG_RETRY,
                description="The index holds exactly the shard's documents (no batch lost or left over).")
def check_ngram_index_matches_corpus(context: dg.AssetCheckExecutionContext, pg: PgVectorStore) -> dg.AssetCheckResult:
    split, shard = split_and_shard(context.partition_key)
    passed, figures = index_matches_corpus(pg.store(), split, shard)
    return dg.AssetCheckResult(passed=passed, metadata=figures)
