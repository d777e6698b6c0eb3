"""`nightly_shard_backfill`: every night, re-read the streaming corpus splits whose shards changed.

A streaming split reads a glob of shard files or a Hugging Face dataset (see `cp_assets.lib.corpus.shards`). At each
tick the schedule fingerprints each such split's sources and compares with the `source_fingerprint` that the split's
last `raw_corpus` materialization recorded; each split that differs (or was never read) gets one run of the corpus chain
(raw_corpus -> chunks -> embeddings, ngram_index). The run key carries the fingerprint, so a tick never requests
the same shards twice. The reports downstream follow through their automation conditions (`defs/core/automation.py`).
The cron is CPROX_NIGHTLY_CRON (default 02:00 every day, UTC); the daemon runs it once it is turned on.
"""

import dagster as dg

from cp_assets.defs.corpus.chunks import chunks
from cp_assets.defs.corpus.embeddings import embeddings
from cp_assets.defs.corpus.ngram_index import ngram_index
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.core import settings
from cp_assets.lib.corpus.registry import RegistryError
from cp_assets.lib.corpus.shards import changed_splits, streaming_splits
from cp_assets.resources.corpus_registry import CorpusRegistry

nightly_corpus_job = dg.define_asset_job(
    "nightly_corpus_job", selection=dg.AssetSelection.assets(raw_corpus, chunks, embeddings, ngram_index),
    description="The corpus chain of one split, started by nightly_shard_backfill when its shards change.")


def recorded_fingerprints(instance: dg.DagsterInstance, splits: list[str]) -> dict[str, str | None]:
    """Each split's `source_fingerprint` from its latest raw_corpus materialization (None: never materialized)."""
    out = {}
    for split in splits:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=raw_corpus.key, asset_partitions=[split]), limit=1).records
        md = records[0].asset_materialization.metadata if records and records[0].asset_materialization else {}
        value = md.get("source_fingerprint")
        out[split] = value.value if value is not None else None
    return out


@dg.schedule(
    cron_schedule=settings.nightly_cron(),
    job=nightly_corpus_job,
    execution_timezone="UTC",
    description="Nightly backfill of new corpus shards: re-read every streaming split (glob of shard files or "
                "hf dataset) whose sources changed since its last raw_corpus, then chunk, embed and index it.",
)
def nightly_shard_backfill(context: dg.ScheduleEvaluationContext, registry: CorpusRegistry):
    try:
        reg = registry.load()
        streaming = streaming_splits(reg)
        tick = context.scheduled_execution_time
        changed = changed_splits(reg, recorded_fingerprints(context.instance, streaming),
                                 as_of=tick.date() if tick else None)
    except RegistryError as exc:
        return dg.SkipReason(f"corpus registry unusable: {exc}")
    if not streaming:
        return dg.SkipReason("no streaming split in the registry (a glob `path:` or an `hf:` source)")
    if not changed:
        return dg.SkipReason(f"{len(streaming)} streaming splits, no new shards")
    context.log.info("new shards: " + ", ".join(f"{c.split} ({c.shards} files, {c.bytes:,} bytes)" for c in changed))
    return [dg.RunRequest(partition_key=c.split, run_key=f"{c.split}@{c.fingerprint}",
                          tags={"cprox/trigger": "nightly_shard_backfill", "cprox/source_fingerprint": c.fingerprint})
            for c in changed]
