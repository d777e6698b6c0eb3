"""Dose-response of planted items: per-run tables, curves over seeds, the dose where greedy extraction crosses 50%,
whether the optimizers' curves differ, and what contamination buys on planted eval items.

Inputs are `planted_scores` rows (planted_scores.SCORE_COLUMNS, as dicts). Intervals are 95%:
- per run and dose (table `canary_memorization`): Wilson for greedy extraction, a bootstrap over items for exposure;
- curves pooled over seeds: a two-level bootstrap (seeds, then items within a seed);
- ED50 (the dose where greedy extraction crosses 50%): a logistic fit of extraction on log2(dose) over doses >= 1,
  with an interval from resampling items (an item keeps all its seeds); None when the fit does not cross inside the
  planted doses;
- optimizer difference: each run's mean over planted items (dose >= 1) is one observation, the seeds are the
  replicates: Welch's t-test and an exact permutation test (with 3 seeds each, 20 relabelings: p >= 0.1).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from cp_assets.lib.core.plots import pyplot
from cp_assets.lib.core.stats import wilson
from cp_assets.lib.memorization.planted_scores import SCORE_COLUMNS as SCORE_NAMES
from cp_assets.lib.memorization.recall import mean_ci

MEMORIZATION_COLUMNS = ["optimizer", "seed", "kind", "dose", "n", "greedy_extraction", "greedy_ci_low",
                        "greedy_ci_high", "prob_extraction", "extraction_samples", "exposure", "exposure_ci_low",
                        "exposure_ci_high", "candidates", "loss", "ref_loss", "loss_ratio", "answer_accuracy",
                        "answer_loss", "model_id"]


def _mean(values) -> float | None:
    x = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(x)) if x else None


def run_summary(rows: Sequence[tuple], n_samples: int) -> list[tuple]:
    """`canary_memorization` rows of one run: one per kind x dose."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        d = dict(zip(SCORE_NAMES, r))
        groups[(d["optimizer"], d["seed"], d["kind"], d["dose"])].append(d)
    out = []
    for (opt, seed, kind, dose), g in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][3])):
        k, n = sum(bool(d["greedy_extracted"]) for d in g), len(g)
        lo, hi = wilson(k, n)
        expo = [d["exposure"] for d in g if d["exposure"] is not None]
        e_mean, e_lo, e_hi = mean_ci(expo, seed=0) if expo else (None, None, None)
        answers = [d["answer_correct"] for d in g if d["answer_correct"] is not None]
        out.append((opt, seed, kind, dose, n, k / n, lo, hi, _mean(d["p_extract_n"] for d in g), n_samples,
                    e_mean, e_lo, e_hi, max((d["candidates"] or 0) for d in g) or None, _mean(d["loss"] for d in g),
                    _mean(d["ref_loss"] for d in g), _mean(d["loss_ratio"] for d in g),
                    _mean(answers) if answers else None, _mean(d["answer_loss"] for d in g), g[0]["model_id"]))
    return out


def _fmt(v, digits: int = 2) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (
        f"{v:.{digits}f}" if isinstance(v, float) else str(v))


def markdown(named: Sequence[dict]) -> str:
    lines = ["| kind | dose | n | greedy extraction [95% CI] | P(extract in n samples) | exposure (bits) | "
             "loss / reference | answer accuracy |", "|---|---|---|---|---|---|---|---|"]
    for r in named:
        lines.append(f"| {r['kind']} | {r['dose']} | {r['n']} | {r['greedy_extraction']:.2f} "
                     f"[{r['greedy_ci_low']:.2f}, {r['greedy_ci_high']:.2f}] | {_fmt(r['prob_extraction'])} | "
                     f"{_fmt(r['exposure'], 1)} | {_fmt(r['loss_ratio'])} | {_fmt(r['answer_accuracy'])} |")
    return "\n".join(lines)


def _dose_x(doses: Sequence[int]) -> np.ndarray:
    """Plot position of a dose on a log2 axis; dose 0 (the control) sits one step left of dose 1."""
    return np.array([math.log2(d) if d > 0 else -1.0 for d in doses])


def run_plot(named: Sequence[dict], path: Path, title: str) -> Path:
    plt = pyplot()
    kinds = sorted({r["kind"] for r in named})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for kind in kinds:
        rs = sorted((r for r in named if r["kind"] == kind), key=lambda r: r["dose"])
        x = _dose_x([r["dose"] for r in rs])
        y = np.array([r["greedy_extraction"] for r in rs])
        err = np.array([[r["greedy_extraction"] - r["greedy_ci_low"] for r in rs],
                        [r["greedy_ci_high"] - r["greedy_extraction"] for r in rs]])
        axes[0].errorbar(x, y, yerr=err, marker="o", capsize=3, label=kind)
        ex = [(xx, r["exposure"]) for xx, r in zip(x, rs) if r["exposure"] is not None]
        if ex:
            axes[1].plot([a for a, _ in ex], [b for _, b in ex], marker="o", label=kind)
    doses = sorted({r["dose"] for r in named})
    for ax, label in ((axes[0], "greedy extraction rate"), (axes[1], "exposure (bits)")):
        _dose_axis(ax, doses)
        ax.set_ylabel(label)
    return _save(fig, path, title)


def _dose_axis(ax, doses: Sequence[int]) -> None:
    if len(doses) > 10:  # Zipf-dosed items: every count from 1 up; ticks at 0 and the powers of 2
        doses = [d for d in doses if d == 0 or d & (d - 1) == 0]
    ax.set_xticks(_dose_x(doses), [str(d) for d in doses])
    ax.set_xlabel("copies in the training data (0 = control)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _save(fig, path: Path, title: str) -> Path:
    plt = pyplot()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------- over runs and seeds

def _matrix(scores: Sequence[dict], metric: str) -> tuple[np.ndarray, list, list]:
    """values[seed, item] (NaN where missing) of one group's rows."""
    seeds = sorted({s["seed"] for s in scores})
    items = sorted({s["item_id"] for s in scores})
    m = np.full((len(seeds), len(items)), np.nan)
    for s in scores:
        v = s[metric]
        if v is not None:
            m[seeds.index(s["seed"]), items.index(s["item_id"])] = float(v)
    return m, seeds, items


def crossed_bootstrap(m: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of values[seed, item] and a 95% percentile interval resampling seeds and items (crossed: a resampled
    item keeps its value in every resampled seed)."""
    mean = float(np.nanmean(m)) if np.isfinite(m).any() else float("nan")
    if m.size == 0 or not np.isfinite(m).any() or (m.shape[0] < 2 and m.shape[1] < 2):
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    si = rng.integers(0, m.shape[0], (n_boot, m.shape[0]))
    ii = rng.integers(0, m.shape[1], (n_boot, m.shape[1]))
    boots = np.array([np.nanmean(m[np.ix_(s, i)]) for s, i in zip(si, ii)])
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return mean, float(lo), float(hi)


def pooled_curves(scores: Sequence[dict], n_boot: int = 1000) -> list[dict]:
    """Per optimizer x kind x dose, over all seeds: greedy extraction, P(extract in n samples), exposure, loss ratio,
    answer accuracy, each with a crossed-bootstrap interval."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in scores:
        groups[(s["optimizer"], s["kind"], s["dose"])].append(s)
    out = []
    for (opt, kind, dose), g in sorted(groups.items()):
        row = {"optimizer": opt, "kind": kind, "dose": dose, "n_runs": len({s["seed"] for s in g}),
               "n_items": len({s["item_id"] for s in g}), "n": len(g)}
        for metric in ("greedy_extracted", "p_extract_n", "exposure", "loss_ratio", "answer_correct", "answer_loss"):
            m, _, _ = _matrix(g, metric)
            if np.isfinite(m).any():
                row[metric], row[f"{metric}_lo"], row[f"{metric}_hi"] = crossed_bootstrap(m, n_boot)
        out.append(row)
    return out


def _logistic_ed50(x: np.ndarray, y: np.ndarray) -> float | None:
    """log2 dose where a logistic fit of y on x crosses 0.5; None when y is constant or does not rise with x."""
    from sklearn.linear_model import LogisticRegression

    if len(set(y.tolist())) < 2:
        return None
    pairs, counts = np.unique(np.stack([x, y], 1), axis=0, return_counts=True)  # same fit, a row per (x, y)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(pairs[:, :1], pairs[:, 1], sample_weight=counts)
    b0, b1 = float(fit.intercept_[0]), float(fit.coef_[0, 0])
    return -b0 / b1 if b1 > 1e-9 else None


def ed50(scores: Sequence[dict], n_boot: int = 500, seed: int = 0) -> list[dict]:
    """Per optimizer x kind: the dose at which greedy extraction crosses 50% (logistic fit on log2 dose, doses >= 1)
    and a 95% interval from resampling items (each keeps all its seeds)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in scores:
        if s["dose"] >= 1:
            groups[(s["optimizer"], s["kind"])].append(s)
    out = []
    for (opt, kind), g in sorted(groups.items()):
        doses = sorted({s["dose"] for s in g})
        by_item: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for s in g:
            by_item[s["item_id"]].append((math.log2(s["dose"]), float(bool(s["greedy_extracted"]))))
        items = sorted(by_item)

        def fit(chosen) -> float | None:
            pts = [p for i in chosen for p in by_item[i]]
            return _logistic_ed50(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))

        point = fit(items)
        rng = np.random.default_rng(seed)
        boots = [fit([items[j] for j in rng.integers(0, len(items), len(items))]) for _ in range(n_boot)]
        ok = np.array([b for b in boots if b is not None])
        lo, hi = (float(2 ** np.percentile(ok, 2.5)), float(2 ** np.percentile(ok, 97.5))) if len(ok) else (None, None)
        value = 2 ** point if point is not None else None
        note = ""
        if value is None:
            rate = np.mean([float(bool(s["greedy_extracted"])) for s in g])
            note = "never extracted" if rate == 0 else ("always extracted" if rate == 1 else "no rising fit")
        elif not doses[0] <= value <= doses[-1]:
            note = f"outside the planted doses {doses[0]}-{doses[-1]} (extrapolated)"
        out.append({"optimizer": opt, "kind": kind, "ed50": value, "ci_low": lo, "ci_high": hi,
                    "n_items": len(items), "n_runs": len({s["seed"] for s in g}), "failed_boots": n_boot - len(ok),
                    "note": note})
    return out


def optimizer_tests(scores: Sequence[dict], metrics: Sequence[str] = ("greedy_extracted", "exposure",
                                                                     "secret_logprob")) -> list[dict]:
    """Muon vs AdamW per kind and metric: each run's mean over the planted items (dose >= 1) is one observation;
    Welch's t-test and an exact permutation test of the difference in means (muon - adamw) over the seeds."""
    from scipy import stats

    out = []
    for kind in sorted({s["kind"] for s in scores}):
        for metric in metrics:
            per_run: dict[tuple, list[float]] = defaultdict(list)
            for s in scores:
                if s["kind"] == kind and s["dose"] >= 1 and s[metric] is not None:
                    per_run[(s["optimizer"], s["seed"])].append(float(s[metric]))
            a = np.array([np.mean(v) for (o, _), v in sorted(per_run.items()) if o == "adamw"])
            b = np.array([np.mean(v) for (o, _), v in sorted(per_run.items()) if o == "muon"])
            row = {"kind": kind, "metric": metric, "n_runs_adamw": len(a), "n_runs_muon": len(b),
                   "adamw": float(a.mean()) if len(a) else None, "muon": float(b.mean()) if len(b) else None,
                   "diff": float(b.mean() - a.mean()) if len(a) and len(b) else None, "welch_p": None,
                   "permutation_p": None}
            if len(a) >= 2 and len(b) >= 2:
                if np.ptp(a) > 0 or np.ptp(b) > 0:  # Welch needs some spread within a group
                    row["welch_p"] = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
                perm = stats.permutation_test((b, a), lambda x, y: np.mean(x) - np.mean(y),
                                              permutation_type="independent", n_resamples=np.inf)
                row["permutation_p"] = float(perm.pvalue)
            out.append(row)
    return out


def contamination_effect(scores: Sequence[dict], n_boot: int = 1000) -> list[dict]:
    """Planted eval items against the unplanted controls (dose 0), per optimizer and dose: answer accuracy and
    answer loss, and the gain (planted - control) with a crossed-bootstrap interval for each arm."""
    evals = [s for s in scores if s["kind"] == "eval"]
    out = []
    for opt in sorted({s["optimizer"] for s in evals}):
        mine = [s for s in evals if s["optimizer"] == opt]
        control = [s for s in mine if s["dose"] == 0]
        c_acc = crossed_bootstrap(_matrix(control, "answer_correct")[0], n_boot) if control else (None,) * 3
        c_loss = _mean(s["answer_loss"] for s in control)
        for dose in sorted({s["dose"] for s in mine if s["dose"] > 0}):
            g = [s for s in mine if s["dose"] == dose]
            acc = crossed_bootstrap(_matrix(g, "answer_correct")[0], n_boot)
            loss = _mean(s["answer_loss"] for s in g)
            out.append({"optimizer": opt, "dose": dose, "n_items": len({s["item_id"] for s in g}),
                        "n_runs": len({s["seed"] for s in g}), "accuracy": acc[0], "accuracy_lo": acc[1],
                        "accuracy_hi": acc[2], "control_accuracy": c_acc[0], "control_lo": c_acc[1],
                        "control_hi": c_acc[2], "gain": (acc[0] - c_acc[0]) if c_acc[0] is not None else None,
                        "answer_loss": loss, "control_answer_loss": c_loss})
    return out


def curves_plot(curves: Sequence[dict], path: Path, title: str = "planted items: dose response") -> Path:
    """Greedy extraction (top) and exposure (bottom) against dose, one panel per kind, one line per optimizer,
    with the 95% bands of `pooled_curves`."""
    plt = pyplot()
    kinds = sorted({c["kind"] for c in curves})
    doses = sorted({c["dose"] for c in curves})
    fig, axes = plt.subplots(2, len(kinds), figsize=(4.2 * len(kinds), 7), squeeze=False)
    for col, kind in enumerate(kinds):
        for opt in sorted({c["optimizer"] for c in curves}):
            rs = sorted((c for c in curves if c["kind"] == kind and c["optimizer"] == opt), key=lambda c: c["dose"])
            x = _dose_x([c["dose"] for c in rs])
            for row, metric in ((0, "greedy_extracted"), (1, "exposure")):
                pts = [(xx, c[metric], c[f"{metric}_lo"], c[f"{metric}_hi"]) for xx, c in zip(x, rs) if metric in c]
                if not pts:
                    continue
                ax = axes[row][col]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=opt)
                ax.fill_between([p[0] for p in pts], [p[2] for p in pts], [p[3] for p in pts], alpha=0.2)
        for row, label in ((0, "greedy extraction rate"), (1, "exposure (bits)")):
            axes[row][col].set_title(f"{kind}: {label}", fontsize=10)
            _dose_axis(axes[row][col], doses)
    return _save(fig, path, title)


CHECKPOINT_COLUMNS = ["model_id", "run", "optimizer", "seed", "step", "tokens", "val_loss", "item_id", "kind", "dose",
                      "greedy_extracted", "secret_logprob", "loss"]


def matched_tests(checkpoint_rows: Sequence[dict], tolerance: float = 0.05) -> dict:
    """Muon vs AdamW at matched validation loss: per run the checkpoint closest to the loss every run reaches
    (`compare_runs.matched_checkpoints`), then `optimizer_tests` on those checkpoints' scores. When the matched
    checkpoints' losses are not within `tolerance` of each other, no difference is reported and `why` says so."""
    from cp_assets.lib.memorization.compare_runs import matched_checkpoints

    curves: dict[str, set] = defaultdict(set)
    for r in checkpoint_rows:
        curves[r["model_id"]].add((r["step"], r["val_loss"]))
    if len({r["optimizer"] for r in checkpoint_rows}) < 2:
        return {"tests": [], "why": "needs checkpoints of both optimizers"}
    match = matched_checkpoints({m: sorted(c) for m, c in curves.items()}, tolerance=tolerance)
    chosen = [r for r in checkpoint_rows if r["step"] == match.steps[r["model_id"]]]
    out = {"target_val_loss": match.target_loss, "steps": match.steps, "losses": match.losses,
           "within_tolerance": match.within_tolerance, "tests": [], "why": ""}
    if not match.within_tolerance:
        worst = max(match.rel_gaps.items(), key=lambda kv: kv[1])
        out["why"] = (f"no checkpoint of {worst[0]} lies within {tolerance:.0%} of the loss every run reaches "
                      f"({match.target_loss:.3f}; closest {match.losses[worst[0]]:.3f}): no difference is reported")
        return out
    out["tests"] = optimizer_tests(chosen, metrics=("greedy_extracted", "secret_logprob"))
    return out


TAIL_BUCKETS = ((1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 10**9))


def tail_buckets(scores: Sequence[dict], n_boot: int = 1000) -> list[dict]:
    """Recall of the Zipf-dosed `tail` facts by frequency bucket (copies 1, 2-3, 4-7, ...) per optimizer: greedy
    extraction and log p of the number, with crossed-bootstrap intervals (seeds, items)."""
    out = []
    tail = [s for s in scores if s["kind"] == "tail"]
    for opt in sorted({s["optimizer"] for s in tail}):
        for lo, hi in TAIL_BUCKETS:
            g = [s for s in tail if s["optimizer"] == opt and lo <= s["dose"] <= hi]
            if not g:
                continue
            rate = crossed_bootstrap(_matrix(g, "greedy_extracted")[0], n_boot)
            out.append({"optimizer": opt, "copies": f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"),
                        "n_items": len({s["item_id"] for s in g}), "n_runs": len({s["seed"] for s in g}),
                        "recall": rate[0], "recall_lo": rate[1], "recall_hi": rate[2],
                        "secret_logprob": _mean(s["secret_logprob"] for s in g)})
    return out
