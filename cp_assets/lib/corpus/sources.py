"""Read documents out of registry sources: JSONL and text files (plain, gzip or zstd), Parquet files, directories
and globs of such shards, and Hugging Face streaming datasets.

Every document gets a stable id `<source>:<key>` (the record's `id_field`, the `group_by` values, or its 0-based
record/section number), a locator (`file:line`, or `file:row_group=G:row=R` for Parquet), and the byte offset of its
first line in the (decompressed) file (-1 for Parquet and hub rows). Bad input raises `BadRecord` naming file, line
(or row group) and field, or, with `on_bad_record: skip`, is counted by reason; a file-wide problem (an empty file,
a missing Parquet column) is also a warning. The formats themselves are read in `formats.py`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from cp_assets.lib.corpus.formats import (FILE_REASONS, BadRecord, Record, decode, file_lines, format_of_name,
                                          jsonl_records, parquet_records, parquet_row_counts, parquet_rows)
from cp_assets.lib.corpus.registry import Registry, Source

__all__ = ["BadRecord", "Document", "FileSlice", "ReadStats", "read_source", "read_split"]

# a file, or the row groups [start, stop) of a Parquet file: what `read_source` reads of a source (the shard planner's
# `shards.Piece`, the unit of a plan, becomes one of these)
FileSlice = tuple[Path, "range | None"]


@dataclass
class Document:
    doc_id: str
    split: str
    source: str
    locator: str
    byte_offset: int
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadStats:
    documents: int = 0
    chars: int = 0
    excluded: int = 0
    skipped: Counter = field(default_factory=Counter)
    per_source: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)  # e.g. an empty source file under `on_bad_record: skip`

    def as_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "chars": self.chars,
            "excluded": self.excluded,
            "skipped": dict(self.skipped),
            "per_source": dict(self.per_source),
            "warnings": list(self.warnings),
        }


def _text_of(rec: dict, src: Source, where: str) -> str:
    if src.template is not None:
        try:
            return src.template.format(**rec)
        except KeyError as exc:
            raise BadRecord(where, "missing_field", f"field {exc.args[0]!r} (used by `template`) is missing") from exc
    if src.text_field not in rec:
        raise BadRecord(where, "missing_field", f"field {src.text_field!r} is missing")
    value = rec[src.text_field]
    if value is None:
        raise BadRecord(where, "missing_field", f"field {src.text_field!r} is null")
    if not isinstance(value, str):
        raise BadRecord(where, "bad_field", f"field {src.text_field!r} is {type(value).__name__}, not a string")
    return value


def _check_text(text: str, src: Source, where: str) -> None:
    name = src.text_field or "template"
    if not text.strip():
        raise BadRecord(where, "empty_document", f"field {name!r} is empty")
    if len(text) > src.max_doc_chars:
        raise BadRecord(where, "too_large",
                        f"field {name!r} has {len(text):,} characters, over max_doc_chars={src.max_doc_chars:,}")


def _hf_records(src: Source) -> Iterator[Record]:
    import datasets  # heavy import, only for hub sources

    hf = src.hf
    ds = datasets.load_dataset(hf.path, name=hf.name, split=hf.split, data_files=hf.data_files,
                               revision=hf.revision, streaming=True)
    for i, rec in enumerate(ds):
        yield f"hf:{hf.path}/{hf.split}#{i}", -1, rec


def _make_doc(group: list[tuple[str, int, dict]], key: str, src: Source, split: str) -> Document:
    where0, offset0, rec0 = group[0]
    text = src.joiner.join(_text_of(rec, src, where) for where, _, rec in group)
    _check_text(text, src, where0)
    meta = {k: rec0.get(k) for k in src.group_by + src.meta_fields if k in rec0}
    return Document(f"{src.label()}:{key}", split, src.label(), where0, offset0, text, meta)


def _record_docs(records: Iterable[Record], src: Source, split: str, excluded: set[str],
                 stats: ReadStats, first_index: int = 0) -> Iterator["Document | BadRecord"]:
    """JSONL/Parquet/hf records -> documents (or the BadRecord each bad one is), grouped by `group_by` when asked;
    positional ids count from `first_index` (the first row of a Parquet slice)."""
    index, group_key, group = first_index, None, []

    def flush():
        try:
            return _make_doc(group, "/".join(str(v) for v in group_key), src, split)
        except BadRecord as bad:
            return bad

    for where, offset, rec in records:
        if isinstance(rec, BadRecord):
            yield rec
            continue
        if any(rec.get(f) not in allowed for f, allowed in src.where.items()):
            continue
        if excluded and str(rec.get(src.exclude.key, "")).strip() in excluded:
            stats.excluded += 1
            continue
        if src.group_by:
            missing = [k for k in src.group_by if k not in rec]
            if missing:
                yield BadRecord(where, "missing_field", f"field {missing[0]!r} (used by `group_by`) is missing")
                continue
            key = tuple(rec[k] for k in src.group_by)
            if group and key != group_key:
                yield flush()
                group = []
            group_key = key
            group.append((where, offset, rec))
            continue
        if src.id_field and rec.get(src.id_field) is None:
            yield BadRecord(where, "missing_field", f"field {src.id_field!r} (the `id_field`) is missing")
            continue
        try:
            yield _make_doc([(where, offset, rec)], str(rec[src.id_field]) if src.id_field else str(index), src, split)
        except BadRecord as bad:
            yield bad
        index += 1
    if group:
        yield flush()


def _text_docs(path: Path, src: Source, split: str) -> Iterator["Document | BadRecord"]:
    """A text file -> one document, or one per section when `split_on` (a line regex) starts sections; a file of
    nothing but whitespace -> its `empty_file` BadRecord."""
    pattern = re.compile(src.split_on) if src.split_on else None
    label, index = src.label(), 0
    start_line, start_offset, lines, blank = 1, 0, [], True

    def flush():
        doc = Document(f"{label}:{index}", split, label, f"{path}:{start_line}", start_offset, "\n".join(lines))
        try:
            _check_text(doc.text, src, doc.locator)
            return doc
        except BadRecord as bad:
            return bad

    for lineno, offset, raw in file_lines(path):
        blank = blank and not raw.strip()
        try:
            line = decode(raw, f"{path}:{lineno}")
        except BadRecord as bad:
            yield bad
            continue
        if pattern is not None and pattern.match(line) and lines:
            if any(x.strip() for x in lines):
                yield flush()
                index += 1
            lines = []
        if not lines:
            start_line, start_offset = lineno, offset
        lines.append(line)
    if any(x.strip() for x in lines):
        yield flush()
    if blank:
        yield _empty_file(path, src, split)


def _empty_file(path: Path, src: Source, split: str) -> BadRecord:
    """An empty source file is a BadRecord under `on_bad_record: error` (a file that landed half-written, or the
    wrong path), a warning and a skip count under `skip` (`FILE_REASONS`): never 0 documents in silence."""
    detail = f"empty file: source {src.label()!r} of split {split!r} has no records in it"
    if src.on_bad_record == "error":
        detail += " (`on_bad_record: skip` reads on past it)"
    return BadRecord(str(path), "empty_file", detail)


def _or_empty(records: Iterator[Record], path: Path, src: Source, split: str,
              row_groups: range | None) -> Iterator[Record]:
    """The records, then, when there were none, the file's `empty_file` BadRecord: emptiness is seen while reading,
    the file is not opened a second time to look. A Parquet slice stands for the file only from its first row
    group, and is empty only when the whole file has no rows (its footer; asked only after a slice with none)."""
    empty = True
    for record in records:
        empty = False
        yield record
    if empty and (row_groups is None or (row_groups.start == 0 and parquet_rows(path) == 0)):
        yield str(path), -1, _empty_file(path, src, split)


def _file_records(path: Path, src: Source, split: str, fmt: str, row_groups: range | None) -> Iterator[Record]:
    if fmt == "parquet":
        required, optional = src.record_fields()
        return _or_empty(parquet_records(path, required, optional, row_groups), path, src, split, row_groups)
    return _or_empty(jsonl_records(path), path, src, split, None)


def _excluded_values(src: Source, data_dir: Path) -> set[str]:
    if src.exclude is None:
        return set()
    path = Path(src.exclude.path).expanduser()
    path = path if path.is_absolute() else data_dir / path
    fmt = format_of_name(path.name) or "jsonl"
    records = (parquet_records(path, [src.exclude.field], []) if fmt == "parquet" else jsonl_records(path))
    values = set()
    for where, _, rec in records:
        if isinstance(rec, BadRecord):
            raise rec
        values.add(str(rec.get(src.exclude.field, "")).strip())
    return values


def _file_items(path: Path, src: Source, split: str, excluded: set[str], stats: ReadStats,
                row_groups: range | None = None) -> Iterator["Document | BadRecord"]:
    """One file's documents, or those of the row groups `row_groups` of a Parquet file (their positional ids
    count from the slice's first row, so a file read in slices gives the ids it gives read whole)."""
    fmt = src.file_format(path)
    if fmt == "text":
        return _text_docs(path, src, split)
    if src.text_field is None and src.template is None:
        raise BadRecord(str(path), "missing_field", f"a {fmt} file needs `text_field` or `template` in source "
                        f"{src.label()!r} (the file's format comes from its name; set `format:` to override)")
    first = 0
    if row_groups is not None and row_groups.start:
        first = sum(parquet_row_counts(path)[: row_groups.start])
    return _record_docs(_file_records(path, src, split, fmt, row_groups), src, split, excluded, stats, first)


def _shard_items(src: Source, split: str, slices: list[FileSlice], excluded: set[str],
                 stats: ReadStats) -> Iterator["Document | BadRecord"]:
    """Every file (or Parquet slice) of a directory or glob source in name order. Positional keys (record or
    section numbers) restart in each file, so they are prefixed with the file's name: `<source>:<file>/<n>`."""
    positional = not src.id_field and not src.group_by
    for shard, row_groups in slices:
        for item in _file_items(shard, src, split, excluded, stats, row_groups):
            if positional and isinstance(item, Document):
                item.doc_id = f"{src.label()}:{shard.name}/{item.doc_id.split(':', 1)[1]}"
            yield item


def read_source(src: Source, split: str, data_dir: Path, stats: ReadStats,
                slices: list[FileSlice] | None = None) -> Iterator[Document]:
    """Documents of one source, honouring limit, exclude and on_bad_record: every file of it, or only `slices`
    (files, or row-group slices of Parquet files, as the shard planner cuts them). An empty file is an
    `empty_file` BadRecord, raised or counted like any other (`_empty_file`)."""
    excluded = _excluded_values(src, data_dir)
    if src.resolved_format() == "hf":
        items = _record_docs(_hf_records(src), src, split, excluded, stats)
    else:
        slices = slices if slices is not None else [(p, None) for p in src.shard_paths(data_dir)]
        items = (_shard_items(src, split, slices, excluded, stats) if src.is_sharded(data_dir)
                 else _file_items(slices[0][0], src, split, excluded, stats, slices[0][1]))
    produced = 0
    for item in items:
        if isinstance(item, BadRecord):
            if src.on_bad_record == "error":
                raise item
            stats.skipped[item.reason] += 1
            if item.reason in FILE_REASONS:
                stats.warnings.append(str(item))
            continue
        produced += 1
        stats.documents += 1
        stats.chars += len(item.text)
        stats.per_source[item.source] += 1
        yield item
        if src.limit is not None and produced >= src.limit:
            return


def read_split(registry: Registry, split: str, stats: ReadStats | None = None) -> Iterator[Document]:
    """Every document of a split, source after source, with unique ids."""
    stats = stats if stats is not None else ReadStats()
    seen: set[str] = set()
    for src in registry.split(split).sources:
        for doc in read_source(src, split, registry.data_dir, stats):
            if doc.doc_id in seen:
                raise BadRecord(doc.locator, "duplicate_id", f"document id {doc.doc_id!r} occurs twice "
                                "(check `id_field`/`group_by`)")
            seen.add(doc.doc_id)
            yield doc
