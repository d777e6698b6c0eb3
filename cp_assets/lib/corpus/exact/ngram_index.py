"""The exact token index of one shard of a corpus split: a suffix array over its token ids, the basis of contamination
checks and verbatim tracing (`cp_assets/lib/reports/trace.py`).

Text is tokenized with a fast (Rust) Hugging Face tokenizer, by default the bundled all-MiniLM-L6-v2 WordPiece one
(uncased, accents stripped: matching ignores case and accents). A shard's documents become one token array per
segment (u16, u32 for vocabularies over 65,535 ids; each document preceded by a separator no query holds, as in
infini-gram) and its suffix array, built in memory by libsais/divsufsort (`pydivsufsort`) and stored bit-packed at
ceil(log2 tokens) bits per entry: about 4.6 bytes per token at 1.5M tokens, 5.4 at 125M, where infini-gram's
byte-aligned pointers give 5 and 6. A segment holds at most `max_segment_tokens` (2**27 by default, about 2.3 GB
of peak memory while it is built), so memory is bounded whatever the shard's size. Every length is answered
exactly: counts of any span, longest matches, maximal spans (`ngram_search.py`); `n` is only the default shortest
span of traces and the window of contamination's rare-match rule.

Files: `CPROX_HOME/ngrams/<split>/<shard>.json` (the manifest) names the folder `<shard>.<version>/` that holds the
segments (`segNNNN.tok`, `segNNNN.sa`) and `docs.parquet` (document id, text hash, segment, start, tokens). A build
writes a new folder and then replaces the manifest (one atomic rename), so readers see the old index or the new one,
never half of one, and a crash mid-build leaves the old one in place (the rerun starts that shard again). A shard
whose documents (ids and text hashes) and settings are unchanged is not rebuilt; a changed shard rebuilds only itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cp_assets.lib.core import settings

DEFAULT_TOKENIZER = "all-minilm-l6-v2"
DEFAULT_N = 8
FORMAT = "suffix-array/1"
MAX_SEGMENT_TOKENS = 1 << 27


def tokenizer_env() -> str:
    return settings.ngram_tokenizer(DEFAULT_TOKENIZER)


@lru_cache(maxsize=4)
def load_tokenizer(name: str):
    """A `tokenizers.Tokenizer`: a packaged model name, a directory or tokenizer.json path, or a hub id."""
    from tokenizers import Tokenizer

    from cp_assets.lib.corpus.encoder import resolve_model

    path = Path(resolve_model(name))
    if path.is_dir():
        path = path / "tokenizer.json"
    tok = Tokenizer.from_file(str(path)) if path.exists() else Tokenizer.from_pretrained(name)
    tok.no_truncation()
    tok.no_padding()
    return tok


@dataclass(frozen=True)
class Tokens:
    """A tokenized text: ids and (char_start, char_end) per token."""
    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def tokenize(name: str, texts: Sequence[str], parallel: bool = False) -> list[Tokens]:
    """`parallel`: use every core for this batch (the index build), even where TOKENIZERS_PARALLELISM=false is set
    to keep forked workers safe; the setting is restored afterwards."""
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    if parallel:
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        encs = load_tokenizer(name).encode_batch(list(texts), add_special_tokens=False)
    finally:
        if parallel:
            os.environ.pop("TOKENIZERS_PARALLELISM") if saved is None else os.environ.update(
                TOKENIZERS_PARALLELISM=saved)
    return [Tokens(np.asarray(e.ids, dtype=np.int64), np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2))
            for e in encs]


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 0xFFFF else np.dtype(np.uint32)


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


@dataclass
class UpdateStats:
    kept: int = 0
    added: int = 0
    removed: int = 0
    tokens_added: int = 0
    rebuilt: bool = False
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_added / self.seconds if self.seconds else 0.0


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def index_path(split: str, home: Path | None = None, shard: str = "00000") -> Path:
    """The manifest of a shard's index: `ngrams/<split>/<shard>.json`."""
    return (home or settings.home()) / "ngrams" / safe_name(split) / f"{safe_name(shard)}.json"


@dataclass(frozen=True)
class Segment:
    """One searchable piece: tokens, packed suffix array (w bits an entry), document start positions, and the
    number of its first document in the index (`doc_base`, shard bits included for a split)."""
    tok: np.ndarray
    sa: np.ndarray
    w: int
    starts: np.ndarray
    doc_base: int


class NgramIndex:
    """The suffix-array index of one shard (its manifest `path`); `ngram_split.open_index` opens a split's."""

    def __init__(self, path: Path, n: int | None = None, tokenizer: str | None = None):
        """`n`/`tokenizer` None: what the index was built with (defaults for a new one). Others than the index's
        make the next `update` rebuild it."""
        self.path = Path(path)
        built = self.built_with()
        self.n = n or int(built.get("n", DEFAULT_N))
        self.tokenizer = tokenizer or built.get("tokenizer") or tokenizer_env()
        self.vocab_size = load_tokenizer(self.tokenizer).get_vocab_size()

    def manifest(self) -> dict:
        if not self.path.exists():
            raise FileNotFoundError(f"no n-gram index at {self.path}: materialize the `ngram_index` asset first")
        data = json.loads(self.path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{self.path} is an index of format {data.get('format')!r}, not {FORMAT!r}: "
                             "rebuild it (materialize `ngram_index` with rebuild=True)")
        return data

    def built_with(self) -> dict:
        return self.manifest() if self.path.exists() else {}

    @property
    def folder(self) -> Path:
        return self.path.parent / self.manifest()["folder"]

    @cached_property
    def segments(self) -> list[Segment]:
        """The memory-mapped segments (read once per NgramIndex object)."""
        man, docs = self.manifest(), self._docs(["segment", "start"])
        dtype = np.dtype(man["dtype"])
        out, base = [], 0
        seg_col, start_col = docs.column("segment").to_numpy(), docs.column("start").to_numpy()
        for k, seg in enumerate(man["segments"]):
            mine = seg_col == k
            tok = np.memmap(self.folder / f"seg{k:04d}.tok", dtype=dtype, mode="r") if seg["tokens"] else \
                np.zeros(0, dtype)
            sa = np.memmap(self.folder / f"seg{k:04d}.sa", dtype=np.uint8, mode="r")
            out.append(Segment(tok, sa, seg["w"], np.ascontiguousarray(start_col[mine]), base))
            base += int(mine.sum())
        return out

    def _docs(self, columns: list[str]) -> pa.Table:
        return pq.read_table(self.folder / "docs.parquet", columns=columns)

    def version(self) -> str:
        return self.manifest()["version"]

    def unigrams(self) -> np.ndarray:
        """Occurrences of each token id in the shard (OLMoTrace's unigram probabilities)."""
        with np.load(self.folder / "unigrams.npz") as z:
            out = np.zeros(self.vocab_size, dtype=np.int64)
            out[z["ids"]] = z["counts"]
            return out

    def stats(self) -> dict:
        man = self.manifest()
        size = sum(p.stat().st_size for p in self.folder.iterdir())
        return {"n_docs": man["n_docs"], "n_tokens": man["n_tokens"], "n": man["n"], "tokenizer": man["tokenizer"],
                "segments": len(man["segments"]), "bytes": size,
                "bytes_per_token": round(size / max(man["n_tokens"], 1), 3), "path": str(self.path)}

    def doc_ids(self, docs: Sequence[int]) -> dict[int, str]:
        if not len(docs):
            return {}
        ids = self._docs(["doc_id"]).column("doc_id")
        return {int(d): ids[int(d)].as_py() for d in docs}

    def _want_version(self, docs: Iterable[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
        from cp_assets.lib.core.versions import content_version

        pairs, seen = [], set()
        for doc_id, text in docs:
            doc_id = str(doc_id)
            if doc_id in seen:
                raise ValueError(f"document id {doc_id!r} occurs twice in the input of {self.path.name}")
            seen.add(doc_id)
            pairs.append((doc_id, text_hash(text)))
        return content_version([[self.n, self.tokenizer, FORMAT], *sorted(pairs)]), pairs

    def update(self, docs: Iterable[tuple[str, str]] | Callable[[], Iterable[tuple[str, str]]],
               rebuild: bool = False, max_segment_tokens: int = MAX_SEGMENT_TOKENS, batch_chars: int = 8_000_000,
               log: Callable[[str], None] = print) -> UpdateStats:
        """Make the index hold exactly `docs` ((doc_id, text) pairs, or a function giving them afresh: it is read
        twice, once for the version and once to build): unchanged content keeps the index, anything else rebuilds
        the shard in a new folder published atomically."""
        source = docs if callable(docs) else (lambda: docs)
        if not callable(docs) and not isinstance(docs, (list, tuple)):
            docs = list(docs)
            source = lambda: docs  # noqa: E731
        stats, t0 = UpdateStats(), time.perf_counter()
        version, pairs = self._want_version(source())
        old = {r["doc_id"]: r["text_hash"] for r in self._docs(["doc_id", "text_hash"]).to_pylist()} \
            if self._readable() else {}
        new = dict(pairs)
        stats.kept = sum(old.get(d) == h for d, h in new.items())
        stats.removed = sum(d not in new for d in old)
        if self._readable() and self.version() == version and not rebuild:
            stats.seconds = time.perf_counter() - t0
            return stats
        stats.added, stats.rebuilt = len(new) - stats.kept, True
        folder = self.path.parent / f"{self.path.stem}.{version}"
        tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        for stale in self.path.parent.glob(f".{self.path.stem}.*.tmp-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
        builder = _Builder(tmp, token_dtype(self.vocab_size), max_segment_tokens, log, self.path.stem,
                           self.vocab_size)
        batch, chars = [], 0
        for doc_id, text in source():
            batch.append((str(doc_id), text))
            chars += len(text)
            if chars >= batch_chars:
                builder.add(batch, tokenize(self.tokenizer, [t for _, t in batch], parallel=True))
                batch, chars = [], 0
        if batch:
            builder.add(batch, tokenize(self.tokenizer, [t for _, t in batch], parallel=True))
        segments, n_docs, n_tokens = builder.finish()
        if n_docs != len(pairs):
            raise RuntimeError(f"{self.path}: the documents changed while the index was built ({len(pairs)} "
                               f"hashed, {n_docs} indexed); run it again")
        stats.tokens_added = n_tokens
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        manifest = {"format": FORMAT, "version": version, "folder": folder.name, "n": self.n,
                    "tokenizer": self.tokenizer, "dtype": token_dtype(self.vocab_size).name, "n_docs": n_docs,
                    "n_tokens": n_tokens, "segments": segments}
        staged = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        staged.write_text(json.dumps(manifest, indent=1))
        staged.replace(self.path)  # the publish: readers switch to the new folder here
        self.__dict__.pop("segments", None)
        for other in self.path.parent.glob(f"{self.path.stem}.*"):
            if other.is_dir() and other.name != folder.name and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)
        stats.seconds = time.perf_counter() - t0
        return stats

    def _readable(self) -> bool:
        try:
            return self.path.exists() and (self.path.parent / self.manifest()["folder"]).exists()
        except ValueError:
            return False

    def drop(self) -> None:
        """Remove the index (manifest first, so no reader sees a manifest without its folder)."""
        folder = self.folder if self._readable() else None
        self.path.unlink(missing_ok=True)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


class _Builder:
    """Collects tokenized documents into segments of at most `max_tokens` tokens and writes each one's files."""

    def __init__(self, folder: Path, dtype: np.dtype, max_tokens: int, log: Callable[[str], None], name: str,
                 vocab_size: int):
        self.folder, self.dtype, self.max_tokens, self.log, self.name = folder, dtype, max_tokens, log, name
        self.unigrams = np.zeros(vocab_size, dtype=np.int64)
        self.sep = np.iinfo(dtype).max
        self.parts: list[np.ndarray] = []
        self.size = 0
        self.segments: list[dict] = []
        self.rows: dict[str, list] = {"doc_id": [], "text_hash": [], "segment": [], "start": [], "n_tokens": []}
        self.t0 = time.perf_counter()
        self.n_tokens = 0

    def add(self, batch: list[tuple[str, str]], toks: list[Tokens]) -> None:
        for (doc_id, text), tk in zip(batch, toks):
            if self.size and self.size + len(tk) + 1 > self.max_tokens:
                self._flush()
            if (tk.ids >= self.sep).any():
                raise ValueError(f"document {doc_id!r}: token id >= {self.sep} does not fit {self.dtype}")
            self.rows["doc_id"].append(doc_id)
            self.rows["text_hash"].append(text_hash(text))
            self.rows["segment"].append(len(self.segments))
            self.rows["start"].append(self.size)
            self.rows["n_tokens"].append(len(tk))
            self.parts.append(np.r_[self.sep, tk.ids].astype(self.dtype))
            self.unigrams += np.bincount(tk.ids, minlength=len(self.unigrams))[:len(self.unigrams)]
            self.size += len(tk) + 1
            self.n_tokens += len(tk)
        dt = time.perf_counter() - self.t0
        self.log(f"n-gram index {self.name}: {len(self.rows['doc_id']):,} docs, {self.n_tokens:,} tokens "
                 f"({self.n_tokens / max(dt, 1e-9):,.0f} tokens/s)")

    def _flush(self) -> None:
        from pydivsufsort import divsufsort

        from cp_assets.lib.corpus.exact.suffix_kernels import pack

        k = len(self.segments)
        tok = np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)
        self.parts = []
        t0 = time.perf_counter()
        sa = divsufsort(tok) if len(tok) else np.zeros(0, np.int64)
        w = max(1, int(len(tok) - 1).bit_length())
        packed = np.zeros((len(tok) * w + 7) // 8 + 8, dtype=np.uint8)
        pack(sa, w, packed)
        del sa
        tok.tofile(self.folder / f"seg{k:04d}.tok")
        packed.tofile(self.folder / f"seg{k:04d}.sa")
        self.log(f"n-gram index {self.name}: segment {k} ({len(tok):,} tokens, {w} bits a pointer) sorted in "
                 f"{time.perf_counter() - t0:.1f}s")
        self.segments.append({"tokens": int(len(tok)), "w": w})
        self.size = 0

    def finish(self) -> tuple[list[dict], int, int]:
        if self.size or not self.segments:
            self._flush()
        pq.write_table(pa.table({"doc_id": pa.array(self.rows["doc_id"], pa.string()),
                                 "text_hash": pa.array(self.rows["text_hash"], pa.string()),
                                 "segment": pa.array(self.rows["segment"], pa.int32()),
                                 "start": pa.array(self.rows["start"], pa.int64()),
                                 "n_tokens": pa.array(self.rows["n_tokens"], pa.int64())}),
                       self.folder / "docs.parquet")
        ids = np.flatnonzero(self.unigrams)
        np.savez_compressed(self.folder / "unigrams.npz", ids=ids, counts=self.unigrams[ids])
        return self.segments, len(self.rows["doc_id"]), self.n_tokens
