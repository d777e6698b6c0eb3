"""Integrity checks for files this project writes once and reads many times: converted checkpoints, search-index
caches, trained tiny GPT checkpoints.

A writer records a manifest (`checksums.json` by default: every file's size and sha256) next to its files, written
last; a reader calls `verify_manifest` before trusting them and gets `CorruptFile` naming the first bad file and why
(missing, wrong size, wrong sha256, unreadable manifest). Hashing runs at ~1.5 GB/s; a directory whose files are
unchanged since they were verified in this process (same size, mtime and inode) is not hashed again.

`check_safetensors` checks a .safetensors file's structure without a manifest (for files written before manifests
existed): an 8-byte header length, a JSON header, tensor offsets that tile the data exactly, and a file length equal
to header + data, so a truncated or overwritten file is caught, though not changed bytes inside the tensor data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Iterable

MANIFEST = "checksums.json"
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_verified: set[tuple] = set()  # (directory, manifest stat, file stats) already verified in this process


class CorruptFile(ValueError):
    """`path` cannot be trusted; `reason` says why."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}")


def sha256_file(path: Path | str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path | str, names: Iterable[str], manifest: str = MANIFEST) -> Path:
    """Record size and sha256 of `names` (paths relative to `directory`) in `directory/manifest`, atomically."""
    directory = Path(directory)
    files = {n: {"size": (directory / n).stat().st_size, "sha256": sha256_file(directory / n)} for n in sorted(names)}
    out = directory / manifest
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"version": 1, "files": files}, indent=1) + "\n")
    os.replace(tmp, out)
    return out


def has_manifest(directory: Path | str, manifest: str = MANIFEST) -> bool:
    return (Path(directory) / manifest).exists()


def verify_manifest(directory: Path | str, manifest: str = MANIFEST, required: Iterable[str] = ()) -> None:
    """Raise `CorruptFile` unless every file the manifest lists (and every `required` one is listed) has its recorded
    size and sha256."""
    directory = Path(directory)
    mpath = directory / manifest
    try:
        files = json.loads(mpath.read_text())["files"]
        entries = {str(n): (int(e["size"]), str(e["sha256"])) for n, e in files.items()}
    except FileNotFoundError:
        raise CorruptFile(mpath, "the manifest is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFile(mpath, f"unreadable manifest ({type(exc).__name__}: {exc})") from None
    for name in required:
        if name not in entries:
            raise CorruptFile(directory / name, f"not listed in {mpath.name}")
    stats = []
    for name, (size, _) in sorted(entries.items()):
        try:
            st = (directory / name).stat()
        except FileNotFoundError:
            raise CorruptFile(directory / name, "missing (listed in the manifest)") from None
        if st.st_size != size:
            raise CorruptFile(directory / name, f"{st.st_size:,} bytes, the manifest says {size:,} (truncated or "
                                                f"overwritten)")
        stats.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    mst = mpath.stat()
    key = (str(directory.resolve()), mst.st_mtime_ns, mst.st_ino, tuple(stats))
    if key in _verified:
        return
    for name, (_, digest) in sorted(entries.items()):
        if sha256_file(directory / name) != digest:
            raise CorruptFile(directory / name, "sha256 differs from the manifest's (the contents changed)")
    _verified.add(key)


def check_safetensors(path: Path | str) -> None:
    """Raise `CorruptFile` unless `path` is a structurally whole .safetensors file (see the module docstring)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptFile(path, f"{size} bytes: too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CorruptFile(path, f"header of {n:,} bytes in a file of {size:,} bytes (truncated or garbage)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CorruptFile(path, "missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptFile(path, f"the safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CorruptFile(path, "the safetensors header is not a JSON object")
    spans = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) for x in t["data_offsets"])
            want = math.prod(int(d) for d in t["shape"]) * _DTYPE_BYTES.get(t["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise CorruptFile(path, f"tensor {name!r}: malformed header entry") from None
        if t["dtype"] in _DTYPE_BYTES and end - start != want:
            raise CorruptFile(path, f"tensor {name!r}: {end - start} bytes of data for {want} expected")
        spans.append((start, end))
    spans.sort()
    pos = 0
    for start, end in spans:
        if start != pos or end < start:
            raise CorruptFile(path, "tensor data offsets overlap or leave gaps (garbage header)")
        pos = end
    if 8 + n + pos != size:
        raise CorruptFile(path, f"{size:,} bytes, the header describes {8 + n + pos:,} (truncated or extended)")
