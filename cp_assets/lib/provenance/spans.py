"""Verbatim spans of one text in a split, as OLMoTrace shows them, and each span's documents ranked by relevance.

Spans follow OLMoTrace (`cp_assets.lib.reports.span_rules` through `trace_many(olmotrace=True)`): maximal among
self-contained spans (whole words, no sentence break inside), at most `density` spans per text token, the rarest kept.
On top, a span made only of common words is dropped: every one of its tokens has a unigram probability in the split of
at least `COMMON_P` (1 in 1,000: "of the", "it is a", "in order to" and their like), since such a span says nothing
about where the text comes from.

Each span's documents (up to `candidates` of its occurrences) are ranked by BM25 (`bm25s`) of the whole text against
them, as OLMoTrace ranks a span's documents by their relevance to the response; `relevance` is the score over the best
one of all the text's spans (1 = the most relevant document), which the explorer shows as brightness.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

COMMON_P = 1e-3
DEFAULT_DENSITY = 0.05


@dataclass
class SpanDoc:
    doc_id: str
    bm25: float
    relevance: float
    snippet: str | None
    char_start: int | None
    char_end: int | None


@dataclass
class SpanHit:
    split: str
    text: str
    char_start: int
    char_end: int
    n_tokens: int
    count: int
    n_docs: int
    min_unigram_p: float
    docs: list[SpanDoc] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def common_only(ids: np.ndarray, unigrams: np.ndarray, threshold: float = COMMON_P) -> tuple[bool, float]:
    """(every token's unigram probability >= threshold, the smallest of them)."""
    p = unigrams[np.clip(ids, 0, len(unigrams) - 1)] / max(1, int(unigrams.sum()))
    low = float(p.min()) if len(p) else 1.0
    return low >= threshold, low


def bm25_rank(query: str, docs: dict[str, str]) -> list[tuple[str, float]]:
    """(doc_id, BM25 score of `query` against each document), best first; documents stay in `docs` order on ties."""
    import bm25s

    ids = list(docs)
    if not ids:
        return []
    corpus = bm25s.tokenize([docs[d] for d in ids], stopwords="en", show_progress=False, return_ids=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    [query_tokens] = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)
    scores = np.asarray(retriever.get_scores(query_tokens), dtype=float) if query_tokens else np.zeros(len(ids))
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
    return [(ids[i], float(scores[i])) for i in order]


def trace_spans(index, store, split: str, texts: Sequence[str], *, density: float = DEFAULT_DENSITY,
                min_tokens: int | None = None, candidates: int = 20, max_docs: int = 5,
                common_p: float = COMMON_P) -> list[list[SpanHit]]:
    """Per text: its OLMoTrace spans in `split` (common-word spans dropped), each with its `max_docs` most relevant
    documents (BM25 of the text over up to `candidates` documents holding the span)."""
    from cp_assets.lib.corpus.exact.ngram_index import tokenize
    from cp_assets.lib.reports.trace import trace_many

    fetched: dict[str, str] = {}  # the documents trace_many reads for snippets, kept for BM25 (one read each)

    def doc_text(ids):
        fetched.update(store.document_texts(split, [d for d in ids if d not in fetched]))
        return {d: fetched[d] for d in ids if d in fetched}

    traced = trace_many(index, texts, min_tokens=min_tokens, max_docs=candidates, doc_text=doc_text,
                        olmotrace=True, density=density)
    unigrams = index.unigrams()
    toks = tokenize(index.tokenizer, list(texts))
    out = []
    for text, tk, spans in zip(texts, toks, traced):
        hits = []
        for sp in spans:
            common, low = common_only(tk.ids[sp.token_start:sp.token_end], unigrams, common_p)
            if common:
                continue
            hits.append((sp, low))
        ranked = dict(bm25_rank(text, doc_text(sorted({loc.doc_id for sp, _ in hits for loc in sp.locations}))))
        top = max(ranked.values(), default=0.0) or 1.0
        rows = []
        for sp, low in hits:
            docs = sorted(sp.locations, key=lambda loc: -ranked.get(loc.doc_id, 0.0))[:max_docs]
            rows.append(SpanHit(split, sp.text, sp.char_start, sp.char_end, sp.n_tokens, sp.count, sp.n_docs, low,
                                [SpanDoc(loc.doc_id, ranked.get(loc.doc_id, 0.0), ranked.get(loc.doc_id, 0.0) / top,
                                         loc.snippet, loc.char_start, loc.char_end) for loc in docs]))
        out.append(rows)
    return out
