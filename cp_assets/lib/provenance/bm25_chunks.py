"""BM25 over every chunk of some splits (`bm25s`): the lexical candidates of `evidence.gather`, cached on disk.

A paraphrase keeps its names, numbers and rarer words, so BM25 finds sources that the nearest embeddings miss. The
index (bm25s's sparse matrix, memory-mapped), the chunk keys (split, chunk id) and the content words' IDF are written
once per set of chunk partitions under CPROX_HOME/cache/bm25/<key>, where the key hashes each split's published
`chunks` version: a re-materialized split gets a new key, so a stale cache is never read. A cache whose files fail
their sha256 manifest, or do not load, is logged and rebuilt from the store. Chunk texts are not held in memory:
`top` reads the texts of its hits from the store (one query a batch), so a split of millions of chunks costs its
index, not its text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from cp_assets.lib.core import integrity
from cp_assets.lib.provenance.evidence import MAX_IDF, Candidate, content_words

log = logging.getLogger(__name__)
FILES = ("keys.npy", "idf.json")


class Bm25Chunks:
    """`top(queries, k)` -> per query the best chunks as `evidence.Candidate`s; `idf`: content word -> IDF."""

    def __init__(self, store, splits: Sequence[str], cache_dir: Path | None = None):
        from cp_assets.lib.core import settings

        self.store, self.splits = store, list(splits)
        versions = [f"{s}={store.partition_version('chunks', s)}" for s in self.splits]
        key = hashlib.sha256("\n".join(sorted(versions)).encode()).hexdigest()[:24]
        self.path = (cache_dir or settings.home() / "cache" / "bm25") / key
        if not self._load():
            self._build()

    def __len__(self) -> int:
        return len(self.keys)

    def _load(self) -> bool:
        import bm25s

        if not integrity.has_manifest(self.path):
            return False
        try:
            integrity.verify_manifest(self.path, required=FILES)
            self.keys = [tuple(k) for k in np.load(self.path / "keys.npy", allow_pickle=False).tolist()]
            self.idf = json.loads((self.path / "idf.json").read_text())
            self.retriever = bm25s.BM25.load(str(self.path / "index"), mmap=True, show_progress=False) if self.keys \
                else None
            return True
        except (integrity.CorruptFile, OSError, ValueError, KeyError) as exc:
            log.warning("BM25 cache %s is corrupt or truncated (%s): rebuilding it from the store", self.path, exc)
            return False

    def _build(self) -> None:
        import bm25s

        self.keys, texts = [], []
        for split in self.splits:
            for chunk_id, _, text, _ in self.store.chunk_rows(split):
                self.keys.append((split, chunk_id))
                texts.append(text)
        df: dict[str, int] = {}
        for t in texts:
            for w in content_words(t):
                df[w] = df.get(w, 0) + 1
        n = max(1, len(texts))
        self.idf = {w: min(MAX_IDF, float(np.log((n + 1) / (c + 0.5)))) for w, c in df.items()}
        self.retriever = None
        if texts:
            self.retriever = bm25s.BM25()
            self.retriever.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
        self._save()

    def _save(self) -> None:
        """Write into a temporary directory, seal it with the manifest, then rename it into place (atomic)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            np.save(tmp / "keys.npy", np.array(self.keys, dtype=str).reshape(len(self.keys), 2))
            (tmp / "idf.json").write_text(json.dumps(self.idf))
            names = list(FILES)
            if self.retriever is not None:
                self.retriever.save(str(tmp / "index"), show_progress=False)
                names += [f"index/{p.name}" for p in sorted((tmp / "index").iterdir())]
            integrity.write_manifest(tmp, names)
            shutil.rmtree(self.path, ignore_errors=True)
            tmp.rename(self.path)
        except OSError as exc:  # a read-only or full home: the index still works from memory
            log.warning("could not cache the BM25 index at %s: %s", self.path, exc)
            shutil.rmtree(tmp, ignore_errors=True)

    def top(self, queries: Sequence[str], k: int) -> list[list]:
        import bm25s

        from cp_assets.lib.reports.proximity import doc_of

        if not self.keys:
            return [[] for _ in queries]
        k = min(k, len(self.keys))
        tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        docs, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        picked = [[self.keys[i] for i, v in zip(row, sc) if v > 0] for row, sc in zip(docs, scores)]
        texts = self.store.chunk_texts(sorted({key for row in picked for key in row}))
        return [[Candidate(split, doc_of(cid), texts[(split, cid)][1]) for split, cid in row if (split, cid) in texts]
                for row in picked]
