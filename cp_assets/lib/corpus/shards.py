"""What a split is read from right now, as a fingerprint: the nightly shard backfill re-reads a split when it changes.

A *streaming* split has a source that grows: a glob of shard files (`path: crawl/shard-*.jsonl.gz`) or a Hugging
Face dataset. Its fingerprint hashes, for each source, the shard names, sizes and modification times (a file source
is one shard), or the `hf:` arguments. An `hf:` source pinned to a `revision` changes only when the revision does;
an unpinned one cannot be listed offline, so its fingerprint includes the day (`as_of`): it is re-read every night.
`raw_corpus` records the fingerprint it read in its metadata; the schedule compares the two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from cp_assets.lib.corpus.registry import Registry


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
