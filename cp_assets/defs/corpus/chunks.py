"""`chunks`: token-aware, paragraph-aware chunks of one shard of a split, cut with the embedding model's tokenizer."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import split_and_shard, split_shard_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.corpus.chunking import chunk_split
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore


class ChunksConfig(dg.Config):
    max_tokens: int = 128
    overlap: int = 16


@dg.asset(
    partitions_def=split_shard_partitions,
    deps=[raw_corpus],
    group_name="corpus",
    kinds={"postgres", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Chunks of at most `max_tokens` tokens (embedding model's tokenizer), paragraphs packed whole, long "
                "paragraphs windowed with `overlap`; ids `<doc_id>#<n>`, char offsets into the document. "
                "Table `cprox_chunks`, replaced atomically per shard.",
)
def chunks(context: dg.AssetExecutionContext, config: ChunksConfig, encoder: SentenceEncoder,
           pg: PgVectorStore) -> dg.MaterializeResult:
    split, shard = split_and_shard(context.partition_key)
    return result(chunk_split(pg.store(), split, encoder.tokenizer(), encoder.model, shard=shard,
                              max_tokens=config.max_tokens, overlap=config.overlap, log=context.log.info))
