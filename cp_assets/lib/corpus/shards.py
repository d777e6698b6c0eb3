"""What a split is read from right now, as a fingerprint: the nightly shard backfill re-reads a split when it changes.

A *streaming* split has a source that grows: a glob of shard files (`path: crawl/shard-*.jsonl.gz`) or a Hugging
Face dataset. Its fingerprint hashes, for each source, the shard names, sizes and modification times (a file source
is one shard), or the `hf:` arguments. An `hf:` source pinned to a `revision` changes only when the revision does;
an unpinned one cannot be listed offline, so its fingerprint includes the day (`as_of`): it is re-read every night.
`raw_corpus` records the fingerprint it read in its metadata (`read_corpus`, the asset's work); the schedule
compares the two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from cp_assets.lib.corpus.registry import Registry

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore


@dataclass(frozen=True)
class SplitSources:
    split: str
    fingerprint: str
    shards: int  # files read (hf sources count 1)
    bytes: int


def streaming_splits(registry: Registry) -> list[str]:
    return [name for name, split in registry.splits.items() if any(s.is_streaming() for s in split.sources)]


def split_sources(registry: Registry, split: str, as_of: dt.date | None = None) -> SplitSources:
    """The fingerprint of what `split` reads now. A glob that matches nothing raises RegistryError; a missing file
    is left for the reader to report (it names the registry line)."""
    parts, shards, size = [], 0, 0
    for src in registry.split(split).sources:
        if src.hf is not None:
            hf = src.hf.model_dump()
            if hf["revision"] is None:
                hf["as_of"] = str(as_of or dt.date.today())
            parts.append(["hf", hf])
            shards += 1
            continue
        files = []
        for path in src.shard_paths(registry.data_dir):
            if not path.is_file():  # reading it gives the clear error
                files.append([path.name, None, None])
                continue
            st = path.stat()
            files.append([path.name, st.st_size, st.st_mtime_ns])
            shards += 1
            size += st.st_size
        parts.append([src.label(), files])
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return SplitSources(split, digest, shards, size)


def changed_splits(registry: Registry, recorded: dict[str, str | None],
                   as_of: dt.date | None = None) -> list[SplitSources]:
    """Streaming splits whose sources differ from the fingerprint `recorded` at their last read (None: never read)."""
    out = []
    for name in streaming_splits(registry):
        now = split_sources(registry, name, as_of)
        if recorded.get(name) != now.fingerprint:
            out.append(now)
    return out


def read_corpus(registry: Registry, split: str, store: PgStore, log: Callable[[str], None] = print,
                warn: Callable[[str], None] | None = None) -> dict:
    """The `raw_corpus` asset's work: the split's documents read from its sources into Postgres (replaced
    atomically); returns the metadata, with the sources' fingerprint taken before reading (a shard landing mid-read
    makes the next night read the split again)."""
    from cp_assets.lib.corpus.sources import ReadStats, read_split

    stats, t0 = ReadStats(), time.perf_counter()
    sources = split_sources(registry, split)
    n = store.replace_documents(split, read_split(registry, split, stats))
    secs = time.perf_counter() - t0
    log(f"{split}: {n} documents, {stats.chars:,} characters in {secs:.1f}s; skipped {dict(stats.skipped)}")
    for message in stats.warnings:
        (warn or log)(message)
    return {"documents": n, "characters": stats.chars, "skipped": sum(stats.skipped.values()),
            "skipped_by_reason": dict(stats.skipped), "excluded": stats.excluded, "per_source": dict(stats.per_source),
            "warnings": "\n".join(stats.warnings) or "none",
            "source_fingerprint": sources.fingerprint, "source_files": sources.shards, "source_bytes": sources.bytes,
            "registry": str(registry.file), "data_dir": str(registry.data_dir), "seconds": round(secs, 2),
            "docs_per_s": round(n / secs, 1) if secs else None}
