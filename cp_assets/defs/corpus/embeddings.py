"""`embeddings`: normalized sentence-transformer vectors of one shard's chunks in pgvector, with the shard's own
HNSW index.

Runs in the `gpu` pool. Batches commit as they finish, so a killed run resumes; the shard's published leaf is
swapped in atomically at the end. A source's `embed_sample` rate (corpus registry) below 1 embeds that share of its
chunks (`lib/corpus/embed_sample.py`). Checks (one step, three verdicts): one vector per (sampled) chunk, the
model's dimension, no NULL/non-finite vectors.
"""


import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import split_and_shard, split_shard_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.chunks import chunks
from cp_assets.lib.corpus.embeddings import embed_and_publish, embedding_checks
from cp_assets.resources.corpus_registry import CorpusRegistry
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore


@dg.asset(
    partitions_def=split_shard_partitions,
    deps=[chunks],
    group_name="embeddings",
    kinds={"pgvector", "pytorch"},
    owners=["team:corpus"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Chunk embeddings (sentence-transformers, L2-normalized) in table `emb_<model>`, partitioned by "
                "split and shard, an HNSW cosine index per shard. Resumable; published atomically.",
)
def embeddings(context: dg.AssetExecutionContext, encoder: SentenceEncoder, pg: PgVectorStore,
               registry: CorpusRegistry) -> dg.MaterializeResult:
    split, shard = split_and_shard(context.partition_key)
    meta, version = embed_and_publish(pg.store(), split, encoder.model, shard=shard, batch_size=encoder.batch_size,
                                      commit_every=encoder.commit_every, device=encoder.device,
                                      precision=encoder.precision, log=context.log.info,
                                      rates=registry.load().split(split).embed_samples())
    return result(meta, data_version=dg.DataVersion(version) if version else None)


CHECKS = {  # check name -> (the lib figure it reports, what it says)
    "check_embeddings_count_matches_chunks": ("count_matches_chunks", "Exactly one vector per chunk of the shard "
                                              "(under `embed_sample`: per sampled chunk, none for the others)."),
    "check_embeddings_dim_matches_model": ("dim_matches_model", "Every vector has the embedding model's dimension."),
    "check_embeddings_finite": ("finite", "No NULL or non-finite vectors."),
}


@dg.multi_asset_check(
    specs=[dg.AssetCheckSpec(name, asset=embeddings, blocking=True, partitions_def=split_shard_partitions,
                             description=about) for name, (_, about) in CHECKS.items()],
    retry_policy=PG_RETRY,
    description="The shard's vectors, checked in one step: one per (sampled) chunk, the model's dimension, finite.",
)
def embedding_checks_step(context: dg.AssetCheckExecutionContext, encoder: SentenceEncoder, pg: PgVectorStore,
                          registry: CorpusRegistry):
    split, shard = split_and_shard(context.partition_key)
    verdicts = embedding_checks(pg.store(), split, encoder.model, shard,
                                rates=registry.load().split(split).embed_samples())
    for name, (figure, _) in CHECKS.items():
        passed, figures = verdicts[figure]
        yield dg.AssetCheckResult(check_name=name, asset_key=embeddings.key, passed=passed, metadata=figures)


all_embedding_checks = [embedding_checks_step]
