"""`seen_score`: one number in [0, 1] that a text (a sentence) was seen in the corpus, from the exact and the semantic
evidence of `evidence.py`, and how its weights are chosen.

The score is a logistic regression over features of `evidence.FEATURES` (each in [0, 1]):
    seen_score = 1 / (1 + exp(-(INTERCEPT + sum_i WEIGHTS[i] * feature_i)))
The weights are those `choose_weights` fits on the dev half of the hand-made dev set
(`cp_assets_tests/data/seen_sentences.json`: corpus sentences verbatim, paraphrased, and invented ones in the same
styles), with the features used, the positives learnt from and the regularization C picked by 5-fold cross-validation
on that half alone (a feature left out weighs 0); the test half is scored once
with them (`benchmarks/seen_score.py` prints both, next to plain search's and plain tracing's AUROCs, and checks that
these constants are what the dev half gives). `THRESHOLD` is the score above which `explain` says "seen": the one that
maximizes balanced accuracy on the dev half.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cp_assets.lib.provenance.evidence import FEATURES, Evidence

# chosen on the dev half (benchmarks/seen_score.py, 2026-12-05, the demo corpus of corpora.yaml): see the docstring
WEIGHTS = (0.38, 0.0, 0.0, 0.0, 5.6)  # exact_share and sentence_similarity (the others left out by the choice)
INTERCEPT = -3.63
THRESHOLD = 0.61
C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def score_features(x: np.ndarray, weights: Sequence[float] = WEIGHTS, intercept: float = INTERCEPT) -> np.ndarray:
    z = np.asarray(x, dtype=float) @ np.asarray(weights, dtype=float) + intercept
    return 1.0 / (1.0 + np.exp(-z))


def seen_score(ev: Evidence) -> float:
    return float(score_features(ev.features()[None, :])[0])


def auroc_pair(scores: np.ndarray, kinds: np.ndarray, positive: str, negative: str = "invented") -> float:
    """AUROC of `scores` at telling `positive` items from `negative` ones."""
    from sklearn.metrics import roc_auc_score

    keep = (kinds == positive) | (kinds == negative)
    return float(roc_auc_score(kinds[keep] == positive, scores[keep]))


SUBSETS = (FEATURES, ("exact_share", "nn_similarity", "content_overlap", "sentence_similarity"),
           ("exact_share", "content_overlap", "sentence_similarity"), ("exact_share", "sentence_similarity"))
TRAIN_ON = ("seen", "paraphrased")  # the positives a fit learns from: verbatim and paraphrased, or paraphrased only


def _out_of_fold(x: np.ndarray, kinds: np.ndarray, cols: list[int], c: float, train_on: str, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = (kinds != "invented").astype(int)
    oof = np.zeros(len(kinds))
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, kinds):
        if train_on == "paraphrased":
            tr = tr[kinds[tr] != "verbatim"]
        fit = LogisticRegression(C=c, max_iter=5000).fit(x[tr][:, cols], y[tr])
        oof[te] = fit.decision_function(x[te][:, cols])
    return oof


def choose_weights(x: np.ndarray, kinds: Sequence[str], seed: int = 0) -> dict:
    """Fit the score on labelled rows (seen = verbatim or paraphrased, not seen = invented). The features used (one of
    `SUBSETS`), the positives learnt from (`TRAIN_ON`) and C (`C_GRID`) are picked by 5-fold cross-validation on these
    rows: the mean of the verbatim and paraphrase AUROCs of the out-of-fold scores, ties to the smaller model, then to
    the smaller C; then the fit on all the rows. Returns {'features', 'train_on', 'C', 'weights' (0 for a feature
    left out), 'intercept', 'threshold', 'cv': {(features, train_on, C): (verbatim, paraphrased)}}."""
    from sklearn.linear_model import LogisticRegression

    kinds = np.asarray(kinds)
    cv = {}
    for subset in SUBSETS:
        cols = [FEATURES.index(f) for f in subset]
        for train_on in TRAIN_ON:
            for c in C_GRID:
                oof = _out_of_fold(x, kinds, cols, c, train_on, seed)
                cv[(subset, train_on, c)] = (auroc_pair(oof, kinds, "verbatim"), auroc_pair(oof, kinds, "paraphrased"))
    best = max(cv, key=lambda k: (round(sum(cv[k]) / 2, 4), -len(k[0]), -k[2]))
    subset, train_on, c = best
    cols = [FEATURES.index(f) for f in subset]
    rows = kinds != "verbatim" if train_on == "paraphrased" else np.ones(len(kinds), dtype=bool)
    y = (kinds != "invented").astype(int)
    fit = LogisticRegression(C=c, max_iter=5000).fit(x[rows][:, cols], y[rows])
    weights = [0.0] * len(FEATURES)
    for i, w in zip(cols, fit.coef_[0]):
        weights[i] = round(float(w), 2)
    intercept = round(float(fit.intercept_[0]), 2)
    s = score_features(x, weights, intercept)
    grid = np.unique(np.round(s, 2))
    balanced = [((s[y == 1] >= t).mean() + (s[y == 0] < t).mean()) / 2 for t in grid]
    threshold = round(float(grid[int(np.argmax(balanced))]), 2)
    return {"features": subset, "train_on": train_on, "C": c, "weights": tuple(weights), "intercept": intercept,
            "threshold": threshold, "cv": cv}


def report(x: np.ndarray, kinds: Sequence[str], weights: Sequence[float] = WEIGHTS,
           intercept: float = INTERCEPT) -> list[dict]:
    """AUROCs against invented sentences, for verbatim and for paraphrased ones: the hybrid score, plain search (the
    nearest chunk's similarity) and plain tracing (the share of tokens in verbatim matches), and each feature."""
    kinds = np.asarray(kinds)
    columns = {"seen_score": score_features(x, weights, intercept), "plain search": x[:, FEATURES.index(
        "nn_similarity")], "plain tracing": x[:, FEATURES.index("exact_share")]}
    columns |= {f: x[:, i] for i, f in enumerate(FEATURES) if f not in ("nn_similarity", "exact_share")}
    return [{"score": name, "verbatim": auroc_pair(v, kinds, "verbatim"),
             "paraphrased": auroc_pair(v, kinds, "paraphrased"), "n_verbatim": int((kinds == "verbatim").sum()),
             "n_paraphrased": int((kinds == "paraphrased").sum()), "n_invented": int((kinds == "invented").sum())}
            for name, v in columns.items()]


def is_seen(score: float, threshold: float = THRESHOLD) -> bool:
    return not math.isnan(score) and score >= threshold
