"""Compare two groups of training runs (e.g. 3 Muon seeds vs 3 AdamW seeds, or base vs SFT) on a per-item metric,
and pick checkpoints at matched validation loss (no Dagster).

`compare(a, b)` takes, per group, {run_id: {item_id: value}} (0/1 for rates such as exact recall, or continuous
values such as similarity or a membership score) and returns a `Comparison`:
- each run's mean over the items, each group's mean = the mean over its runs of those run means, and the
  difference b - a;
- a 95% percentile interval for the two group means and their difference from a two-level bootstrap. Every resample
  draws, with replacement, the runs of group a (as many as a has), the runs of group b, and the items; a group's
  resampled mean is the mean over its drawn runs of each run's mean over the drawn items (items weighted by how often
  they were drawn). With `paired_items=True` (the default) both groups are scored on the items every run of both
  groups has, and one item draw is shared by the two groups in each resample, so the per-item difficulty cancels in
  the difference and the interval reflects seed-to-seed variation plus item sampling. With `paired_items=False` each
  group uses the items all of its own runs have, and items are drawn separately for each group.
  Items whose value is None or not finite count as absent.
- a Welch t-test and t interval of the difference of the per-run means (scipy.stats.ttest_ind, equal_var=False;
  NaN when a group has fewer than 2 runs). With only 2-3 runs per group the bootstrap interval is too narrow:
  resampling 3 runs has 10 distinct outcomes, shrinks the run variance by (n-1)/n and has no small-sample (t)
  correction. In 100 simulations with no true difference, 3 runs per group, 300 items and seed-to-seed variation
  larger than the item noise (`_groups` in cp_assets_tests/test_memorization_metrics.py, continuous metric), the 95%
  bootstrap interval excluded 0 in 18 and the Welch interval in 6; for a 0/1 metric, where run means differ mostly
  by item noise that the item resampling counts a second time, the bootstrap excluded 0 in 1 (conservative) and
  Welch in 6. Welch treats runs as the unit of replication with the right t quantile: report both, and trust a
  difference only when the Welch interval excludes 0 too.
- `per_run`: one row per run (group, run_id, mean, n_items).

`matched_checkpoints(curves)` chooses one checkpoint per run at a common validation loss, because optimizers are
compared at matched loss, not matched step: the target is the highest of the runs' best (lowest) losses (a loss
every run reached), each run's checkpoint is the one whose loss is closest to it (the earliest on a tie), and
`within_tolerance` says whether every chosen loss lies within `tolerance` (relative) of the target.

`comparison_plot` draws the two group means with their intervals (and the run means as dots), one panel per metric.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Mapping, Sequence

import numpy as np

RunValues = Mapping[Hashable, Mapping[Hashable, float | None]]


@dataclass(frozen=True)
class Comparison:
    label_a: str
    label_b: str
    mean_a: float
    mean_b: float
    diff: float  # mean_b - mean_a
    ci_low: float  # of diff
    ci_high: float
    mean_a_ci_low: float
    mean_a_ci_high: float
    mean_b_ci_low: float
    mean_b_ci_high: float
    n_runs_a: int
    n_runs_b: int
    n_items_a: int  # items scored for group a (the same items as b when paired)
    n_items_b: int
    paired: bool
    n_boot: int
    welch_p: float  # Welch t-test of the per-run means (NaN under 2 runs in a group)
    welch_ci_low: float  # Welch 95% t interval of diff
    welch_ci_high: float
    per_run: tuple[dict, ...]  # {group, run_id, mean, n_items}

    def excludes_zero(self) -> bool:
        """The 95% interval of the difference lies entirely on one side of 0."""
        return self.ci_low > 0 or self.ci_high < 0

    def welch_excludes_zero(self) -> bool:
        return self.welch_ci_low > 0 or self.welch_ci_high < 0

    def text(self, digits: int = 3) -> str:
        return (f"{self.label_a} {self.mean_a:.{digits}f}, {self.label_b} {self.mean_b:.{digits}f}, "
                f"diff {self.diff:+.{digits}f} [{self.ci_low:+.{digits}f}, {self.ci_high:+.{digits}f}] "
                f"(Welch [{self.welch_ci_low:+.{digits}f}, {self.welch_ci_high:+.{digits}f}], p={self.welch_p:.2g})")


def welch(run_means_a: np.ndarray, run_means_b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(p-value, interval low, interval high) of mean(b) - mean(a) by Welch's t-test; NaN under 2 runs in a group."""
    from scipy import stats as sps

    nan = float("nan")
    if len(run_means_a) < 2 or len(run_means_b) < 2:
        return nan, nan, nan
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.ttest_ind(run_means_b, run_means_a, equal_var=False)
        ci = res.confidence_interval(confidence)
    return float(res.pvalue), float(ci.low), float(ci.high)


def _present(values: Mapping[Hashable, float | None]) -> dict:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def _common_items(runs: Sequence[dict]) -> list:
    """Items every run has, in the first run's order."""
    common = set(runs[0]).intersection(*runs[1:])
    return [i for i in runs[0] if i in common]


def _matrix(runs: Sequence[dict], items: list) -> np.ndarray:
    return np.array([[r[i] for i in items] for r in runs], dtype=float)


def _weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) resampling weights: draw counts of a with-replacement sample of size n, divided by n."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n


def compare(a: RunValues, b: RunValues, *, n_boot: int = 2000, seed: int = 0, paired_items: bool = True,
            label_a: str = "a", label_b: str = "b", confidence: float = 0.95) -> Comparison:
    """Group means of a per-item metric, their difference b - a, and two-level bootstrap intervals."""
    for label, group in ((label_a, a), (label_b, b)):
        if not group:
            raise ValueError(f"group {label!r} has no runs")
    runs_a = {rid: _present(v) for rid, v in a.items()}
    runs_b = {rid: _present(v) for rid, v in b.items()}
    if paired_items:
        items_a = items_b = _common_items(list(runs_a.values()) + list(runs_b.values()))
    else:
        items_a, items_b = _common_items(list(runs_a.values())), _common_items(list(runs_b.values()))
    for label, items in ((label_a, items_a), (label_b, items_b)):
        if not items:
            raise ValueError(f"no item is scored in every run{'' if paired_items else f' of group {label!r}'}")
    A, B = _matrix(list(runs_a.values()), items_a), _matrix(list(runs_b.values()), items_b)
    run_means_a, run_means_b = A.mean(axis=1), B.mean(axis=1)
    mean_a, mean_b = float(run_means_a.mean()), float(run_means_b.mean())

    rng = np.random.default_rng(seed)
    va, vb = _weights(rng, A.shape[0], n_boot), _weights(rng, B.shape[0], n_boot)
    wa = _weights(rng, A.shape[1], n_boot)
    wb = wa if paired_items else _weights(rng, B.shape[1], n_boot)
    boot_a = np.einsum("br,ri,bi->b", va, A, wa)
    boot_b = np.einsum("br,ri,bi->b", vb, B, wb)
    tail = (1 - confidence) / 2 * 100
    q = [tail, 100 - tail]
    (d_lo, d_hi), (a_lo, a_hi), (b_lo, b_hi) = (np.percentile(x, q) for x in (boot_b - boot_a, boot_a, boot_b))

    w_p, w_lo, w_hi = welch(run_means_a, run_means_b, confidence)
    per_run = tuple([{"group": label_a, "run_id": rid, "mean": float(m), "n_items": len(items_a)}
                     for rid, m in zip(runs_a, run_means_a)]
                    + [{"group": label_b, "run_id": rid, "mean": float(m), "n_items": len(items_b)}
                       for rid, m in zip(runs_b, run_means_b)])
    return Comparison(label_a=label_a, label_b=label_b, mean_a=mean_a, mean_b=mean_b, diff=mean_b - mean_a,
                      ci_low=float(d_lo), ci_high=float(d_hi), mean_a_ci_low=float(a_lo), mean_a_ci_high=float(a_hi),
                      mean_b_ci_low=float(b_lo), mean_b_ci_high=float(b_hi), n_runs_a=A.shape[0],
                      n_runs_b=B.shape[0], n_items_a=len(items_a), n_items_b=len(items_b), paired=paired_items,
                      n_boot=n_boot, welch_p=w_p, welch_ci_low=w_lo, welch_ci_high=w_hi, per_run=per_run)


# ---------------------------------------------------------------------------------------------- matched loss

@dataclass(frozen=True)
class MatchedCheckpoints:
    target_loss: float  # the highest of the runs' best validation losses
    steps: dict  # run_id -> chosen step
    losses: dict  # run_id -> validation loss at that step
    rel_gaps: dict  # run_id -> |loss - target| / target
    tolerance: float
    within_tolerance: bool  # every rel_gap <= tolerance


def matched_checkpoints(curves: Mapping[Hashable, Sequence[tuple[int, float]]],
                        tolerance: float = 0.05) -> MatchedCheckpoints:
    """Per run, the checkpoint whose validation loss is closest to the common target loss (see the module doc).
    `curves`: run_id -> [(step, val_loss), ...]; non-finite losses (a diverged evaluation) are ignored."""
    clean = {}
    for rid, curve in curves.items():
        pts = sorted((int(s), float(v)) for s, v in curve if v is not None and math.isfinite(float(v)))
        if not pts:
            raise ValueError(f"run {rid!r} has no finite validation loss")
        clean[rid] = pts
    if not clean:
        raise ValueError("no runs given")
    target = max(min(v for _, v in pts) for pts in clean.values())
    steps, losses, gaps = {}, {}, {}
    for rid, pts in clean.items():
        step, val = min(pts, key=lambda p: (abs(p[1] - target), p[0]))
        steps[rid], losses[rid] = step, val
        gaps[rid] = abs(val - target) / abs(target) if target else abs(val - target)
    return MatchedCheckpoints(target_loss=target, steps=steps, losses=losses, rel_gaps=gaps, tolerance=tolerance,
                              within_tolerance=all(g <= tolerance + 1e-12 for g in gaps.values()))


# ---------------------------------------------------------------------------------------------- plot

def comparison_plot(comparisons: Mapping[str, Comparison], path: Path, title: str) -> Path:
    """One panel per metric: the two group means with their 95% bootstrap intervals, each run's mean as a dot, and the
    difference with its bootstrap and Welch intervals in the panel title."""
    from cp_assets.lib.core.plots import pyplot

    plt = pyplot()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(1, len(comparisons))
    cols = min(n, 4)  # wrap into rows of 4 panels, so a dozen metrics stay readable
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols + 0.6, 3.6 * rows), dpi=100, squeeze=False)
    for ax in axes.flat[len(comparisons):]:
        ax.set_visible(False)
    for ax, (metric, c) in zip(axes.flat, comparisons.items()):
        means = [c.mean_a, c.mean_b]
        err = np.clip([[c.mean_a - c.mean_a_ci_low, c.mean_b - c.mean_b_ci_low],
                       [c.mean_a_ci_high - c.mean_a, c.mean_b_ci_high - c.mean_b]], 0, None)
        ax.bar([0, 1], means, yerr=err, capsize=4, color=["#4a7ab5", "#c0504d"], alpha=0.8)
        for x, label in ((0, c.label_a), (1, c.label_b)):
            pts = [r["mean"] for r in c.per_run if r["group"] == label]
            ax.scatter(np.full(len(pts), x) + np.linspace(-0.12, 0.12, len(pts)), pts, s=12, color="black", zorder=3)
        ax.set_xticks([0, 1], [c.label_a, c.label_b], fontsize=8)
        ax.set_title(f"{metric}\ndiff {c.diff:+.3f} boot [{c.ci_low:+.3f}, {c.ci_high:+.3f}]\n"
                     f"Welch [{c.welch_ci_low:+.3f}, {c.welch_ci_high:+.3f}]", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
