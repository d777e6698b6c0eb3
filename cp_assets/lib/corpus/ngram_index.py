"""An exact token n-gram index of one corpus split, in DuckDB: the basis of contamination checks and verbatim tracing.

Text is tokenized with a fast (Rust) Hugging Face tokenizer, by default the bundled all-MiniLM-L6-v2 WordPiece one
(uncased, accents stripped: matching ignores case and accents). Every window of `n` tokens inside a document (8 by
default) is hashed to 64 bits (tabulation-style: a seeded random 64-bit code per token id, combined polynomially), and
the table `postings(h, doc, pos)` records where each window starts. Longer matches are exact chains of windows on
the same diagonal (same document, corpus position - query position), so one index answers every length >= n: 10-
and 13-gram contamination, and maximal verbatim spans with exact occurrence counts (`cp_assets/lib/reports/trace.py`).
Hash collisions are the only inexactness: about 1e-9 for a 512-token query against 1e8 postings.

One DuckDB file per split and shard (`CPROX_HOME/ngrams/<split>/<shard>.duckdb`), so shards build in parallel;
`ngram_split.py` reads a split's shard files as one index. Updates are incremental: documents are keyed by id and
content hash; new or changed ones are added in batches, each batch (its postings and its `docs` rows) committed in
one transaction, removed ones deleted. A crash loses at most the batch in
flight and a rerun continues. After an update the postings are rewritten sorted by hash, so a lookup reads only the
row groups whose hash range can hold its keys.
"""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from cp_assets.lib.core import settings

DEFAULT_TOKENIZER = "all-minilm-l6-v2"
DEFAULT_N = 8
HASH_SEED = 20261125
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial combination (wraps mod 2**64)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (doc INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE, text_hash TEXT NOT NULL,
                                 n_tokens INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS postings (h BIGINT NOT NULL, doc INTEGER NOT NULL, pos INTEGER NOT NULL);
"""


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


@lru_cache(maxsize=4)
def _codes(vocab_size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64 - 1, size=vocab_size, dtype=np.uint64, endpoint=True)


def window_hashes(ids: np.ndarray, n: int, vocab_size: int, seed: int = HASH_SEED) -> np.ndarray:
    """The int64 hash of every window of n consecutive ids (len(ids) - n + 1 of them; none if shorter)."""
    m = len(ids) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.int64)
    codes = _codes(vocab_size, seed)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + codes[ids[j:j + m]]
    return h.view(np.int64)


@dataclass
class UpdateStats:
    kept: int = 0
    added: int = 0
    removed: int = 0
    tokens_added: int = 0
    postings_added: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_added / self.seconds if self.seconds else 0.0


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def index_path(split: str, home: Path | None = None, shard: str | None = None) -> Path:
    """`ngrams/<split>/<shard>.duckdb`; without a shard, the one file a split had before shards
    (`ngrams/<split>.duckdb`, moved into the split's folder as shard 00000 by its next update)."""
    root = (home or settings.home()) / "ngrams"
    if shard is None:
        return root / f"{safe_name(split)}.duckdb"
    return root / safe_name(split) / f"{safe_name(shard)}.duckdb"


class NgramIndex:
    """The n-gram index of one shard of a split (its own DuckDB file); `ngram_split.open_index` opens a split's."""

    def __init__(self, path: Path, n: int | None = None, tokenizer: str | None = None, lock_timeout_s: float = 120.0):
        """`n`/`tokenizer` None: what the file was built with (defaults for a new file). Asking for others than the
        file's makes `update` fail unless it rebuilds."""
        self.path, self.lock_timeout_s = Path(path), lock_timeout_s
        built = self.built_with()
        self.n = n or int(built.get("n", DEFAULT_N))
        self.tokenizer = tokenizer or built.get("tokenizer") or tokenizer_env()
        self.vocab_size = load_tokenizer(self.tokenizer).get_vocab_size()

    def built_with(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        with self.connect(read_only=True) as con:
            return dict(con.execute("SELECT key, value FROM meta").fetchall()) if _has(con, "meta") else {}

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, retried while another process holds DuckDB's write lock on the file."""
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"no n-gram index at {self.path}: materialize the `ngram_index` asset first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            yield con
        finally:
            con.close()

    def _init(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(SCHEMA)
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        want = {"n": str(self.n), "tokenizer": self.tokenizer, "seed": str(HASH_SEED)}
        if meta and meta != want:
            raise ValueError(f"{self.path} was built with {meta}, not {want}: delete it (or pass rebuild=True)")
        if not meta:
            con.executemany("INSERT INTO meta VALUES (?, ?)", list(want.items()))

    def hashes(self, ids: np.ndarray) -> np.ndarray:
        return window_hashes(ids, self.n, self.vocab_size)

    def update(self, docs: Iterable[tuple[str, str]], batch_tokens: int = 2_000_000, rebuild: bool = False,
               log: Callable[[str], None] = print) -> UpdateStats:
        """Make the index hold exactly `docs` ((doc_id, text) pairs): add new/changed ones, delete the others."""
        if rebuild and self.path.exists():
            self.path.unlink()
        stats, t0 = UpdateStats(), time.perf_counter()
        with self.connect() as con:
            self._init(con)
            have = {d: (i, h) for i, d, h in con.execute("SELECT doc, doc_id, text_hash FROM docs").fetchall()}
            next_doc = (con.execute("SELECT max(doc) FROM docs").fetchone()[0] or 0) + 1
            seen, pending, pending_chars, stale = set(), [], 0, []
            for doc_id, text in docs:
                doc_id = str(doc_id)
                if doc_id in seen:
                    raise ValueError(f"document id {doc_id!r} occurs twice in the input of {self.path.name}")
                seen.add(doc_id)
                th = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
                old = have.get(doc_id)
                if old and old[1] == th:
                    stats.kept += 1
                    continue
                if old:
                    stale.append(old[0])
                pending.append((next_doc, doc_id, th, text))
                next_doc += 1
                pending_chars += len(text)
                if pending_chars >= batch_tokens * 4:  # ~4 characters a token
                    self._delete(con, stale, stats)
                    self._add(con, pending, stats, log, t0)
                    pending, pending_chars = [], 0
            stale += [i for d, (i, _) in have.items() if d not in seen]
            self._delete(con, stale, stats)
            stats.removed = len([d for d in have if d not in seen])
            if pending:
                self._add(con, pending, stats, log, t0)
            if stats.added or stats.removed:
                self._compact(con)
        stats.seconds = time.perf_counter() - t0
        return stats

    def _delete(self, con: duckdb.DuckDBPyConnection, docs: list[int], stats: UpdateStats) -> None:
        if not docs:
            return
        con.execute("BEGIN")
        con.execute("DELETE FROM postings WHERE doc IN (SELECT unnest($1::INTEGER[]))", [docs])
        con.execute("DELETE FROM docs WHERE doc IN (SELECT unnest($1::INTEGER[]))", [docs])
        con.execute("COMMIT")
        docs.clear()

    def _add(self, con: duckdb.DuckDBPyConnection, batch: list[tuple[int, str, str, str]], stats: UpdateStats,
             log: Callable[[str], None], t0: float) -> None:
        toks = tokenize(self.tokenizer, [t for *_, t in batch], parallel=True)
        hs, dd, pp = [], [], []
        for (doc, *_), tk in zip(batch, toks):
            h = self.hashes(tk.ids)
            hs.append(h)
            dd.append(np.full(len(h), doc, dtype=np.int32))
            pp.append(np.arange(len(h), dtype=np.int32))
        h, d, p = (np.concatenate(x) if x else np.zeros(0) for x in (hs, dd, pp))
        order = np.argsort(h, kind="stable")
        rows = pa.table({"h": h[order], "doc": d[order], "pos": p[order]})
        meta = pa.table({"doc": [b[0] for b in batch], "doc_id": [b[1] for b in batch],
                         "text_hash": [b[2] for b in batch], "n_tokens": [len(t) for t in toks]})
        con.execute("BEGIN")
        con.register("_rows", rows)
        con.register("_meta", meta)
        con.execute("INSERT INTO postings SELECT * FROM _rows")
        con.execute("INSERT INTO docs SELECT * FROM _meta")
        con.execute("COMMIT")
        con.unregister("_rows")
        con.unregister("_meta")
        stats.added += len(batch)
        stats.tokens_added += sum(len(t) for t in toks)
        stats.postings_added += len(rows)
        dt = time.perf_counter() - t0
        log(f"n-gram index {self.path.stem}: +{stats.added:,} docs, {stats.tokens_added:,} tokens "
            f"({stats.tokens_added / max(dt, 1e-9):,.0f} tokens/s)")

    @staticmethod
    def _compact(con: duckdb.DuckDBPyConnection) -> None:
        """Rewrite postings sorted by hash (narrow row-group hash ranges: lookups skip most of the table)."""
        con.execute("DROP TABLE IF EXISTS postings_sorted")
        con.execute("CREATE TABLE postings_sorted AS SELECT * FROM postings ORDER BY h")
        con.execute("BEGIN")
        con.execute("DROP TABLE postings")
        con.execute("ALTER TABLE postings_sorted RENAME TO postings")
        con.execute("COMMIT")
        con.execute("CHECKPOINT")

    def stats(self) -> dict:
        with self.connect(read_only=True) as con:
            n_docs, n_tokens = con.execute("SELECT count(*), coalesce(sum(n_tokens), 0) FROM docs").fetchone()
            n_postings = con.execute("SELECT count(*) FROM postings").fetchone()[0]
        return {"n_docs": n_docs, "n_tokens": int(n_tokens), "n_postings": n_postings, "n": self.n,
                "tokenizer": self.tokenizer, "path": str(self.path)}

    def version(self) -> str:
        """The indexed content: every (document id, text hash) and the n-gram settings, as one short hash."""
        from cp_assets.lib.core.versions import content_version

        with self.connect(read_only=True) as con:
            docs = con.execute("SELECT doc_id, text_hash FROM docs ORDER BY doc_id").fetchall()
        return content_version([[self.n, self.tokenizer], *docs])

    def lookup(self, keys: pa.Table) -> pa.Table:
        """Join query windows (`keys`: columns h, item, qpos) with the postings: item, qpos, doc, pos."""
        with self.connect(read_only=True) as con:
            con.register("_keys", keys)
            if keys.num_rows <= 2000:  # a literal IN list lets DuckDB skip row groups by their hash range
                hs = ",".join(str(int(x)) for x in set(keys.column("h").to_pylist())) or "NULL"
                sql = (f"SELECT k.item, k.qpos, p.doc, p.pos FROM (SELECT * FROM postings WHERE h IN ({hs})) p "
                       "JOIN _keys k USING (h)")
            else:
                sql = "SELECT k.item, k.qpos, p.doc, p.pos FROM _keys k JOIN postings p USING (h)"
            return con.sql(sql).to_arrow_table()

    def doc_ids(self, docs: Sequence[int]) -> dict[int, str]:
        with self.connect(read_only=True) as con:
            return dict(con.execute("SELECT doc, doc_id FROM docs WHERE doc IN (SELECT unnest($1::INTEGER[]))",
                                    [list(map(int, docs))]).fetchall())


def _has(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()[0])
