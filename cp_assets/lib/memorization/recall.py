"""Verbatim recall scores of a model's completion against the true continuation of a prefix (no Dagster).

`score_recall(continuation, completion)` gives a `RecallScore`:
- `exact`: the completion starts with the continuation character for character (after dropping leading whitespace
  in both and reading CRLF as LF), and the continuation does not end mid-word in the completion ('the end' does not
  match 'the ending'); the same rule as `grading.recall_match`.
- `normalized`: the same word by word after `grading.normalize_text` (lowercase, dashes to spaces, other punctuation
  dropped, whitespace collapsed), so punctuation and case variants of hand-entered texts still match.
- `char_distance` / `char_similarity`: Levenshtein distance and normalized similarity (1 - distance / longer length,
  in [0, 1]; rapidfuzz) of the two texts, characters as they are.
- `word_distance` / `word_similarity`: the same over lists of normalized words (rapidfuzz compares sequences).
- `prefix_words`: how many leading normalized words of the continuation the completion reproduces.

The completion is cut to the continuation's length before the distances are taken, because a model keeps generating
after the continuation ends and that text is neither right nor wrong. The length is counted in normalized words:
- characters: the completion keeps its whitespace-separated words up to the one that completes as many normalized
  words as the continuation has (the text between them kept as generated, so 'Day and' against 'Day—and' costs one
  character); when the match is exact it keeps exactly the continuation's characters. So `exact` holds if and only
  if `char_distance == 0`;
- words: the completion keeps as many normalized words as the continuation has, so `normalized` holds if and only if
  `word_distance == 0`.
`compare_words=N` scores only the first N whitespace-separated words of the continuation (e.g. the first 10 words
of a long passage), and the completion is cut to match.

`summarize(rows, by="category")` gives, per group and overall ("all"): n, the exact and normalized rates with 95%
Wilson intervals, mean char and word similarity with 95% percentile bootstrap intervals, and the mean matching prefix.
`recall_plot` draws the two rates per group with their intervals.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from cp_assets.lib.core.stats import wilson
from cp_assets.lib.evals.grading import normalize_text, recall_match

_WORD = re.compile(r"\S+")
ALL = "all"


@dataclass(frozen=True)
class RecallScore:
    exact: bool
    normalized: bool
    char_distance: int
    char_similarity: float  # in [0, 1]; 1 = identical
    word_distance: int
    word_similarity: float  # in [0, 1]; 1 = identical
    prefix_words: int  # leading normalized words reproduced
    n_words: int  # normalized words of the continuation compared
    n_chars: int  # characters of the continuation compared

    @property
    def prefix_fraction(self) -> float:
        return self.prefix_words / self.n_words if self.n_words else 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def first_words(text: str, n: int) -> str:
    """`text` up to the end of its n-th whitespace-separated word (the text between words kept as it is)."""
    end = 0
    for i, m in enumerate(_WORD.finditer(text)):
        if i >= n:
            break
        end = m.end()
    return text[:end]


def first_normalized_words(text: str, n: int) -> str:
    """`text` up to the end of the whitespace-separated word that completes its n-th normalized word."""
    end, count = 0, 0
    for m in _WORD.finditer(text):
        if count >= n:
            break
        count += len(normalize_text(m.group()).split())
        end = m.end()
    return text[:end]


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").lstrip()


def score_recall(continuation: str, completion: str, *, compare_words: int | None = None) -> RecallScore:
    """Recall scores of `completion` against `continuation` (its first `compare_words` words when given)."""
    want, got = _clean(continuation), _clean(completion)
    n_raw = len(_WORD.findall(want)) if compare_words is None else compare_words
    want = first_words(want, n_raw)
    m = recall_match(want, got)
    want_words = normalize_text(want).split()
    got_chars = got[:len(want)] if m.exact else first_normalized_words(got, len(want_words))
    got_words = normalize_text(got).split()[:len(want_words)]
    return RecallScore(
        exact=m.exact, normalized=m.normalized,
        char_distance=Levenshtein.distance(want, got_chars),
        char_similarity=float(Levenshtein.normalized_similarity(want, got_chars)),
        word_distance=Levenshtein.distance(want_words, got_words),
        word_similarity=float(Levenshtein.normalized_similarity(want_words, got_words)),
        prefix_words=m.matching_words, n_words=len(want_words), n_chars=len(want))


# ---------------------------------------------------------------------------------------------- summaries

def mean_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
            confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and its percentile bootstrap interval (scipy.stats.bootstrap); NaN interval under 2 values."""
    from scipy import stats as sps

    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    nan = float("nan")
    if len(x) == 0:
        return nan, nan, nan
    if len(x) < 2 or n_boot <= 0:
        return float(x.mean()), nan, nan
    res = sps.bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(seed))
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _group_summary(group: str, rows: Sequence[dict], by: str, n_boot: int, seed: int) -> dict:
    n = len(rows)
    out: dict = {by: group, "n": n}
    for name in ("exact", "normalized"):
        k = sum(bool(r[name]) for r in rows)
        lo, hi = wilson(k, n)
        out[f"{name}_k"] = k
        out[f"{name}_rate"] = k / n if n else float("nan")
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = lo, hi
    for name in ("char_similarity", "word_similarity"):
        mean, lo, hi = mean_ci([r[name] for r in rows], n_boot=n_boot, seed=seed)
        out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = mean, lo, hi
    out["mean_prefix_words"] = float(np.mean([r["prefix_words"] for r in rows])) if n else float("nan")
    return out


def summarize(rows: Sequence[dict], by: str = "category", *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per value of `by` (sorted), then the overall row (`by` = "all").

    Each input row holds `by` and the RecallScore fields (e.g. `{"category": ..., **score.as_dict()}`). Output keys:
    `by`, n, exact_k, exact_rate, exact_ci_low, exact_ci_high, the same for normalized, char_similarity (mean) with
    char_similarity_ci_low/high, the same for word_similarity, and mean_prefix_words.
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r[by]), []).append(r)
    out = [_group_summary(g, groups[g], by, n_boot, seed) for g in sorted(groups)]
    out.append(_group_summary(ALL, list(rows), by, n_boot, seed))
    return out


# ---------------------------------------------------------------------------------------------- plot

def recall_plot(summary_rows: Sequence[dict], path: Path, title: str, by: str = "category") -> Path:
    """Exact and normalized recall rate per group side by side, with 95% Wilson whiskers; n in each group's label."""
    from cp_assets.lib.core.plots import pyplot

    plt = pyplot()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [str(r[by]) for r in summary_rows]
    xs = np.arange(len(labels))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(labels) + 2), 3.8), dpi=100)
    for shift, name, color in ((-width / 2, "exact", "#c0504d"), (width / 2, "normalized", "#4a7ab5")):
        rates = np.array([r[f"{name}_rate"] for r in summary_rows], dtype=float)
        lo = np.array([r[f"{name}_ci_low"] for r in summary_rows], dtype=float)
        hi = np.array([r[f"{name}_ci_high"] for r in summary_rows], dtype=float)
        err = np.nan_to_num(np.vstack([rates - lo, hi - rates]), nan=0.0).clip(min=0)
        ax.bar(xs + shift, np.nan_to_num(rates), width, yerr=err, capsize=3, color=color, label=name)
    ticks = [f"{label} (n={r['n']})" for label, r in zip(labels, summary_rows)]
    ax.set_xticks(xs, ticks, rotation=30 if len(labels) > 5 else 0, ha="right" if len(labels) > 5 else "center",
                  fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall rate (95% Wilson)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
