"""`raw_corpus`: the documents of one shard of a corpus split, read from its registry sources into Postgres."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import split_and_shard, split_shard_partitions
from cp_assets.defs.core.policies import PG_RETRY, bad_input_is_final
from cp_assets.lib.corpus.shards import read_corpus
from cp_assets.resources.corpus_registry import CorpusRegistry
from cp_assets.resources.pgvector_store import PgVectorStore


@dg.asset(
    partitions_def=split_shard_partitions,
    group_name="corpus",
    kinds={"postgres", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Documents of one shard of a corpus split (stable ids `<source>:<key>`, file:line or "
                "file:row_group:row locators), replaced atomically in Postgres table `cprox_documents`. A shard past "
                "the split's plan is empty.",
)
def raw_corpus(context: dg.AssetExecutionContext, registry: CorpusRegistry, pg: PgVectorStore) -> dg.MaterializeResult:
    with bad_input_is_final():
        split, shard = split_and_shard(context.partition_key)
        return result(read_corpus(registry.load(), split, pg.store(), log=context.log.info,
                                  warn=context.log.warning, shard=shard))
