"""The evidence that a text was seen in the corpus, as numbers (the inputs of `seen_score`), for many texts at once.

Exact evidence, from every split's n-gram index (`cp_assets.lib.corpus.exact`): per text token, the longest match
starting there; `exact_share` = the share of the text's tokens inside a match of at least `MIN_MATCH` tokens, and
`longest_frac` = the longest match over the text's length (the best split of each).

Semantic evidence, from the embedded chunks (`cp_assets.lib.corpus.search`, every split): `nn_similarity` = 1 -
the cosine distance of the nearest chunk. A paraphrase of one corpus sentence sits far from the whole chunk that holds
it (the nearest chunks missed the source of 14 of 90 dev-set paraphrases), so candidates also come from BM25 over
every chunk (`Bm25Chunks`, `bm25s`: a paraphrase keeps its names, numbers and rarer words), and are looked at
window by window: every window of the text's length in words (half-overlapping; verse and sentence breaks do not
cut it) of the `k` nearest chunks and the `k` best BM25 chunks is compared with the text by its content words
(lower-cased words that are not English stop words, each weighted by its inverse document frequency over the chunks:
`content_overlap` = the IDF-weighted share of the text's content words the best window holds), and the `RERANK` best
windows by that overlap are embedded: `sentence_similarity` = 1 - the cosine distance of the nearest of them. An
invented sentence in the corpus's style finds passages on its topic and in its register, but not with its particulars
(names, numbers, the rarer words), which a paraphrase keeps.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

MAX_IDF = 10.0  # an unseen word weighs as much as the rarest
MIN_MATCH = 8  # tokens: a shorter verbatim match is common phrasing more often than a source
K_CHUNKS = 10
RERANK = 3
FEATURES = ("exact_share", "longest_frac", "nn_similarity", "content_overlap", "sentence_similarity")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass
class Evidence:
    text: str
    n_tokens: int = 0
    exact_share: float = 0.0
    longest_frac: float = 0.0
    longest_tokens: int = 0
    exact_split: str | None = None
    nn_similarity: float = 0.0
    nn_split: str | None = None
    content_overlap: float = 0.0
    sentence_similarity: float = 0.0
    best_sentence: str | None = None
    best_doc: str | None = None
    best_split: str | None = None
    per_split: dict = field(default_factory=dict)  # split -> {"exact_share", "longest_tokens", "nn_distance"}

    def features(self) -> np.ndarray:
        return np.array([getattr(self, f) for f in FEATURES], dtype=float)

    def to_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def content_words(text: str) -> set[str]:
    stop = _stop_words()
    return {w for w in _WORD.findall(text.lower()) if w not in stop and (len(w) > 2 or w.isdigit())}


def sentences(text: str, min_words: int = 4, max_words: int = 60) -> list[str]:
    """Sentences cut at . ! ? only: line breaks are spaces (verse runs across lines; a chunk's first and last pieces
    may be parts of sentences). A longer run without an end mark (a table, a list) is cut every `max_words`."""
    out = []
    for s in _SENT.split(" ".join(text.split())):
        words = s.split()
        out += [" ".join(words[i:i + max_words]) for i in range(0, len(words), max_words)]
    return [s for s in out if len(s.split()) >= min_words]


@lru_cache(maxsize=20_000)
def chunk_sentences(text: str) -> tuple[tuple[str, frozenset], ...]:
    """A candidate chunk's sentences with their content words (kept: similar texts share candidate chunks)."""
    return tuple((s, frozenset(content_words(s))) for s in sentences(text))


def weighted_overlap(query: set[str], other: set[str], idf: dict[str, float] | None) -> float:
    if not query:
        return 0.0
    w = (lambda t: idf.get(t, MAX_IDF)) if idf else (lambda t: 1.0)
    return sum(w(t) for t in query & other) / sum(w(t) for t in query)


_SENT = re.compile(r"(?<=[.!?])\s+")


def exact_evidence(indexes: dict, texts: Sequence[str], out: Sequence[Evidence], min_match: int = MIN_MATCH) -> None:
    """Fill the exact fields of `out` from each split's index (split -> NgramIndex or SplitIndex)."""
    from cp_assets.lib.corpus.exact.ngram_index import tokenize
    from cp_assets.lib.corpus.exact.ngram_search import longest_many
    from cp_assets.lib.reports.trace import covered

    for split, index in indexes.items():
        toks = tokenize(index.tokenizer, list(texts))
        for ev, tk, lg in zip(out, toks, longest_many(index.segments, [t.ids for t in toks])):
            n = len(tk.ids)
            ev.n_tokens = max(ev.n_tokens, n)
            if not n:
                continue
            share = float(covered(lg.length, min_match).mean())
            longest = int(lg.length.max())
            ev.per_split.setdefault(split, {}).update(exact_share=share, longest_tokens=longest)
            if (share, longest) > (ev.exact_share, ev.longest_tokens):
                ev.exact_share, ev.longest_tokens, ev.exact_split = share, longest, split
                ev.longest_frac = min(1.0, longest / n)


@dataclass(frozen=True)
class Candidate:
    """A chunk offered as a possible source (a `search` hit or a BM25 hit)."""

    split: str
    doc_id: str
    text: str
    distance: float | None = None


def semantic_evidence(hits: Sequence[Sequence], texts: Sequence[str], out: Sequence[Evidence], encode,
                      rerank: int = RERANK, idf: dict[str, float] | None = None, vectors=None) -> None:
    """Fill the semantic fields from each text's candidate chunks (`search` hits, any splits, and `Candidate`s from
    BM25: those without a distance) and `encode` (texts -> unit vectors, the embedding model of the hits);
    `vectors`: the texts' own, when already encoded."""
    wanted: list[tuple[int, str, str, str]] = []  # (text index, sentence, doc, split)
    for i, (ev, text, hs) in enumerate(zip(out, texts, hits)):
        near = [h for h in hs if h.distance is not None]
        if near:
            best = min(near, key=lambda h: h.distance)
            ev.nn_similarity, ev.nn_split = 1.0 - float(best.distance), best.split
        for h in near:
            ev.per_split.setdefault(h.split, {})
            d = ev.per_split[h.split].get("nn_distance")
            ev.per_split[h.split]["nn_distance"] = float(h.distance) if d is None else min(d, float(h.distance))
        mine = content_words(text)
        scored = []
        for h in hs:
            for s, words in chunk_sentences(h.text):
                scored.append((weighted_overlap(mine, words, idf), s, h.doc_id, h.split))
        scored.sort(key=lambda x: -x[0])
        if scored:
            ev.content_overlap = scored[0][0]
        seen = set()
        for overlap, s, doc, split in scored:
            if s in seen:
                continue
            seen.add(s)
            wanted.append((i, s, doc, split))
            if len(seen) >= rerank:
                break
    if not wanted:
        return
    qv = encode(list(texts)) if vectors is None else vectors
    sv = encode([s for _, s, _, _ in wanted])
    for (i, s, doc, split), v in zip(wanted, sv):
        sim = float(np.dot(qv[i], v))
        ev = out[i]
        if sim > ev.sentence_similarity or ev.best_sentence is None:
            ev.sentence_similarity, ev.best_sentence, ev.best_doc, ev.best_split = sim, s, doc, split


def nearest(store, model: str, vectors, splits: Sequence[str], k: int) -> list[list]:
    """The k nearest chunks (`Hit`s, cosine) of each vector over `splits`, through the in-memory FAISS indexes that
    `cprox search` builds for batches (HNSW, cached under CPROX_HOME by partition version), not one pgvector SQL
    query per text."""
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.encoder import model_slug
    from cp_assets.lib.corpus.search import memory_search

    return memory_search(store, model_slug(model), vectors, splits, k=k, metric="cosine", exact=False,
                         ef_search=100, cache_dir=settings.home() / "cache" / "indexes")


class CachedEncoder:
    """`encode` for candidate sentences: each distinct sentence once per call, and the last `size` sentences'
    vectors kept (a corpus sentence recurs among the candidates of similar texts)."""

    def __init__(self, model: str, size: int = 50_000):
        from collections import OrderedDict

        self.model, self.size, self.vectors = model, size, OrderedDict()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from cp_assets.lib.corpus.encoder import encode

        todo = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        for t, v in zip(todo, encode(self.model, todo)):
            self.vectors[t] = v
        out = np.stack([self.vectors[t] for t in texts])
        for t in texts:
            self.vectors.move_to_end(t)
        while len(self.vectors) > self.size:
            self.vectors.popitem(last=False)
        return out


def gather(store, texts: Sequence[str], *, indexes: dict | None = None, model: str | None = None,
           k: int = K_CHUNKS, bm25=None, vectors=None,
           encoder: CachedEncoder | None = None, splits: Sequence[str] | None = None) -> list[Evidence]:
    """Every piece of evidence for each text: exact from `indexes` (default: every split with an n-gram index),
    semantic from the embeddings of `model` (default: the configured one; the nearest chunks over `splits`, default
    every embedded split, by `nearest`) and BM25 candidates from `bm25` (default: `Bm25Chunks` over those splits;
    pass one to reuse it); `vectors`: the texts' own, when already encoded; `encoder`: one to reuse across calls. `explain`
    and `benchmarks/seen_score.py` both call this, so the score is chosen on the evidence it is applied to."""
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.encoder import encode, model_slug
    from cp_assets.lib.corpus.exact.ngram_split import built_splits, open_index
    from cp_assets.lib.provenance.bm25_chunks import Bm25Chunks

    model = model or settings.embed_model()
    out = [Evidence(t) for t in texts]
    indexes = indexes if indexes is not None else {s: open_index(s) for s in built_splits()}
    exact_evidence(indexes, texts, out)
    vectors = encode(model, list(texts)) if vectors is None else vectors
    splits = list(splits) if splits is not None else store.embedded_splits(model_slug(model))
    hits = nearest(store, model, vectors, splits, k)
    bm25 = bm25 or Bm25Chunks(store, splits)
    semantic_evidence([list(h) + c for h, c in zip(hits, bm25.top(texts, k))], texts, out,
                      encoder or CachedEncoder(model), idf=bm25.idf, vectors=vectors)
    return out
