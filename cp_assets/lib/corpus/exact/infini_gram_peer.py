"""infini-gram (PyPI `infini-gram`, Liu et al. 2024) as a peer of this project's suffix-array index: the same token
ids, indexed by infini-gram's own Rust builder and queried with its C++ engine, for the parity test and the scale
benchmark.

infini-gram indexes token ids it is given when its save dir already holds `tokenized.0` (per document the
separator `\\xff\\xff`, then the ids as u16 little-endian) and `offset.0` (u64 byte offset of each document): exactly
the bytes of this project's u16 segment files (`ngram_index.py`), so `export` concatenates them. It is an optional
dependency (`pip install infini-gram==2.6.0`; it needs numpy and transformers at import).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cp_assets.lib.corpus.exact.ngram_index import NgramIndex


def export(index: NgramIndex, out_dir: Path) -> Path:
    """Write infini-gram's `tokenized.0` and `offset.0` from the index's segments (u16 indexes only)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base, offsets = 0, []
    with open(out_dir / "tokenized.0", "wb") as fh:
        for seg in index.segments:
            if seg.tok.dtype != np.uint16:
                raise ValueError(f"infini-gram's u16 format needs u16 tokens, not {seg.tok.dtype}")
            fh.write(memoryview(np.ascontiguousarray(seg.tok)).cast("B"))
            offsets.append((seg.starts + base) * 2)
            base += len(seg.tok)
    np.concatenate(offsets or [np.zeros(0, np.int64)]).astype(np.uint64).tofile(out_dir / "offset.0")
    return out_dir


def build(out_dir: Path, mem_gb: int = 4, cpus: int = 2, timeout_s: float | None = None) -> dict:
    """infini-gram's indexing of the exported tokens (its suffix array `table.0`): seconds, peak RSS of the builder
    (its child processes), and bytes per token of its files."""
    empty = out_dir.parent / f"{out_dir.name}.empty"
    empty.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "infini_gram.indexing", "--data_dir", str(empty.resolve()),
           "--save_dir", str(out_dir.resolve()), "--temp_dir", str((out_dir / "tmp").resolve()),
           "--token_dtype", "u16", "--cpus", str(cpus), "--mem", str(mem_gb), "--ulimit", "20000"]
    # a wrapper process whose only children are infini-gram's, so their peak RSS is theirs alone
    wrapper = ("import json, resource, subprocess, sys; subprocess.run(json.loads(sys.argv[1]), check=True, "
               "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, json.dumps(cmd)], check=True, capture_output=True,
                          text=True, timeout=timeout_s)
    peak = int(done.stdout.strip().splitlines()[-1])
    seconds = time.perf_counter() - t0
    tokens = (out_dir / "tokenized.0").stat().st_size // 2
    size = sum(p.stat().st_size for p in out_dir.glob("*.0"))
    return {"seconds": seconds, "peak_rss_gb": peak / 2**20, "bytes_per_token": size / max(tokens, 1)}


def engine(out_dir: Path):
    from infini_gram.engine import InfiniGramEngine

    # documents are separated by 0xFFFF in the files; eos_token_id only has to name some token id
    return InfiniGramEngine(index_dir=str(out_dir), eos_token_id=0, token_dtype="u16")


def count(eng, ids) -> int:
    return int(eng.count(input_ids=[int(x) for x in ids])["count"])


def longest(eng, ids) -> list[int]:
    """Per position i, the length of the longest prefix of ids[i:] in the corpus, from infini-gram's own `count`
    (starting from the previous position's length less one, which is always found)."""
    ids = [int(x) for x in ids]
    out, prev = [], 0
    for i in range(len(ids)):
        k = max(prev - 1, 0)
        while i + k < len(ids) and count(eng, ids[i:i + k + 1]) > 0:
            k += 1
        out.append(k)
        prev = k
    return out

