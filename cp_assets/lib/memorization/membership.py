"""Membership-inference scores of a text from its token scores (scoring.TokenScores), and how well they separate
training members from non-members: AUROC with a bootstrap interval, TPR at low FPR, ROC curves (no Dagster).

Sign convention: every score is oriented so that HIGHER = more likely a member (the orientation of the reference
code of Shi et al. 2024 and Zhang et al. 2024). With logp_i = log p(token_i | tokens_<i) of the T scored tokens:
- `loss`  = mean_i logp_i, i.e. MINUS the mean negative log-likelihood (the LM loss in nats per token);
- `zlib`  = loss / zlib_bytes, where zlib_bytes = len(zlib.compress(text.encode("utf-8"))) at the default level.
  This is Carlini et al. 2021's "ratio of log-perplexity to zlib entropy", negated: a text the model finds much easier
  than a generic compressor does scores high;
- `min_k(k)` (Min-K% Prob, Shi et al. 2024) = mean of the lowest k% of the logp_i;
- `min_k_plus_plus(k)` (Min-K%++, Zhang et al. 2024) = mean of the lowest k% of (logp_i - mu_i) / sigma_i, where
  mu_i, sigma_i are the mean and standard deviation of log p(z | tokens_<i) over z ~ p (the whole vocabulary). None
  when the TokenScores carry no mu/sigma (the backend only sees the chosen token): unavailable, never approximated.
"Lowest k%" keeps max(1, floor(T * k / 100)) tokens. A text with no scored tokens gets None for every score.
sigma_i is floored at 1e-8 (a one-hot next-token distribution), so the z-score stays finite.

`auroc(member_scores, nonmember_scores)`: sklearn's roc_auc_score; a 95% percentile interval from a stratified
bootstrap (members and non-members resampled separately, each with replacement, so every resample keeps both class
sizes; the resampled AUROCs come from the Mann-Whitney U statistic, scipy, which equals roc_auc_score); and the TPR at
1% and 5% FPR from sklearn's roc_curve (the highest TPR whose FPR is at most the target; with fewer than 100
non-members, 1% FPR means no false positive at all). Items whose score is None or not finite are left out and
counted in `n_missing`; a class left empty gives NaN with the reason.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cp_assets.lib.evals.scoring import TokenScores

SIGMA_FLOOR = 1e-8
DEFAULT_KS = (10, 20, 50)


def blind_scores(texts: Sequence[str], member: Sequence[bool], folds: int = 5, seed: int = 0) -> list[float | None]:
    """A blind baseline that never queries the model (Das et al. 2024): a TF-IDF bag-of-words logistic regression
    trained to tell members from non-members by their text alone, each passage scored by a model that did not see
    it (stratified k-fold, out-of-fold probabilities). Its AUROC near 0.5 says members and non-members come from one
    distribution, so a model-based score above it measures the model, not a shift between the two sets."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    y = np.asarray(member, dtype=int)
    k = min(folds, int(y.sum()), int(len(y) - y.sum()))
    if k < 2:
        return [None] * len(texts)
    clf = make_pipeline(TfidfVectorizer(min_df=2, sublinear_tf=True), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return cross_val_predict(clf, list(texts), y, cv=cv, method="predict_proba")[:, 1].tolist()


def _lowest_mean(values: np.ndarray, k: float) -> float:
    if not 0 < k <= 100:
        raise ValueError(f"k must be a percentage in (0, 100], got {k}")
    keep = max(1, math.floor(len(values) * k / 100 + 1e-9))
    return float(np.sort(values)[:keep].mean())


def loss(ts: TokenScores) -> float | None:
    """Mean token logprob = -(mean NLL): higher = more likely a member."""
    return float(np.mean(ts.logprobs)) if ts.n_tokens else None


def zlib_bytes(text: str) -> int:
    return len(zlib.compress(text.encode("utf-8")))


def zlib_ratio(ts: TokenScores) -> float | None:
    """Mean token logprob / zlib-compressed bytes of the text (Carlini et al. 2021, negated): higher = member."""
    return loss(ts) / zlib_bytes(ts.text) if ts.n_tokens else None


def min_k(ts: TokenScores, k: float = 20) -> float | None:
    """Min-K% Prob: mean of the lowest k% token logprobs."""
    return _lowest_mean(np.asarray(ts.logprobs, dtype=float), k) if ts.n_tokens else None


def min_k_plus_plus(ts: TokenScores, k: float = 20) -> float | None:
    """Min-K%++: mean of the lowest k% of (logp - mu) / sigma; None without the full-vocabulary mu/sigma."""
    if not ts.has_distribution or not ts.n_tokens:
        return None
    z = (np.asarray(ts.logprobs, float) - np.asarray(ts.mu, float)) / np.maximum(np.asarray(ts.sigma, float),
                                                                               SIGMA_FLOOR)
    return _lowest_mean(z, k)


def scores(ts: TokenScores, ks: Sequence[float] = DEFAULT_KS) -> dict[str, float | None]:
    """{"loss", "zlib", "min_k_{k}" and "min_k_pp_{k}" for each k}: all oriented higher = member."""
    out: dict[str, float | None] = {"loss": loss(ts), "zlib": zlib_ratio(ts)}
    for k in ks:
        out[f"min_k_{k:g}"] = min_k(ts, k)
    for k in ks:
        out[f"min_k_pp_{k:g}"] = min_k_plus_plus(ts, k)
    return out


# ---------------------------------------------------------------------------------------------- AUROC

@dataclass(frozen=True)
class AUROC:
    auroc: float
    ci_low: float
    ci_high: float
    n_members: int  # members with a score (those used)
    n_nonmembers: int
    tpr_at_1pct_fpr: float
    tpr_at_5pct_fpr: float
    n_missing: int = 0  # items left out: score None or not finite
    reason: str | None = None  # why auroc is NaN, when it is
    tpr_at_01pct_fpr: float = float("nan")  # TPR at 0.1% FPR: 0 unless a non-member count of 1,000+ allows it

    @property
    def defined(self) -> bool:
        return not math.isnan(self.auroc)

    def text(self, digits: int = 3) -> str:
        if not self.defined:
            return f"n/a ({self.reason})"
        return f"{self.auroc:.{digits}f} [{self.ci_low:.{digits}f}, {self.ci_high:.{digits}f}]"


def _finite(values: Sequence[float | None]) -> np.ndarray:
    x = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return x[np.isfinite(x)]


def tpr_at_fpr(y_true: np.ndarray, y_score: np.ndarray, max_fpr: float) -> float:
    """Highest TPR among ROC points (sklearn roc_curve) whose FPR is at most `max_fpr`."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y_true, y_score, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def auroc(member_scores: Sequence[float | None], nonmember_scores: Sequence[float | None], n_boot: int = 1000,
          seed: int = 0, confidence: float = 0.95) -> AUROC:
    """AUROC of the scores for telling members (positives) from non-members, with a stratified bootstrap interval."""
    from scipy import stats as sps
    from sklearn.metrics import roc_auc_score

    m, o = _finite(member_scores), _finite(nonmember_scores)
    n_missing = len(member_scores) + len(nonmember_scores) - len(m) - len(o)
    nan = float("nan")
    for name, given, kept in (("member", member_scores, m), ("non-member", nonmember_scores, o)):
        if len(kept) == 0:
            why = "none given" if len(given) == 0 else f"all {len(given)} scores are None or not finite"
            return AUROC(nan, nan, nan, len(m), len(o), nan, nan, n_missing, f"no {name} scores ({why})")
    y = np.r_[np.ones(len(m)), np.zeros(len(o))]
    s = np.r_[m, o]
    point = float(roc_auc_score(y, s))
    low = high = nan
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        bm = m[rng.integers(0, len(m), size=(n_boot, len(m)))]
        bo = o[rng.integers(0, len(o), size=(n_boot, len(o)))]
        u = sps.mannwhitneyu(bm, bo, axis=1, method="asymptotic").statistic  # U of members = AUROC * n_m * n_o
        boots = u / (len(m) * len(o))
        tail = (1 - confidence) / 2 * 100
        low, high = (float(v) for v in np.percentile(boots, [tail, 100 - tail]))
    return AUROC(point, low, high, len(m), len(o), tpr_at_fpr(y, s, 0.01), tpr_at_fpr(y, s, 0.05), n_missing,
                 tpr_at_01pct_fpr=tpr_at_fpr(y, s, 0.001))


def split_by_member(rows: Sequence[Mapping], score: str) -> tuple[list, list]:
    """(member scores, non-member scores) of one score column."""
    return ([r.get(score) for r in rows if r["member"]], [r.get(score) for r in rows if not r["member"]])


def _is_score(v) -> bool:
    return v is None or (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)))


def _score_names(rows: Sequence[Mapping]) -> list[str]:
    """Columns other than 'member' whose value is a number or None in every row (an all-None column stays: its
    AUROC is NaN with the reason, e.g. Min-K%++ on a backend without mu/sigma)."""
    names = list(dict.fromkeys(key for r in rows for key in r if key != "member"))
    return [n for n in names if all(_is_score(r.get(n)) for r in rows)]


def evaluate(rows: Sequence[Mapping], score_names: Sequence[str] | None = None, n_boot: int = 1000,
             seed: int = 0) -> list[dict]:
    """One row per score: score, auroc, ci_low, ci_high, tpr_at_01pct_fpr (0.1%), tpr_at_1pct_fpr, tpr_at_5pct_fpr,
    n_members, n_nonmembers,
    n_missing, reason. Input rows hold 'member' (bool) and score columns; by default every numeric (or None) column
    other than 'member' is a score."""
    out = []
    for name in score_names or _score_names(rows):
        a = auroc(*split_by_member(rows, name), n_boot=n_boot, seed=seed)
        out.append({"score": name, "auroc": a.auroc, "ci_low": a.ci_low, "ci_high": a.ci_high,
                    "tpr_at_01pct_fpr": a.tpr_at_01pct_fpr, "tpr_at_1pct_fpr": a.tpr_at_1pct_fpr,
                    "tpr_at_5pct_fpr": a.tpr_at_5pct_fpr,
                    "n_members": a.n_members, "n_nonmembers": a.n_nonmembers, "n_missing": a.n_missing,
                    "reason": a.reason})
    return out


def roc_plot(rows_by_score: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]], path: Path,
             title: str) -> Path:
    """ROC curve of each score, given as name -> (member scores, non-member scores); the legend gives each AUROC.
    A score with an empty class (after dropping None / non-finite values) is listed as n/a."""
    from sklearn.metrics import roc_auc_score, roc_curve

    from cp_assets.lib.core.plots import pyplot

    plt = pyplot()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=100)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="chance")
    for name, (members, nonmembers) in rows_by_score.items():
        m, o = _finite(members), _finite(nonmembers)
        if len(m) == 0 or len(o) == 0:
            ax.plot([], [], label=f"{name}: n/a")
            continue
        y, s = np.r_[np.ones(len(m)), np.zeros(len(o))], np.r_[m, o]
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.4, label=f"{name}: AUROC {roc_auc_score(y, s):.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (non-members flagged)")
    ax.set_ylabel("true positive rate (members found)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- dataset inference
# Dataset inference (Maini et al. 2024, "LLM Dataset Inference"): was this *set* of documents trained on? One test
# over many passages has power where a per-passage membership score is near chance.
# 
# The suspect set and a validation set known to be unseen (same distribution) are each split in halves A and B. A
# logistic regression on the passages' membership features (loss, zlib, Min-K%, Min-K%++: whatever the model allows)
# learns on A to tell suspect from validation; on B, a one-sided Welch t-test asks whether the suspect passages score
# higher. p is the test's p-value. The control runs the same test with a random half of the validation set as the
# "suspect": its p should not be small.

DATASET_INFERENCE_COLUMNS = ["model_id", "test", "n_suspect", "n_validation", "features", "statistic", "p_value", "reason"]


def _features(rows: Sequence[Mapping], names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Columns with a finite value in every row (a score a backend cannot give is None throughout)."""
    keep = [n for n in names if all(r.get(n) is not None and math.isfinite(float(r[n])) for r in rows)]
    return np.array([[float(r[n]) for n in keep] for r in rows]).reshape(len(rows), len(keep)), keep


def dataset_test(suspect: Sequence[Mapping], validation: Sequence[Mapping], names: Sequence[str], seed: int = 0) -> dict:
    """{'n_suspect', 'n_validation', 'features', 'statistic', 'p_value', 'reason'} for one suspect set."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, used = _features(list(suspect) + list(validation), names)
    out = {"n_suspect": len(suspect), "n_validation": len(validation), "features": ",".join(used),
           "statistic": None, "p_value": None, "reason": None}
    if not used or min(len(suspect), len(validation)) < 8:
        out["reason"] = "needs 8+ passages on each side and one feature every passage has"
        return out
    y = np.r_[np.ones(len(suspect)), np.zeros(len(validation))]
    rng = np.random.default_rng(seed)
    half = np.zeros(len(y), dtype=bool)
    for label in (1, 0):
        idx = rng.permutation(np.flatnonzero(y == label))
        half[idx[: len(idx) // 2]] = True
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[half], y[half])
    z = clf.decision_function(x[~half])
    b = y[~half]
    res = stats.ttest_ind(z[b == 1], z[b == 0], equal_var=False, alternative="greater")
    out["statistic"], out["p_value"] = float(res.statistic), float(res.pvalue)
    return out


def dataset_inference(model_id: str, per_text: Sequence[Mapping], names: Sequence[str], seed: int = 0) -> list[tuple]:
    """The members as the suspect set against the held-out non-members, and the control (half the non-members
    against the other half); rows of table `dataset_inference`."""
    members = [r for r in per_text if r["member"]]
    others = [r for r in per_text if not r["member"]]
    order = np.random.default_rng(seed + 1).permutation(len(others))
    fake, rest = [others[i] for i in order[: len(others) // 2]], [others[i] for i in order[len(others) // 2:]]
    out = []
    for name, suspect, validation in (("members_vs_heldout", members, others), ("control_heldout_halves", fake, rest)):
        r = dataset_test(suspect, validation, names, seed)
        out.append((model_id, name, r["n_suspect"], r["n_validation"], r["features"], r["statistic"], r["p_value"],
                    r["reason"]))
    return out
