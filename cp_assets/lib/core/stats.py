"""Rank correlation with bootstrap confidence intervals, and accuracy by distance bin (no Dagster).

`spearman` returns Spearman's rho (scipy.stats.spearmanr, with its p-value) and a 95% percentile bootstrap interval
from resampling items with replacement (seeded, 1,000 resamples by default). Resamples are ranked and correlated all
at once (rank, then Pearson on the ranks, row-wise: exactly Spearman's rho with average ranks for ties), so 1,000
resamples of a few thousand items take milliseconds. Fewer than 3 complete pairs, or a constant variable, give NaN
with the reason instead of an exception or a warning; so does the interval when more than 5% of the resamples have
a constant variable (e.g. 1 correct answer in 8: the interval of the other resamples would be biased).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

MIN_N = 3
MAX_DEGENERATE = 0.05  # more resamples than this with a constant variable: no interval


@dataclass(frozen=True)
class Correlation:
    n: int
    rho: float
    ci_low: float
    ci_high: float
    p_value: float
    reason: str | None = None  # why rho is NaN, when it is

    @property
    def defined(self) -> bool:
        return not math.isnan(self.rho)

    def excludes_zero(self) -> bool:
        """The 95% interval lies entirely on one side of 0."""
        return self.defined and (self.ci_low > 0 or self.ci_high < 0)

    def text(self, digits: int = 2) -> str:
        if not self.defined:
            return f"n/a ({self.reason})"
        return f"{self.rho:+.{digits}f} [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}]"


def _complete_pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray([np.nan if v is None else v for v in x], dtype=float)
    ya = np.asarray([np.nan if v is None else v for v in y], dtype=float)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y differ in length: {len(xa)} != {len(ya)}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    return xa[keep], ya[keep]


def _rowwise_spearman(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of two (B, n) matrices; NaN where a row is constant."""
    from scipy import stats as sps

    rx, ry = sps.rankdata(xs, axis=1), sps.rankdata(ys, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / denom, np.nan)


def spearman(x: Sequence[float], y: Sequence[float], n_boot: int = 1000, seed: int = 0,
             confidence: float = 0.95, chunk: int = 250) -> Correlation:
    """Spearman's rho of x and y (pairs with a missing or non-finite value dropped), its p-value, and a percentile
    bootstrap interval over `n_boot` resamples of the items (resamples where a variable is constant are skipped)."""
    from scipy import stats as sps

    xa, ya = _complete_pairs(x, y)
    n = len(xa)
    nan = float("nan")
    if n < MIN_N:
        return Correlation(n, nan, nan, nan, nan, f"n={n} < {MIN_N} complete pairs")
    for name, arr in (("x", xa), ("y", ya)):
        if np.all(arr == arr[0]):
            return Correlation(n, nan, nan, nan, nan, f"{name} is constant ({arr[0]:g})")
    res = sps.spearmanr(xa, ya)
    rho, p = float(res.statistic), float(res.pvalue)
    rng = np.random.default_rng(seed)
    boots = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        boots.append(_rowwise_spearman(xa[idx], ya[idx]))
    b = np.concatenate(boots) if boots else np.array([])
    degenerate = 1 - np.isfinite(b).mean() if len(b) else 1.0
    b = b[np.isfinite(b)]
    if len(b) == 0:
        return Correlation(n, rho, nan, nan, p, "every bootstrap resample was constant")
    if degenerate > MAX_DEGENERATE:  # the interval of the surviving resamples would be biased (e.g. 1 correct of 8)
        return Correlation(n, rho, nan, nan, p, f"{degenerate:.0%} of bootstrap resamples had a constant variable: "
                                                 "too few distinct values for an interval")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(b, [tail, 100 - tail])
    return Correlation(n, rho, float(low), float(high), p)


def quantile_bins(values: Sequence[float], n_bins: int = 5) -> np.ndarray:
    """Bin number 1..n_bins of each value by the values' own quantiles (ties share a bin; NaN stays 0)."""
    from scipy import stats as sps

    v = np.asarray(values, dtype=float)
    out = np.zeros(len(v), dtype=int)
    ok = np.isfinite(v)
    if ok.sum() == 0:
        return out
    ranks = sps.rankdata(v[ok], method="min") - 1  # ties get the same (lowest) rank, so the same bin
    out[ok] = np.minimum(ranks * n_bins // ok.sum(), n_bins - 1).astype(int) + 1
    return out


def accuracy_by_bin(distances: Sequence[float], correct: Sequence[float], n_bins: int = 5
                    ) -> list[tuple[int, float, float, float, int]]:
    """Accuracy per distance quantile bin: (bin, min distance, max distance, accuracy, n), closest bin first.
    `correct` may be 0/1 or a per-item fraction (several rollouts per item)."""
    d, c = _complete_pairs(distances, correct)
    bins = quantile_bins(d, n_bins)
    rows = []
    for b in range(1, n_bins + 1):
        m = bins == b
        if m.any():
            rows.append((b, float(d[m].min()), float(d[m].max()), float(c[m].mean()), int(m.sum())))
    return rows


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (NaN, NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
