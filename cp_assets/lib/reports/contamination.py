"""Contamination of eval items by a corpus split: n-gram overlap, the GPT-4 substring check, embedding distance, a flag.

Evidence per (eval item, split), from the split's n-gram index (`ngram_index.py`, `trace.py`) and the eval item's
nearest chunk (`eval_proximity`):
- `ngram_overlap`: share of the item's token 13-grams (`n`, configurable) that occur in the split (GPT-3 style).
- `contaminated_share`: share of the item's tokens inside a match of >= 10 tokens (`min_span`) (Llama 2 style), and
  its `bucket`: clean (< 20%), not_clean (20-80%), dirty (>= 80%). Llama 2's four subsets overlap: its "not clean"
  is not_clean + dirty, its "not dirty" is clean + not_clean (the SQL report counts all four).
- `substring_hits`: how many of three random 50-character substrings of the item, taken after removing spaces and
  symbols (and lowercasing), occur in the split normalized the same way (GPT-4 style); the substrings are seeded by
  the item's id, so reruns agree. One pass over the split finds every item's substrings (Aho-Corasick).
- `nn_distance`: cosine distance of the item to its nearest chunk, and `nn_percentile` in the split's reference
  distribution (see report_tables.py).

- `rare_share`: the same share, chaining only windows (8-grams) that occur in at most 10 documents of the split
  (`max_span_docs`): boilerplate such as "Express your answer as a common fraction." or a LaTeX/Asymptote preamble
  is 10+ WordPiece tokens long and occurs in hundreds of MATH documents, and would make clean items "not clean".

The flag (`FlagRule`, documented in README): an item is `flagged` when any of
  ngram      rare_share >= 0.5 (most of the item inside rare verbatim matches of >= 10 tokens),
  substring  substring_hits >= 1 (GPT-4's rule: any of the three substrings),
  embedding  nn_distance <= 0.2 (cosine), the paraphrase evidence n-grams miss;
`flag_reason` lists which. Verbatim copies trip the first two, paraphrases and changed numbers the third.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from cp_assets.lib.corpus.ngram_index import NgramIndex, tokenize
from cp_assets.lib.reports.trace import (
    chain,
    covered,
    kgram_presence,
    lookup_hits,
    rare_hits,
)

CLEAN_BELOW, DIRTY_FROM = 0.2, 0.8
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class NgramEvidence:
    n_tokens: int
    ngram_overlap: float
    contaminated_share: float
    longest_span: int
    rare_share: float = 0.0  # contaminated_share from windows found in <= max_span_docs documents only


def bucket(share: float) -> str:
    return "clean" if share < CLEAN_BELOW else "dirty" if share >= DIRTY_FROM else "not_clean"


def ngram_evidence(index: NgramIndex, texts: Sequence[str], n: int = 13, min_span: int = 10,
                   max_span_docs: int = 10) -> list[NgramEvidence]:
    """n-gram overlap and Llama-2 token share of each text against the split (and the share from rare windows,
    see `trace.rare_hits`), from one index lookup."""
    if min(n, min_span) < index.n:
        raise ValueError(f"n={n} and min_span={min_span} must be >= the index's window ({index.n} tokens, "
                         f"{index.path}); rebuild the index with a smaller n")
    toks = tokenize(index.tokenizer, texts)
    hits = lookup_hits(index, toks)
    out = []
    for tk, seg, rare in zip(toks, chain(hits, len(toks), index.n),
                             chain(rare_hits(hits, max_span_docs), len(toks), index.n)):
        present = kgram_presence(seg, len(tk), n)
        share = covered(seg, len(tk), min_span)
        rare_cov = covered(rare, len(tk), min_span)
        out.append(NgramEvidence(len(tk), float(present.mean()) if len(present) else 0.0,
                                 float(share.mean()) if len(share) else 0.0,
                                 int((seg.end - seg.start).max()) if len(seg) else 0,
                                 float(rare_cov.mean()) if len(rare_cov) else 0.0))
    return out


def normalize(text: str) -> str:
    """Letters and digits only, lowercased (GPT-4's check removes spaces and symbols)."""
    return _NOT_WORD.sub("", text).lower()


def substring_probes(key: str, text: str, k: int = 3, length: int = 50) -> list[str]:
    """k random substrings of `length` characters of the normalized text, seeded by `key` (the item id). A text
    shorter than `length` gives itself when it has at least 20 characters, and nothing otherwise."""
    norm = normalize(text)
    if len(norm) <= length:
        return [norm] if len(norm) >= 20 else []
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"))
    starts = rng.choice(len(norm) - length + 1, size=min(k, len(norm) - length + 1), replace=False)
    return [norm[s:s + length] for s in sorted(starts)]


def substring_hits(probes: Sequence[Sequence[str]], corpus: Iterable[str]) -> list[int]:
    """For each item's probes: how many occur in some corpus text (normalized), in one pass over the corpus."""
    import ahocorasick_rs

    patterns = sorted({p for ps in probes for p in ps})
    if not patterns:
        return [0 for _ in probes]
    ac = ahocorasick_rs.AhoCorasick(patterns)
    found: set[int] = set()
    for text in corpus:
        found.update(m for m, _, _ in ac.find_matches_as_indexes(normalize(text), overlapping=True))
        if len(found) == len(patterns):
            break
    hit = {patterns[i] for i in found}
    return [sum(p in hit for p in set(ps)) for ps in probes]


@dataclass(frozen=True)
class FlagRule:
    min_share: float = 0.5              # rare_share at or above: n-gram evidence (most of the item)
    min_substring_hits: int = 1         # substring_hits at or above: substring evidence
    max_nn_cosine: float = 0.2          # nn_distance at or below: embedding evidence

    def apply(self, ev: NgramEvidence, hits: int, nn_distance: float | None) -> tuple[bool, str | None]:
        reasons = [name for name, on in (
            ("ngram", ev.rare_share >= self.min_share),
            ("substring", hits >= self.min_substring_hits),
            ("embedding", nn_distance is not None and nn_distance <= self.max_nn_cosine)) if on]
        return bool(reasons), ",".join(reasons) or None


COLUMNS = ["eval_set", "sample_id", "split", "ngram_n", "n_tokens", "ngram_overlap", "contaminated_share",
           "longest_span", "bucket", "substring_hits", "nn_distance", "nn_percentile", "flagged", "flag_reason",
           "rare_share"]


def contamination_rows(eval_set: str, split: str, items: Sequence[tuple[str, str]], index: NgramIndex,
                       corpus: Iterable[str], nearest: dict[str, tuple[float, float | None]] | None = None,
                       n: int = 13, min_span: int = 10, max_span_docs: int = 10,
                       rule: FlagRule = FlagRule()) -> list[tuple]:
    """Rows of the `contamination` table for items ((sample_id, text)); `nearest`: sample_id -> (nn_distance,
    nn_percentile) from eval_proximity (absent: no embedding evidence)."""
    nearest = nearest or {}
    evidence = ngram_evidence(index, [t for _, t in items], n=n, min_span=min_span, max_span_docs=max_span_docs)
    hits = substring_hits([substring_probes(sid, t) for sid, t in items], corpus)
    rows = []
    for (sid, _), ev, h in zip(items, evidence, hits):
        dist, pct = nearest.get(sid, (None, None))
        flagged, reason = rule.apply(ev, h, dist)
        rows.append((eval_set, sid, split, n, ev.n_tokens, ev.ngram_overlap, ev.contaminated_share,
                     ev.longest_span, bucket(ev.contaminated_share), h, dist, pct, flagged, reason, ev.rare_share))
    return rows
