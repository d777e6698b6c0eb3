"""`chunks`: token-aware, paragraph-aware chunks of one split, cut with the embedding model's tokenizer."""


import time

import dagster as dg

from cp_assets.defs.core.partitions import split_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.core import plots, settings
from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_documents
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore


class ChunksConfig(dg.Config):
    max_tokens: int = 128
    overlap: int = 16


@dg.asset(
    partitions_def=split_partitions,
    deps=[raw_corpus],
    group_name="corpus",
    kinds={"postgres", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Chunks of at most `max_tokens` tokens (embedding model's tokenizer), paragraphs packed whole, long "
                "paragraphs windowed with `overlap`; ids `<doc_id>#<n>`, char offsets into the document. "
                "Table `cprox_chunks`, replaced atomically per split.",
)
def chunks(context: dg.AssetExecutionContext, config: ChunksConfig, encoder: SentenceEncoder,
           pg: PgVectorStore) -> dg.MaterializeResult:
    split, store = context.partition_key, pg.store()
    cfg = ChunkConfig(config.max_tokens, config.overlap)
    tokenizer = encoder.tokenizer()
    lengths: list[int] = []

    def counted(items):
        for c in items:
            lengths.append(c.n_tokens)
            if len(lengths) % 10_000 == 0:
                context.log.info(f"{split}: {len(lengths):,} chunks so far")
            yield c

    t0 = time.perf_counter()
    n = store.replace_chunks(split, counted(chunk_documents(store.iter_documents(split), tokenizer, cfg)))
    secs = time.perf_counter() - t0
    if n == 0:
        raise ValueError(f"split {split!r} produced no chunks: materialize `raw_corpus` for it first")
    tokens = sum(lengths)
    context.log.info(f"{split}: {n:,} chunks, {tokens:,} tokens in {secs:.1f}s")
    png = plots.histogram(lengths, settings.home() / "plots" / f"chunk_tokens_{split}.png",
                          f"tokens per chunk ({split})", "tokens")
    return dg.MaterializeResult(metadata={
        "chunks": n,
        "tokens": tokens,
        "mean_tokens": round(tokens / n, 1),
        "max_tokens": cfg.max_tokens,
        "overlap": cfg.overlap,
        "tokenizer": encoder.model,
        "seconds": round(secs, 2),
        "tokens_per_s": round(tokens / secs, 1) if secs else None,
        "token_histogram": dg.MetadataValue.md(plots.markdown_image(png, "tokens per chunk")),
        "token_histogram_png": dg.MetadataValue.path(str(png)),
    })
