"""Verbatim span tracing, as OLMoTrace does it: which maximal spans of a text occur word for word in a corpus split,
how often, and where (document ids, token offsets, a snippet).

A text's n-gram windows are looked up in the split's `NgramIndex`. Hits on one diagonal (same document, corpus
position - query position) with consecutive query positions chain into a *segment*: the query tokens [start, end)
occur at that document position. A span is *maximal* when no other matched segment contains it; its occurrence
count is the number of segments equal to it, which is exact (every occurrence of a maximal span lies on a diagonal
whose segment is exactly that span). The same segments give contamination evidence: which query tokens sit inside a
match of >= L tokens, and which query k-grams (k >= n) occur in the split.

`trace_rollouts` is the `rollout_traces` asset's work: every stored rollout of a model traced in one split, table
`rollout_spans` replaced for the (model, split), and the asset metadata rendered.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pyarrow as pa

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import image, table
from cp_assets.lib.corpus.ngram_index import NgramIndex, Tokens, tokenize
from cp_assets.lib.corpus.ngram_split import open_index
from cp_assets.lib.reports import report_tables

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.reports.results_db import ResultsDB


@dataclass(frozen=True)
class Segments:
    """Matched segments of one query: query token range [start, end) found at (doc, pos) in the split."""
    start: np.ndarray
    end: np.ndarray
    doc: np.ndarray
    pos: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


EMPTY = Segments(*(np.zeros(0, dtype=np.int64) for _ in range(4)))


Hits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # item, qpos, doc, pos: one row per window match


def lookup_hits(index: NgramIndex, tokens: Sequence[Tokens]) -> Hits:
    """Every match of every query window in the split, from one lookup for all queries."""
    hs = [index.hashes(t.ids) for t in tokens]
    if not any(len(h) for h in hs):
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
    keys = pa.table({"h": np.concatenate(hs),
                     "item": np.concatenate([np.full(len(h), i, dtype=np.int32) for i, h in enumerate(hs)]),
                     "qpos": np.concatenate([np.arange(len(h), dtype=np.int32) for h in hs])})
    hits = index.lookup(keys)
    return tuple(hits.column(c).to_numpy().astype(np.int64) for c in ("item", "qpos", "doc", "pos"))


def rare_hits(hits: Hits, max_docs: int) -> Hits:
    """Only the matches of windows that occur in at most `max_docs` documents: boilerplate windows ("Express your
    answer as a common fraction.", a LaTeX or plotting preamble) occur in many and are dropped."""
    item, qpos, doc, _ = hits
    if not len(item):
        return hits
    pairs = np.unique(np.stack([item, qpos, doc], axis=1), axis=0)
    windows, n_docs = np.unique(pairs[:, :2], axis=0, return_counts=True)
    common = windows[n_docs > max_docs]
    if not len(common):
        return hits
    key = item * (qpos.max() + 1) + qpos
    drop = np.isin(key, common[:, 0] * (qpos.max() + 1) + common[:, 1])
    return tuple(a[~drop] for a in hits)


def chain(hits: Hits, n_queries: int, n: int) -> list[Segments]:
    """Chain window matches on one diagonal (same document, pos - qpos) with consecutive query positions."""
    item, qpos, doc, pos = hits
    if not len(item):
        return [EMPTY for _ in range(n_queries)]
    diag = pos - qpos
    order = np.lexsort((qpos, diag, doc, item))
    item, qpos, doc, diag = item[order], qpos[order], doc[order], diag[order]
    new = np.ones(len(item), dtype=bool)
    new[1:] = (item[1:] != item[:-1]) | (doc[1:] != doc[:-1]) | (diag[1:] != diag[:-1]) | (qpos[1:] != qpos[:-1] + 1)
    first = np.flatnonzero(new)
    last = np.r_[first[1:] - 1, len(item) - 1]
    seg_item = item[first]
    out = []
    for i in range(n_queries):
        sel = slice(*np.searchsorted(seg_item, [i, i + 1]))
        f, l_ = first[sel], last[sel]
        out.append(Segments(qpos[f], qpos[l_] + n, doc[f], diag[f] + qpos[f]))
    return out


def segments_many(index: NgramIndex, tokens: Sequence[Tokens]) -> list[Segments]:
    """Matched segments of each tokenized query, from one lookup for all of them."""
    return chain(lookup_hits(index, tokens), len(tokens), index.n)


def covered(seg: Segments, n_tokens: int, min_len: int) -> np.ndarray:
    """Per query token: does it lie inside a matched segment of >= min_len tokens?"""
    mark = np.zeros(n_tokens + 1, dtype=np.int64)
    keep = (seg.end - seg.start) >= min_len
    np.add.at(mark, seg.start[keep], 1)
    np.add.at(mark, seg.end[keep], -1)
    return np.cumsum(mark)[:n_tokens] > 0


def kgram_presence(seg: Segments, n_tokens: int, k: int) -> np.ndarray:
    """Per query k-gram (n_tokens - k + 1 of them): does it occur in the split (k >= the index's n)?"""
    m = n_tokens - k + 1
    if m <= 0:
        return np.zeros(0, dtype=bool)
    # the k-gram at i occurs iff some segment has start <= i and end >= i + k
    best_end = np.full(n_tokens, -1, dtype=np.int64)
    np.maximum.at(best_end, seg.start, seg.end)
    reach = np.maximum.accumulate(best_end)
    return reach[:m] >= np.arange(m) + k


@dataclass
class Location:
    doc_id: str
    token_pos: int
    char_start: int | None = None
    char_end: int | None = None
    snippet: str | None = None
    verified: bool | None = None  # the document's tokens at this position equal the span's (None: not checked)


@dataclass
class Span:
    token_start: int
    token_end: int
    char_start: int
    char_end: int
    text: str
    count: int
    n_docs: int
    locations: list[Location] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return self.token_end - self.token_start

    def to_dict(self) -> dict:
        return asdict(self) | {"n_tokens": self.n_tokens}


def maximal_spans(seg: Segments, min_tokens: int) -> list[tuple[int, int, np.ndarray]]:
    """(start, end, segment indices) of each maximal span of >= min_tokens tokens, in query order."""
    if not len(seg):
        return []
    pairs = np.stack([seg.start, seg.end], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.lexsort((-uniq[:, 1], uniq[:, 0]))  # start ascending, longest first
    out, reach = [], -1
    for u in order:
        s, e = int(uniq[u, 0]), int(uniq[u, 1])
        if e > reach:
            reach = e
            if e - s >= min_tokens:
                out.append((s, e, np.flatnonzero(inverse == u)))
    return out


DocText = Callable[[Sequence[str]], dict[str, str]]


def trace_many(index: NgramIndex, texts: Sequence[str], min_tokens: int | None = None, max_docs: int = 5,
               doc_text: DocText | None = None, context_chars: int = 60) -> list[list[Span]]:
    """The maximal verbatim spans of each text in the split, with up to `max_docs` locations (snippets when
    `doc_text` maps document ids to their text)."""
    min_tokens = index.n if min_tokens is None else min_tokens
    if min_tokens < index.n:
        raise ValueError(f"min_tokens={min_tokens} is below the index's window of {index.n} tokens "
                         f"({index.path}); rebuild the index with a smaller n to trace shorter spans")
    toks = tokenize(index.tokenizer, texts)
    per_text = []
    for tk, text, seg in zip(toks, texts, segments_many(index, toks)):
        spans = []
        for s, e, members in maximal_spans(seg, min_tokens):
            docs = seg.doc[members]
            picked = members[np.unique(docs, return_index=True)[1]][:max_docs]  # one location per document first
            spans.append((Span(s, e, int(tk.offsets[s, 0]), int(tk.offsets[e - 1, 1]),
                               text[tk.offsets[s, 0]:tk.offsets[e - 1, 1]], len(members), len(np.unique(docs))),
                          [(int(seg.doc[m]), int(seg.pos[m])) for m in picked]))
        per_text.append((tk, spans))
    ids = index.doc_ids(sorted({d for _, spans in per_text for _, locs in spans for d, _ in locs}))
    texts_by_id = doc_text(sorted(set(ids.values()))) if doc_text and ids else {}
    doc_tokens = dict(zip(texts_by_id, tokenize(index.tokenizer, list(texts_by_id.values()))))
    out = []
    for tk, spans in per_text:
        for span, locs in spans:
            for d, pos in locs:
                loc = Location(ids[d], pos)
                body, dt = texts_by_id.get(loc.doc_id), doc_tokens.get(loc.doc_id)
                if body is not None and pos + span.n_tokens <= len(dt):
                    loc.verified = bool(np.array_equal(dt.ids[pos:pos + span.n_tokens],
                                                       tk.ids[span.token_start:span.token_end]))
                    loc.char_start, loc.char_end = int(dt.offsets[pos, 0]), int(dt.offsets[pos + span.n_tokens - 1, 1])
                    a, b = max(0, loc.char_start - context_chars), loc.char_end + context_chars
                    loc.snippet = ("..." if a else "") + body[a:loc.char_start] + "«" + \
                        body[loc.char_start:loc.char_end] + "»" + body[loc.char_end:b] + ("..." if b < len(body) else "")
                span.locations.append(loc)
        out.append([span for span, _ in spans])
    return out


def trace(index: NgramIndex, text: str, **kw) -> list[Span]:
    return trace_many(index, [text], **kw)[0]


LONGEST_COLUMNS = {"sample_id": "sample", "n_tokens": "tokens", "count": "count", "n_docs": "docs", "text": "span"}


def rollout_span_rows(split: str, rollouts: Sequence, index: NgramIndex, min_tokens: int, max_docs: int = 3,
                      doc_text: DocText | None = None, batch: int = 256) -> list[dict]:
    """Rows of `rollout_spans` (keys: its columns): the maximal verbatim spans of each rollout's completion."""
    rows = []
    for i in range(0, len(rollouts), batch):
        part = rollouts[i:i + batch]
        for r, spans in zip(part, trace_many(index, [r.completion for r in part], min_tokens=min_tokens,
                                             max_docs=max_docs, doc_text=doc_text)):
            rows += [{"model_id": r.model_id, "split": split, "eval_set": r.eval_set, "sample_id": r.sample_id,
                      "params_hash": r.params_hash, "token_start": s.token_start, "token_end": s.token_end,
                      "char_start": s.char_start, "char_end": s.char_end, "text": s.text, "n_tokens": s.n_tokens,
                      "count": s.count, "n_docs": s.n_docs,
                      "docs": json.dumps([asdict(loc) for loc in s.locations])} for s in spans]
    return rows


def trace_rollouts(store: PgStore, db: ResultsDB, model_id: str, split: str, *, min_tokens: int, max_docs: int,
                   log: Callable[[str], None] = print) -> dict:
    """The `rollout_traces` asset's work: trace every stored rollout of `model_id` in the split's n-gram index,
    replace the (model, split) rows of `rollout_spans`, and return the asset metadata (counts, rates, the longest
    spans as a table, a histogram of span lengths)."""
    t0 = time.perf_counter()
    done = db.rollouts(model_id=model_id)
    rows = rollout_span_rows(split, done, open_index(split), min_tokens, max_docs,
                             doc_text=lambda ids: store.document_texts(split, ids))
    with db.connect() as con:
        report_tables.replace_named(con, {"model_id": model_id, "split": split}, {"rollout_spans": rows})
    secs = time.perf_counter() - t0
    traced = {(r["sample_id"], r["params_hash"]) for r in rows}
    log(f"{model_id} x {split}: {len(rows)} spans in {len(traced)}/{len(done)} rollouts, {secs:.1f}s")
    longest = sorted(rows, key=lambda r: -r["n_tokens"])[:10]
    meta = {"rollouts": len(done), "rollouts_with_spans": len(traced), "spans": len(rows),
            "share_with_spans": round(len(traced) / len(done), 4) if done else None,
            "seconds": round(secs, 2), "rollouts_per_s": round(len(done) / secs, 1) if secs else None,
            "longest_spans": table(longest, LONGEST_COLUMNS, width=80)}
    if rows:
        from cp_assets.lib.core import plots

        png = plots.histogram([r["n_tokens"] for r in rows],
                              settings.home() / "plots" / f"rollout_spans_{model_id}_{split}.png",
                              f"{model_id} in {split}: verbatim span lengths", "tokens")
        meta["span_lengths"] = image(png, "span lengths")
    return meta
