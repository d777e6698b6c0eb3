"""What a split is read from: its shards, and fingerprints that say when they changed.

The shard planner (`plan_shards`, `iter_shards`) cuts a split into shards of about `shard_bytes` (registry, default
256 MiB on disk): files are packed in registry and name order; a Parquet file larger than that is cut into slices of
whole row groups (unless the source needs to see the file whole: `group_by`, or positional ids with
`where`/`exclude`); a JSONL or text file, compressed or not, is never cut (split it into files, or convert it to
Parquet, to spread it); a source with `limit` stays in one shard, and so does an `hf:` source. A small split is one
shard. Shard `k` of a split has the key `k` written with five digits (`00003`); `read_shard` reads just its
documents, and reading every shard of a plan in order gives exactly `read_split`.

A shard step (`read_corpus` with a shard key) lists and stats the split's files once, for both the fingerprint and
the plan, and plans only as far as its own shard (`planned_shard`: the plan is lazy). The row-group sizes of a
Parquet file that is cut (its footer) are read once per process and kept, keyed by path, size and modification time,
so the steps of a split that run in one process (or one worker) read each footer once.

A *streaming* split has a source that grows: a directory or glob of shard files (`path: crawl/shard-*.jsonl.gz`) or
a Hugging Face dataset. Its fingerprint hashes, for each source, the file names, sizes and modification times (a
file source is one file), or the `hf:` arguments. An `hf:` source pinned to a `revision` changes only when the
revision does; an unpinned one cannot be listed offline, so its fingerprint includes the day (`as_of`): it is
re-read every night. `raw_corpus` records the split's fingerprint and its shard's in its metadata (`read_corpus`,
the asset's work); the nightly schedule compares each shard's recorded fingerprint with the plan's (`changed_shards`).
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass
from functools import lru_cache
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


@dataclass(frozen=True)
class _Listed:
    """A file of a source as listed now; `size` and `mtime_ns` are None when it is not a file (reading it gives the
    clear error)."""

    path: Path
    size: int | None
    mtime_ns: int | None


Listing = list[tuple[Source, "tuple[_Listed, ...] | None"]]  # each source, with its files (None: an `hf:` source)


def _stat(path: Path) -> os.stat_result | None:
    """One `stat` of a regular file (following links); None where `Path.is_file` says False."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return None
        raise
    return st if stat.S_ISREG(st.st_mode) else None


def list_split(registry: Registry, split: str) -> Listing:
    """The split's sources with their files listed and statted once: what both the plan and the fingerprint read."""
    out: Listing = []
    for src in registry.split(split).sources:
        if src.hf is not None:
            out.append((src, None))
            continue
        files = []
        for path in src.shard_paths(registry.data_dir):
            st = _stat(path)
            files.append(_Listed(path, st.st_size if st else None, st.st_mtime_ns if st else None))
        out.append((src, tuple(files)))
    return out


@lru_cache(maxsize=4096)
def _row_group_slices(path: str, size: int, mtime_ns: int, target: int) -> tuple[tuple[tuple[int, int], int], ...]:
    """((start, stop), bytes) of the runs of whole row groups a Parquet file is cut into: its footer read once per
    process for a given path, size and modification time (every shard step of a split plans the files before its
    own shard)."""
    slices, start, acc = [], 0, 0
    group_bytes = parquet_row_group_bytes(Path(path))
    for g, b in enumerate(group_bytes):
        if acc and acc + b > target:
            slices.append(((start, g), acc))
            start, acc = g, 0
        acc += b
    slices.append(((start, len(group_bytes)), acc))
    return tuple(slices)


def _file_pieces(src: Source, file: _Listed, target: int) -> list[Piece]:
    size, mtime = (file.size, file.mtime_ns) if file.size is not None else (0, 0)
    if file.size is None or size <= target or src.file_format(file.path) != "parquet" or not _sliceable(src):
        return [Piece(src.label(), str(file.path), None, size, mtime)]
    return [Piece(src.label(), str(file.path), groups, acc, mtime)
            for groups, acc in _row_group_slices(str(file.path), size, mtime, target)]


def _units(src: Source, files: "tuple[_Listed, ...] | None", target: int) -> Iterator[list[Piece]]:
    """A source's pieces, grouped into the units a shard holds whole, in order (lazily: a footer is read only when
    the plan gets to its file)."""
    if files is None:
        yield [Piece(src.label(), "", None, target, 0)]  # streamed: one shard of its own
        return
    pieces = (p for file in files for p in _file_pieces(src, file, target))
    if src.limit is not None:
        yield list(pieces)
    else:
        yield from ([p] for p in pieces)


def iter_shards(registry: Registry, split: str, listing: Listing | None = None) -> Iterator[Shard]:
    """The split's shards in order, each yielded as soon as it is complete: units (files, Parquet slices, whole
    limited sources) packed in order up to `shard_bytes`; a unit larger than that is a shard alone."""
    listing = list_split(registry, split) if listing is None else listing
    target = registry.split(split).shard_bytes
    index, current, size = 0, [], 0
    for src, files in listing:
        for unit in _units(src, files, target):
            unit_bytes = sum(p.bytes for p in unit)
            if current and size + unit_bytes > target:
                yield Shard(split, index, tuple(current))
                index, current, size = index + 1, [], 0
            current.extend(unit)
            size += unit_bytes
    if current:
        yield Shard(split, index, tuple(current))


def plan_shards(registry: Registry, split: str) -> list[Shard]:
    """The split's whole plan (`iter_shards`)."""
    return list(iter_shards(registry, split))


def planned_shard(registry: Registry, split: str, key: str,
                  listing: Listing | None = None) -> tuple[Shard | None, int]:
    """(the shard of `key`, or None when the plan has no such shard; how many shards were planned before it): the
    plan stops once that shard is complete (at the first unit of the next), so a step does not plan the rest of the
    split."""
    planned = 0
    for shard in iter_shards(registry, split, listing):
        if shard.key == key:
            return shard, planned
        planned += 1
    return None, planned


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


def split_sources(registry: Registry, split: str, as_of: dt.date | None = None,
                  listing: Listing | None = None) -> SplitSources:
    """The fingerprint of what `split` reads now (from `listing` when given). A glob that matches nothing raises
    RegistryError; a missing file is left for the reader to report (it names the registry line)."""
    parts, shards, size = [], 0, 0
    for src, files in list_split(registry, split) if listing is None else listing:
        if files is None:
            hf = src.hf.model_dump()
            if hf["revision"] is None:
                hf["as_of"] = str(as_of or dt.date.today())
            parts.append(["hf", hf])
            shards += 1
            continue
        for file in files:
            shards += file.size is not None
            size += file.size or 0
        parts.append([src.label(), [[f.path.name, f.size, f.mtime_ns] for f in files]])
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
    listing = list_split(registry, split)  # one listing gives the fingerprint and the plan
    sources = split_sources(registry, split, listing=listing)
    if shard is None:
        key, docs, planned = SINGLE_SHARD, read_split(registry, split, stats), None
    else:
        (planned, n_planned), key = planned_shard(registry, split, shard, listing), shard
        if planned is None:  # past the plan (another split has more shards, or this one shrank): an empty shard
            log(f"{split}/{shard}: past the split's plan of {n_planned} shards (shard_bytes="
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
