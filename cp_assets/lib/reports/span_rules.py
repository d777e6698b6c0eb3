"""OLMoTrace's span rules, an option of `trace`: spans are self-contained (whole words, no sentence break except at
their end), maximal among self-contained spans, and capped in density, keeping the spans whose tokens are least
common in the split (lowest unigram probability), as OLMoTrace does (default 0.05 spans per text token).

Any piece of a text that occurs in the split is inside the longest match from its start, so the self-contained
spans are found from the longest match at each word start: cut back to the first sentence end, then to a word end.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SENTENCE_ENDS = (".", "!", "?")


@lru_cache(maxsize=4)
def token_flags(tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per token id: is it a word continuation (WordPiece `##`, or a SentencePiece/BPE piece without the word-start
    mark when the vocabulary has such marks), and does it end a sentence?"""
    from cp_assets.lib.corpus.exact.ngram_index import load_tokenizer

    vocab = load_tokenizer(tokenizer).get_vocab()
    size = max(vocab.values()) + 1
    cont, ends = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
    starts_marked = sum(p.startswith(("\u2581", "\u0120")) for p in vocab) > len(vocab) // 4
    for piece, i in vocab.items():
        cont[i] = piece.startswith("##") or (starts_marked and not piece.startswith(("\u2581", "\u0120"))
                                             and piece.isalnum())
        ends[i] = piece.lstrip("\u2581\u0120") in SENTENCE_ENDS
    return cont, ends


def self_contained_spans(ids: np.ndarray, length: np.ndarray, min_tokens: int,
                         tokenizer: str) -> list[tuple[int, int]]:
    """(start, end) of the maximal self-contained spans of >= min_tokens tokens, in text order."""
    cont, ends = token_flags(tokenizer)
    m = len(ids)
    is_cont = cont[np.clip(ids, 0, len(cont) - 1)]
    brk = np.flatnonzero(ends[np.clip(ids, 0, len(ends) - 1)])
    out, reach = [], -1
    for s in np.flatnonzero((length >= min_tokens) & ~is_cont):
        e = int(s + length[s])
        k = np.searchsorted(brk, s)
        if k < len(brk):
            e = min(e, int(brk[k]) + 1)
        while e > s and e < m and is_cont[e]:
            e -= 1
        if e - s >= min_tokens and e > reach:
            out.append((int(s), e))
            reach = e
    return out


def density_cap(spans: list[tuple[int, int]], ids: np.ndarray, unigrams: np.ndarray,
                density: float) -> list[tuple[int, int]]:
    """At most ceil(density * len(ids)) spans: those with the lowest unigram probability (the product of their
    tokens' corpus frequencies, add-one smoothed), kept in text order."""
    keep = math.ceil(density * len(ids))
    if len(spans) <= keep:
        return spans
    logp = np.log((unigrams.astype(np.float64) + 1) / (unigrams.sum() + len(unigrams)))
    score = [float(logp[np.clip(ids[s:e], 0, len(logp) - 1)].sum()) for s, e in spans]
    chosen = sorted(np.argsort(score, kind="stable")[:keep])
    return [spans[i] for i in chosen]
