"""The corpus domain's definitions: raw_corpus -> chunks -> embeddings (pgvector) and ngram_index, their checks, the
corpus jobs (CPU, and the GPU embedding job), the shard partitions sensor and the nightly shard backfill. Every
corpus job runs one shard of one split (partition `<shard>|<split>`)."""

import dagster as dg

from cp_assets.defs.core.executors import gpu_executor
from cp_assets.defs.corpus.chunks import chunks
from cp_assets.defs.corpus.corpus_shards_sensor import corpus_shards_sensor
from cp_assets.defs.corpus.embeddings import all_embedding_checks, embeddings
from cp_assets.defs.corpus.ngram_index import check_ngram_index_matches_corpus, ngram_index
from cp_assets.defs.corpus.nightly_shard_backfill import nightly_corpus_job, nightly_shard_backfill
from cp_assets.defs.corpus.raw_corpus import raw_corpus

assets = [raw_corpus, chunks, embeddings, ngram_index]

corpus_job = dg.define_asset_job(
    "corpus_job", selection=dg.AssetSelection.assets(raw_corpus, chunks, ngram_index),
    description="Read, chunk and n-gram-index one shard of a corpus split (CPU).",
)
gpu_embed_job = dg.define_asset_job(
    "gpu_embed_job", selection=dg.AssetSelection.assets(embeddings),
    executor_def=gpu_executor(), tags={"cprox/resource": "gpu"},
    description="Embed one shard of a corpus split into pgvector (GPU pool).",
)
all_assets_job = dg.define_asset_job(
    "all_assets_job", selection=dg.AssetSelection.assets(*assets),
    description="Everything for one shard: raw_corpus -> chunks -> embeddings, ngram_index (+ checks).",
)

defs = dg.Definitions(
    assets=assets,
    asset_checks=all_embedding_checks + [check_ngram_index_matches_corpus],
    jobs=[corpus_job, gpu_embed_job, all_assets_job, nightly_corpus_job],
    schedules=[nightly_shard_backfill],
    sensors=[corpus_shards_sensor],
)
