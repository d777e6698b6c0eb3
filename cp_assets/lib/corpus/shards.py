"""What a split is read from: its shards, and fingerprints that say when they changed.

The shard planner (`plan_shards`) cuts a split into shards of about `shard_bytes` (registry, default 256 MiB on
disk): files are packed in registry and name order; a Parquet file larger than that is cut into slices of whole row
groups (unless the source needs to see the file whole: `group_by`, or positional ids with `where`/`exclude`); a
JSONL or text file, compressed or not, is never cut (split it into files, or convert it to Parquet, to spread it);
a source with `limit` stays in one shard, and so does an `hf:` source. A small split is one shard. Shard `k` of a
split has the key `k` written with five digits (`00003`); `read_shard` reads just its documents, and reading every
shard of a plan in order gives exactly `read_split`.

A *streaming* split has a source that grows: a directory or glob of shard files (`path: crawl/shard-*.jsonl.gz`) or
a Hugging Face dataset. Its fingerprint hashes, for each source, the file names, sizes and modification times (a
file source is one file), or the `hf:` arguments. An `hf:` source pinned to a `revision` changes only when the
revision does; an unpinned one cannot be listed offline, so its fingerprint includes the day (`as_of`): it is
re-read every night. `raw_corpus` records the fingerprint it read in its metadata (`read_corpus`, the asset's work);
the schedule compares the two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from cp_assets.lib.corpus.formats import parquet_row_group_bytes
from cp_assets.lib.corpus.registry import Registry, Source

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.corpus.sources import Document, ReadStats

SHARD_KEY_DIGITS = 5


@dataclass(frozen=True)
class Piece:
    """A file of a source, or the row groups [start, stop) of a Parquet file; `path` is empty for an `hf:` source."""

    source: str
    path: str
    row_groups: tuple[int, int] | None
    bytes: int
    mtime_ns: int

    def name(self) -> str:
        where = Path(self.path).name if self.path else "hf"
        return f"{self.source}/{where}" + (f"#row_groups={self.row_groups[0]}-{self.row_groups[1] - 1}"
                                            if self.row_groups else "")


@dataclass(frozen=True)
class Shard:
    split: str
    index: int
    pieces: tuple[Piece, ...]

    @property
    def key(self) -> str:
        return shard_key(self.index)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.pieces)

    def fingerprint(self, as_of: dt.date | None = None) -> str:
        """Changes when a piece is added, removed, cut differently, rewritten, or (an unpinned `hf:` source) daily."""
        parts = [[p.source, p.path, p.row_groups, p.bytes, p.mtime_ns] for p in self.pieces]
        if any(not p.path for p in self.pieces):
            parts.append(str(as_of or dt.date.today()))
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def describe(self) -> str:
        names = [p.name() for p in self.pieces]
        shown = ", ".join(names[:3]) + (f", ... ({len(names)} pieces)" if len(names) > 3 else "")
        return f"{self.split}/{self.key}: {self.bytes:,} bytes in {shown}"


def shard_key(index: int) -> str:
    return f"{index:0{SHARD_KEY_DIGITS}d}"


def _sliceable(src: Source) -> bool:
    """Whether a Parquet file of `src` may be read in row-group slices: nothing of one record depends on records
    outside its slice (grouping, a limit, or positional ids counted past filtered records)."""
    return not src.group_by and src.limit is None and (src.id_field is not None or not (src.where or src.exclude))


def _file_pieces(src: Source, path: Path, target: int) -> list[Piece]:
    st = path.stat() if path.is_file() else None
    size, mtime = (st.st_size, st.st_mtime_ns) if st else (0, 0)
    if st is None or size <= target or src.file_format(path) != "parquet" or not _sliceable(src):
        return [Piece(src.label(), str(path), None, size, mtime)]
    pieces, start, acc = [], 0, 0
    group_bytes = parquet_row_group_bytes(path)
    for g, b in enumerate(group_bytes):
        if acc and acc + b > target:
            pieces.append(Piece(src.label(), str(path), (start, g), acc, mtime))
            start, acc = g, 0
        acc += b
    pieces.append(Piece(src.label(), str(path), (start, len(group_bytes)), acc, mtime))
    return pieces


def _units(src: Source, data_dir: Path, target: int) -> list[list[Piece]]:
    """A source's pieces, grouped into the units a shard holds whole."""
    if src.hf is not None:
        return [[Piece(src.label(), "", None, target, 0)]]  # streamed: one shard of its own
    pieces = [p for path in src.shard_paths(data_dir) for p in _file_pieces(src, path, target)]
    return [pieces] if src.limit is not None else [[p] for p in pieces]


def plan_shards(registry: Registry, split: str) -> list[Shard]:
    """The split's shards: units (files, Parquet slices, whole limited sources) packed in order up to
    `shard_bytes`; a unit larger than that is a shard alone."""
    spec = registry.split(split)
    target = spec.shard_bytes
    shards: list[list[Piece]] = []
    current: list[Piece] = []
    for src in spec.sources:
        for unit in _units(src, registry.data_dir, target):
            size = sum(p.bytes for p in unit)
            if current and sum(p.bytes for p in current) + size > target:
                shards.append(current)
                current = []
            current.extend(unit)
    if current:
        shards.append(current)
    return [Shard(split, i, tuple(pieces)) for i, pieces in enumerate(shards)]


def shard_keys(registry: Registry, splits: list[str] | None = None) -> dict[str, list[str]]:
    """Each split's shard keys (of `splits`, default every split), from its plan."""
    names = registry.names() if splits is None else splits
    return {split: [s.key for s in plan_shards(registry, split)] for split in names}


def dimension_keys(plans: dict[str, list[str]]) -> list[str]:
    """The shard numbers the partition dimension needs: as many as the split with the most shards has."""
    return [shard_key(i) for i in range(max((len(keys) for keys in plans.values()), default=0))]


def changed_shards(plan: list[Shard], keys: list[str], recorded: dict[str, str | None],
                   as_of: dt.date | None = None) -> dict[str, str]:
    """shard key -> its fingerprint now, for each of `keys` whose fingerprint differs from the one its last
    `raw_corpus` recorded (`recorded`, None: never read). A key past the plan is `empty`: it counts as changed only
    when it was read before (its documents must go), never when it was never read."""
    planned = {s.key: s for s in plan}
    out = {}
    for key in keys:
        now = planned[key].fingerprint(as_of) if key in planned else "empty"
        if recorded.get(key) != now and (key in planned or recorded.get(key) is not None):
            out[key] = now
    return out


def read_shard(registry: Registry, shard: Shard, stats: "ReadStats | None" = None) -> Iterator["Document"]:
    """The documents of one shard, in plan order, with ids unique within the shard."""
    from cp_assets.lib.corpus.sources import BadRecord, ReadStats, read_source

    stats = stats if stats is not None else ReadStats()
    sources = {s.label(): s for s in registry.split(shard.split).sources}
    seen: set[str] = set()
    runs: list[tuple[str, list[Piece]]] = []
    for piece in shard.pieces:  # consecutive pieces of one source are read in one pass
        if runs and runs[-1][0] == piece.source:
            runs[-1][1].append(piece)
        else:
            runs.append((piece.source, [piece]))
    for label, pieces in runs:
        src = sources[label]
        wanted = None if src.hf is not None else [
            (Path(p.path), range(*p.row_groups) if p.row_groups else None) for p in pieces]
        for doc in read_source(src, shard.split, registry.data_dir, stats, wanted):
            if doc.doc_id in seen:
                raise BadRecord(doc.locator, "duplicate_id", f"document id {doc.doc_id!r} occurs twice "
                                "(check `id_field`/`group_by`)")
            seen.add(doc.doc_id)
            yield doc


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
                warn: Callable[[str], None] | None = None, shard: str | None = None) -> dict:
    """The `raw_corpus` asset's work: the split's documents (or one shard's, by key) read from its sources into
    Postgres (replaced atomically); returns the metadata, with the sources' fingerprint taken before reading (a
    shard landing mid-read makes the next night read the split again)."""
    from cp_assets.lib.corpus.pgvector_store import SINGLE_SHARD
    from cp_assets.lib.corpus.sources import ReadStats, read_split

    stats, t0 = ReadStats(), time.perf_counter()
    sources = split_sources(registry, split)
    if shard is None:
        key, docs, planned = SINGLE_SHARD, read_split(registry, split, stats), None
    else:
        plan = {s.key: s for s in plan_shards(registry, split)}
        key, planned = shard, plan.get(shard)
        if planned is None:  # past the plan (another split has more shards, or this one shrank): an empty shard
            log(f"{split}/{shard}: past the split's plan of {len(plan)} shards (shard_bytes="
                f"{registry.split(split).shard_bytes:,} in {registry.file}): an empty shard")
        docs = read_shard(registry, planned, stats) if planned is not None else iter(())
    n = store.replace_documents(split, docs, key)
    secs = time.perf_counter() - t0
    where = split if shard is None else f"{split}/{shard}"
    log(f"{where}: {n} documents, {stats.chars:,} characters in {secs:.1f}s; skipped {dict(stats.skipped)}")
    for message in stats.warnings:
        (warn or log)(message)
    shard_figures = {} if shard is None else {"shard": shard, "status": "built" if planned else "empty_shard",
                                              "shard_fingerprint": planned.fingerprint() if planned else "empty",
                                              "shard_pieces": "\n".join(p.name() for p in planned.pieces)
                                              if planned else "none", "shard_bytes": planned.bytes if planned else 0}
    return {"documents": n, "characters": stats.chars, "skipped": sum(stats.skipped.values()),
            "skipped_by_reason": dict(stats.skipped), "excluded": stats.excluded, "per_source": dict(stats.per_source),
            "warnings": "\n".join(stats.warnings) or "none",
            "source_fingerprint": sources.fingerprint, "source_files": sources.shards, "source_bytes": sources.bytes,
            **shard_figures,
            "registry": str(registry.file), "data_dir": str(registry.data_dir), "seconds": round(secs, 2),
            "docs_per_s": round(n / secs, 1) if secs else None}
