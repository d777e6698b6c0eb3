"""Dataset inference (Maini et al. 2024, "LLM Dataset Inference"): was this *set* of documents trained on? One test
over many passages has power where a per-passage membership score is near chance.

The suspect set and a validation set known to be unseen (same distribution) are each split in halves A and B. A
logistic regression on the passages' membership features (loss, zlib, Min-K%, Min-K%++: whatever the model allows)
learns on A to tell suspect from validation; on B, a one-sided Welch t-test asks whether the suspect passages score
higher. p is the test's p-value. The control runs the same test with a random half of the validation set as the
"suspect": its p should not be small.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

COLUMNS = ["model_id", "test", "n_suspect", "n_validation", "features", "statistic", "p_value", "reason"]


def _features(rows: Sequence[Mapping], names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Columns with a finite value in every row (a score a backend cannot give is None throughout)."""
    keep = [n for n in names if all(r.get(n) is not None and math.isfinite(float(r[n])) for r in rows)]
    return np.array([[float(r[n]) for n in keep] for r in rows]).reshape(len(rows), len(keep)), keep


def test(suspect: Sequence[Mapping], validation: Sequence[Mapping], names: Sequence[str], seed: int = 0) -> dict:
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


def run(model_id: str, per_text: Sequence[Mapping], names: Sequence[str], seed: int = 0) -> list[tuple]:
    """The members as the suspect set against the held-out non-members, and the control (half the non-members
    against the other half); rows of table `dataset_inference`."""
    members = [r for r in per_text if r["member"]]
    others = [r for r in per_text if not r["member"]]
    order = np.random.default_rng(seed + 1).permutation(len(others))
    fake, rest = [others[i] for i in order[: len(others) // 2]], [others[i] for i in order[len(others) // 2:]]
    out = []
    for name, suspect, validation in (("members_vs_heldout", members, others), ("control_heldout_halves", fake, rest)):
        r = test(suspect, validation, names, seed)
        out.append((model_id, name, r["n_suspect"], r["n_validation"], r["features"], r["statistic"], r["p_value"],
                    r["reason"]))
    return out
