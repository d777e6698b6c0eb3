"""File formats the corpus readers understand, at the level of records: lines of a plain, gzip or zstd file, JSONL
records in it, and the rows of a Parquet file read row group by row group.

Every reader streams (one line, or one Arrow batch of a row group, at a time) and names where a problem is: a line
`file:LINE`, a Parquet row `file:row_group=G:row=R` (R counts rows from the start of the file, so it is the
record number a positional document id uses). A file that cannot be read at all (truncated gzip or zstd stream,
corrupt Parquet footer or page) raises `BadRecord` naming the file and the byte or row group; bad records are
yielded as `BadRecord`s for the caller to raise or count.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

try:  # Python >= 3.14 has zstd in the standard library; before that, its backport
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd

BINARY_SNIFF_BYTES = 8192
COMPRESSIONS = (".gz", ".zst", ".zstd")
# suffixes (after a compression suffix is removed) -> format; a bare `x.zst` is JSONL (the usual dump)
FORMAT_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".txt": "text", ".raw": "text", ".text": "text"}
PARQUET_BATCH_ROWS = 1024


class BadRecord(ValueError):
    """A record that cannot become a document; the message names file, line (or row group and row) and field."""

    def __init__(self, where: str, reason: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.reason = reason


# reasons that stand for a whole file rather than one record: under `on_bad_record: skip` they also become warnings
FILE_REASONS = {"empty_file", "missing_column"}

Record = tuple[str, int, "dict | BadRecord"]


def split_compression(name: str) -> tuple[str, str | None]:
    """(name without its compression suffix, the compression suffix or None)."""
    for suffix in COMPRESSIONS:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, None


def format_of_name(name: str) -> str | None:
    """The format a file name implies (`jsonl`, `text`, `parquet`), or None when its suffix says nothing."""
    base, compression = split_compression(name)
    for suffix, fmt in FORMAT_SUFFIXES.items():
        if base.endswith(suffix):
            return fmt
    if compression in (".zst", ".zstd"):
        return "jsonl"
    return None


def _open_compressed(path: Path):
    _, compression = split_compression(path.name)
    if compression == ".gz":
        return gzip.open(path, "rb")
    if compression in (".zst", ".zstd"):
        return zstd.ZstdFile(path, "rb")
    return open(path, "rb")


def open_binary(path: Path):
    """The decompressed bytes of a plain, gzip or zstd file; refuses a missing file, an unreadable stream or a
    binary file (a NUL byte in the first 8 KiB)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: source file not found (relative paths resolve against CPROX_DATA_DIR)")
    raw = _open_compressed(path)
    try:
        head = raw.peek(BINARY_SNIFF_BYTES)[:BINARY_SNIFF_BYTES] if hasattr(raw, "peek") else b""
    except (OSError, EOFError, zstd.ZstdError) as exc:
        raw.close()
        raise BadRecord(str(path), "unreadable", f"cannot read the file ({exc}); is it a truncated or corrupt "
                        "compressed file?") from exc
    if b"\x00" in head:
        raw.close()
        raise BadRecord(str(path), "binary_file", f"looks like a binary file (NUL byte at offset {head.index(0)}), "
                        "not JSONL or text")
    return raw


def file_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, raw line without the newline) of a possibly compressed file."""
    offset = 0
    with open_binary(path) as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                yield lineno, offset, raw.rstrip(b"\n").rstrip(b"\r")
                offset += len(raw)
        except (OSError, EOFError, zstd.ZstdError) as exc:
            raise BadRecord(f"{path}:{offset}", "unreadable",
                            f"read failed after byte {offset} of the decompressed stream: {exc}") from exc


def decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRecord(where, "non_utf8", f"not valid UTF-8 at byte {exc.start} of the line") from exc


def jsonl_records(path: Path) -> Iterator[Record]:
    """(where, byte offset, record or the BadRecord it is) for each non-blank line."""
    for lineno, offset, raw in file_lines(path):
        where = f"{path}:{lineno}"
        if not raw.strip():
            continue
        try:
            line = decode(raw, where)
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadRecord(where, "malformed_json", f"malformed JSON at column {exc.colno}: {exc.msg}") from exc
            if not isinstance(rec, dict):
                raise BadRecord(where, "malformed_json", f"expected a JSON object, got {type(rec).__name__}")
        except BadRecord as bad:
            rec = bad
        yield where, offset, rec


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise FileNotFoundError(f"{path}: source file not found (relative paths resolve against CPROX_DATA_DIR)")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise BadRecord(str(path), "unreadable", f"not a readable Parquet file ({exc})") from exc


def parquet_rows(path: Path) -> int:
    """Rows in a Parquet file, from its footer."""
    return _parquet_file(path).metadata.num_rows


def parquet_row_counts(path: Path) -> list[int]:
    """Rows of each row group of a Parquet file."""
    md = _parquet_file(path).metadata
    return [md.row_group(g).num_rows for g in range(md.num_row_groups)]


def parquet_row_group_bytes(path: Path) -> list[int]:
    """The compressed size of each row group of a Parquet file (its footer's figures): how the shard planner slices
    a large file."""
    md = _parquet_file(path).metadata
    return [sum(md.row_group(g).column(c).total_compressed_size for c in range(md.num_columns))
            for g in range(md.num_row_groups)]


def parquet_records(path: Path, required: list[str], optional: list[str], row_groups: range | None = None,
                    batch_rows: int = PARQUET_BATCH_ROWS) -> Iterator[Record]:
    """Rows of a Parquet file (or of the slice `row_groups` of it) as dicts of the `required` and (where present)
    `optional` columns, read row group by row group in batches of `batch_rows`. The byte offset of a row is -1
    (Parquet has none); `where` names the row group and the row (counted from the start of the file, also in a
    slice). A missing required column is one BadRecord (reason `missing_column`) for the whole file."""
    import pyarrow as pa

    pf = _parquet_file(path)
    groups = range(pf.num_row_groups) if row_groups is None else row_groups
    present = set(pf.schema_arrow.names)
    missing = [c for c in required if c not in present]
    if missing:
        yield str(path), -1, BadRecord(
            str(path), "missing_column",
            f"column {missing[0]!r} is missing (needed by the source's text_field/template/id_field/group_by); "
            f"the file has columns {sorted(present)}")
        return
    columns = list(dict.fromkeys([c for c in required + optional if c in present]))
    row = sum(pf.metadata.row_group(g).num_rows for g in range(groups.start))  # rows before the slice
    for group in groups:
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                for rec in batch.to_pylist():
                    yield f"{path}:row_group={group}:row={row}", -1, rec
                    row += 1
        except (pa.ArrowException, OSError) as exc:
            raise BadRecord(f"{path}:row_group={group}", "unreadable",
                            f"row group {group} of {pf.num_row_groups} cannot be read ({exc})") from exc
