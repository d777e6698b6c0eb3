"""`nightly_shard_backfill`: every night, re-read the shards of streaming corpus splits that changed.

A streaming split reads a directory or glob of shard files or a Hugging Face dataset (see
`cp_assets.lib.corpus.shards`). At each tick the schedule plans each such split's shards, fingerprints them, and
compares each with the `shard_fingerprint` that its last `raw_corpus` materialization recorded; each shard that
differs (or was never read) gets one run of the corpus chain (raw_corpus -> chunks -> embeddings, ngram_index) for
its split x shard partition, and so do shards past a plan that still hold documents (they empty). A new file is one
new shard (or joins the last one): only that shard runs. The run key carries the fingerprint, so a tick never
requests the same shard twice. The reports downstream follow through their automation conditions
(`defs/core/automation.py`). The cron is CPROX_NIGHTLY_CRON (default 02:00 every day, UTC); the daemon runs it once
it is turned on.
"""

import dagster as dg

from cp_assets.defs.core.partitions import SHARDS, corpus_key
from cp_assets.defs.corpus.chunks import chunks
from cp_assets.defs.corpus.corpus_shards_sensor import add_shard_partitions
from cp_assets.defs.corpus.embeddings import embeddings
from cp_assets.defs.corpus.ngram_index import ngram_index
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.core import settings
from cp_assets.lib.corpus.registry import RegistryError
from cp_assets.lib.corpus.shards import changed_shards, plan_shards, streaming_splits
from cp_assets.resources.corpus_registry import CorpusRegistry

nightly_corpus_job = dg.define_asset_job(
    "nightly_corpus_job", selection=dg.AssetSelection.assets(raw_corpus, chunks, embeddings, ngram_index),
    description="The corpus chain of one shard of a split, started by nightly_shard_backfill when the shard changes.")


def recorded_fingerprints(instance: dg.DagsterInstance, split: str, shards: list[str]) -> dict[str, str | None]:
    """Each shard's `shard_fingerprint` from its latest raw_corpus materialization (None: never materialized)."""
    out = {}
    for shard in shards:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=raw_corpus.key, asset_partitions=[corpus_key(split, shard)]),
            limit=1).records
        md = records[0].asset_materialization.metadata if records and records[0].asset_materialization else {}
        value = md.get("shard_fingerprint")
        out[shard] = value.value if value is not None else None
    return out


@dg.schedule(
    cron_schedule=settings.nightly_cron(),
    job=nightly_corpus_job,
    execution_timezone="UTC",
    description="Nightly backfill of new corpus shards: plan every streaming split (directory or glob of shard files, "
                "or hf dataset), then read, chunk, embed and index each shard that changed since its last raw_corpus.",
)
def nightly_shard_backfill(context: dg.ScheduleEvaluationContext, registry: CorpusRegistry):
    try:
        reg = registry.load()
        streaming = streaming_splits(reg)
        plans = {split: plan_shards(reg, split) for split in streaming}  # planned once per tick
    except RegistryError as exc:
        return dg.SkipReason(f"corpus registry unusable: {exc}")
    if not streaming:
        return dg.SkipReason("no streaming split in the registry (a directory or glob `path:`, or an `hf:` source)")
    # a schedule cannot request dynamic partitions: they are added directly
    add_shard_partitions(context.instance, {s: [sh.key for sh in plan] for s, plan in plans.items()})
    tick = context.scheduled_execution_time
    requests, said = [], []
    keys = context.instance.get_dynamic_partitions(SHARDS)
    for split in streaming:
        changed = changed_shards(plans[split], keys, recorded_fingerprints(context.instance, split, keys),
                                 tick.date() if tick else None)
        for shard, now in changed.items():
            requests.append(dg.RunRequest(partition_key=corpus_key(split, shard), run_key=f"{split}/{shard}@{now}",
                                          tags={"cprox/trigger": "nightly_shard_backfill",
                                                "cprox/shard_fingerprint": now}))
            said.append(f"{split}/{shard}")
    if not requests:
        counts = ", ".join(f"{s}: {len(plans[s])} shards" for s in streaming)
        return dg.SkipReason(f"{len(streaming)} streaming splits ({counts}), no changed shards")
    context.log.info(f"changed shards: {', '.join(said)}")
    return requests
