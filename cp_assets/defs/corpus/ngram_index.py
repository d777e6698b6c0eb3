"""`ngram_index`: the exact token index of one shard of a split (a bit-packed suffix array,
`CPROX_HOME/ngrams/<split>/<shard>.json` and its folder), rebuilt when the shard's documents change; a split's shards
are read as one index by `contamination`, `rollout_traces` and `cprox trace`."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import split_and_shard, split_shard_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.corpus.exact.ngram_index import DEFAULT_N, MAX_SEGMENT_TOKENS
from cp_assets.lib.corpus.exact.ngram_split import index_matches_corpus, index_split
from cp_assets.resources.pgvector_store import PgVectorStore


class NgramIndexConfig(dg.Config):
    n: int = DEFAULT_N  # default shortest traced span, and the window of contamination's rare-match rule
    max_segment_tokens: int = MAX_SEGMENT_TOKENS  # tokens per suffix array (bounds the build's memory: ~17 B/token)
    rebuild: bool = False  # build it again even when the shard's documents are unchanged


@dg.asset(
    partitions_def=split_shard_partitions,
    deps=[raw_corpus],
    group_name="corpus",
    kinds={"numpy", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Exact token index of one shard: a suffix array over its token ids, bit-packed (about 5 bytes a "
                "token), published atomically, rebuilt only when the shard's documents change. Answers counts of "
                "any span, n-gram contamination and maximal verbatim span tracing exactly (as infini-gram).",
)
def ngram_index(context: dg.AssetExecutionContext, config: NgramIndexConfig, pg: PgVectorStore) -> dg.MaterializeResult:
    split, shard = split_and_shard(context.partition_key)
    meta, version = index_split(pg.store(), split, shard=shard, n=config.n, max_segment_tokens=config.max_segment_tokens,
                                rebuild=config.rebuild, log=context.log.info)
    return result(meta, data_version=dg.DataVersion(version))


@dg.asset_check(asset=ngram_index, partitions_def=split_shard_partitions, blocking=True,
                retry_policy=PG_RETRY,
                description="The index holds exactly the shard's documents.")
def check_ngram_index_matches_corpus(context: dg.AssetCheckExecutionContext, pg: PgVectorStore) -> dg.AssetCheckResult:
    split, shard = split_and_shard(context.partition_key)
    passed, figures = index_matches_corpus(pg.store(), split, shard)
    return dg.AssetCheckResult(passed=passed, metadata=figures)
