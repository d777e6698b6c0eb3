"""Verbatim span tracing, as OLMoTrace does it: which maximal spans of a text occur word for word in a corpus split,
how often, and where (document ids, token offsets, a snippet).

A text's tokens are searched in the split's suffix-array index (`ngram_index.py`, `ngram_search.py`): for each query
position i, the longest prefix of the text from i that occurs in the split, `L[i]`, and its exact count. The end
i + L[i] never decreases along the text, so the maximal spans (contained in no other match) are the positions where
the end moves forward; their counts are exact. The same lengths give contamination evidence: which query tokens sit
inside a match of >= L tokens, and which query k-grams occur in the split.

With `self_contained` (OLMoTrace's rules) a span must start and end on word boundaries (no WordPiece `##`
continuation at its first token or after its last), and at most `density` spans per 100 tokens are kept, the
longest (then rarest) first.

`trace_rollouts` is the `rollout_traces` asset's work: every stored rollout of a model traced in one split, table
`rollout_spans` replaced for the (model, split), and the asset metadata rendered.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import explorer_link, image, snippet, table
from cp_assets.lib.corpus.exact.ngram_index import NgramIndex, Tokens, tokenize
from cp_assets.lib.corpus.exact.ngram_search import Longest, locate, longest, longest_many, span_docs
from cp_assets.lib.corpus.exact.ngram_split import open_index
from cp_assets.lib.reports import report_tables

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.reports.results_db import ResultsDB


def longest_of(index: NgramIndex, tokens: Sequence[Tokens]) -> list[Longest]:
    """The longest match at every position of each tokenized text, one index pass for all of them."""
    return longest_many(index.segments, [t.ids for t in tokens])


def _cover(size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per position of a text of `size` tokens: does it lie in some [a, b)?"""
    mark = np.zeros(size + 1, dtype=np.int64)
    np.add.at(mark, a, 1)
    np.add.at(mark, b, -1)
    return np.cumsum(mark)[:size] > 0


def covered(length: np.ndarray, min_len: int) -> np.ndarray:
    """Per query token: does it lie inside a match of >= min_len tokens? (`length`: longest match per position)"""
    a = np.flatnonzero(length >= min_len)
    return _cover(len(length), a, a + length[a])


def kgram_presence(length: np.ndarray, k: int) -> np.ndarray:
    """Per query k-gram (len - k + 1 of them): does it occur in the split?"""
    m = len(length) - k + 1
    return length[:m] >= k if m > 0 else np.zeros(0, dtype=bool)


def rare_covered(length: np.ndarray, rare: np.ndarray, n: int, min_len: int) -> np.ndarray:
    """Per query token: does it lie inside a match of >= min_len tokens all of whose n-token windows are `rare`
    (rare[i]: the window at i occurs in few documents)? A match from a rare window at a runs to the end of the
    longest match from a or of the run of rare windows holding a, whichever comes first."""
    if not rare.any():
        return np.zeros(len(length), dtype=bool)
    ends = np.flatnonzero(rare & ~np.r_[rare[1:], False])
    a = np.flatnonzero(rare)
    b = np.minimum(a + length[a], ends[np.searchsorted(ends, a)] + n)
    keep = b - a >= min_len
    return _cover(len(length), a[keep], b[keep])


def maximal_spans(length: np.ndarray, min_tokens: int) -> list[tuple[int, int]]:
    """(start, end) of each maximal span of >= min_tokens tokens, in query order."""
    end = np.arange(len(length)) + length
    moved = np.r_[True, end[1:] > end[:-1]] & (length > 0)
    return [(int(i), int(end[i])) for i in np.flatnonzero(moved & (length >= min_tokens))]


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


DocText = Callable[[Sequence[str]], dict[str, str]]


def trace_many(index: NgramIndex, texts: Sequence[str], min_tokens: int | None = None, max_docs: int = 5,
               doc_text: DocText | None = None, context_chars: int = 60, olmotrace: bool = False,
               density: float = 0.05) -> list[list[Span]]:
    """The maximal verbatim spans of each text in the split, with their exact counts and up to `max_docs`
    locations (snippets when `doc_text` maps document ids to their text). `olmotrace`: OLMoTrace's rules
    (`span_rules.py`: self-contained spans, at most `density` spans per text token, least common words first)."""
    from cp_assets.lib.reports import span_rules

    min_tokens = index.n if min_tokens is None else max(1, min_tokens)
    toks = tokenize(index.tokenizer, texts)
    segments = index.segments
    unigrams = index.unigrams() if olmotrace else None
    per_text = []
    for tk, text, lg in zip(toks, texts, longest_many(segments, [t.ids for t in toks])):
        if olmotrace:
            found = span_rules.density_cap(
                span_rules.self_contained_spans(tk.ids, lg.length, min_tokens, index.tokenizer), tk.ids,
                unigrams, density)
        else:
            found = maximal_spans(lg.length, min_tokens)
        spans = []
        for s, e in found:
            exact = lg if e == s + lg.length[s] else longest(segments, tk.ids[s:e])
            at = s if exact is lg else 0
            spans.append((Span(s, e, int(tk.offsets[s, 0]), int(tk.offsets[e - 1, 1]),
                               text[tk.offsets[s, 0]:tk.offsets[e - 1, 1]], int(exact.count[at]),
                               span_docs(exact, at)), locate(exact, at, max_docs)))
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


LONGEST_COLUMNS = {"sample_id": "sample", "question": "question", "n_tokens": "tokens", "count": "count",
                   "n_docs": "docs", "text": "span", "explore": "explorer"}


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
    prompts = {r.sample_id: r.prompt for r in done}
    longest = [r | {"question": snippet(prompts.get(r["sample_id"]), 60),
                    "explore": explorer_link(rollout=f"{model_id}/{r['sample_id']}")}
               for r in sorted(rows, key=lambda r: -r["n_tokens"])[:10]]
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
