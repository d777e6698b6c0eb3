"""`raw_corpus`: the documents of one corpus split, read from its registry sources into Postgres."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import split_partitions
from cp_assets.defs.core.policies import PG_RETRY, bad_input_is_final
from cp_assets.lib.corpus.shards import read_corpus
from cp_assets.resources.corpus_registry import CorpusRegistry
from cp_assets.resources.pgvector_store import PgVectorStore


@dg.asset(
    partitions_def=split_partitions,
    group_name="corpus",
    kinds={"postgres", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Documents of one corpus split (stable ids `<source>:<key>`, file:line locators, byte offsets), "
                "replaced atomically in Postgres table `cprox_documents`.",
)
def raw_corpus(context: dg.AssetExecutionContext, registry: CorpusRegistry, pg: PgVectorStore) -> dg.MaterializeResult:
    with bad_input_is_final():
        return result(read_corpus(registry.load(), context.partition_key, pg.store(), log=context.log.info,
                                  warn=context.log.warning))
