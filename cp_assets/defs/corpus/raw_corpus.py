"""`raw_corpus`: the documents of one corpus split, read from its registry sources into Postgres."""


import time

import dagster as dg

from cp_assets.defs.core.partitions import split_partitions
from cp_assets.defs.core.policies import PG_RETRY, bad_input_is_final
from cp_assets.lib.corpus.shards import split_sources
from cp_assets.lib.corpus.sources import ReadStats, read_split
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
    split = context.partition_key
    stats, t0 = ReadStats(), time.perf_counter()
    with bad_input_is_final():
        reg = registry.load()
        sources = split_sources(reg, split)  # before reading: a shard landing mid-read makes the next night re-read
        n = pg.store().replace_documents(split, read_split(reg, split, stats))
    secs = time.perf_counter() - t0
    context.log.info(f"{split}: {n} documents, {stats.chars:,} characters in {secs:.1f}s; skipped {dict(stats.skipped)}")
    return dg.MaterializeResult(metadata={
        "documents": n,
        "characters": stats.chars,
        "skipped": sum(stats.skipped.values()),
        "skipped_by_reason": dict(stats.skipped),
        "excluded": stats.excluded,
        "per_source": dict(stats.per_source),
        "source_fingerprint": sources.fingerprint,
        "source_files": sources.shards,
        "source_bytes": sources.bytes,
        "registry": str(reg.file),
        "data_dir": str(reg.data_dir),
        "seconds": round(secs, 2),
        "docs_per_s": round(n / secs, 1) if secs else None,
    })
