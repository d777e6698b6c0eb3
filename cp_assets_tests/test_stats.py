"""Spearman with bootstrap intervals and distance bins (cp_assets.lib.core.stats) on data with a known answer, and the
difficulty analysis (cp_assets.lib.reports.difficulty) on synthetic results where the true sign is known per split."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from cp_assets.lib.core.stats import _rowwise_spearman, accuracy_by_bin, quantile_bins, spearman
from cp_assets_tests import report_data

X = list(range(1, 41))
NOISE = np.random.default_rng(1).normal(0, 3, 40)


@pytest.mark.parametrize("name,y,sign", [
    ("monotone", [2 * x + 1 for x in X], 1),
    ("anti-monotone", [100 - x ** 2 for x in X], -1),
    ("noisy increasing", [x + e for x, e in zip(X, NOISE)], 1),
    ("noisy decreasing", [-x + e for x, e in zip(X, NOISE)], -1),
])
def test_spearman_sign_and_interval(name, y, sign):
    c = spearman(X, y, n_boot=500, seed=3)
    assert c.n == 40 and c.reason is None
    assert c.rho == pytest.approx(sps.spearmanr(X, y).statistic)
    assert c.ci_low <= c.rho <= c.ci_high  # the interval contains the point estimate
    assert np.sign(c.rho) == sign and c.excludes_zero()
    if name in ("monotone", "anti-monotone"):
        assert c.rho == sign * 1.0 and c.ci_low == c.ci_high == sign * 1.0 and c.p_value < 1e-10


@pytest.mark.parametrize("x,y,reason", [
    ([1, 2, 3, 4], [5, 5, 5, 5], "y is constant"),
    ([2, 2, 2], [1, 2, 3], "x is constant"),
    ([1, 2], [3, 4], "n=2 < 3"),
    ([1, 2, None, float("nan")], [1, None, 3, 4], "n=1 < 3"),
    ([], [], "n=0 < 3"),
])
def test_spearman_undefined_gives_nan_with_reason(x, y, reason):
    c = spearman(x, y)
    assert math.isnan(c.rho) and math.isnan(c.ci_low) and math.isnan(c.p_value)
    assert reason in c.reason and not c.defined and "n/a" in c.text()


def test_spearman_is_deterministic_for_a_seed_and_varies_across_seeds():
    y = [x + e for x, e in zip(X, NOISE * 5)]
    a, b, c = spearman(X, y, seed=11), spearman(X, y, seed=11), spearman(X, y, seed=12)
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high) and a.rho == c.rho


def test_rowwise_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(5)
    xs, ys = rng.integers(0, 4, (20, 15)).astype(float), rng.normal(size=(20, 15))
    ours = _rowwise_spearman(xs, ys)
    for i in range(20):
        ref = sps.spearmanr(xs[i], ys[i]).statistic
        assert (math.isnan(ref) and math.isnan(ours[i])) or ours[i] == pytest.approx(ref)


def test_spearman_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        spearman([1, 2, 3], [1, 2])


def test_quantile_bins_and_accuracy_by_bin():
    assert quantile_bins([5, 1, 3, 2, 4, 6, 8, 7, 10, 9], 5).tolist() == [3, 1, 2, 1, 2, 3, 4, 4, 5, 5]
    assert quantile_bins([1, 1, 1, 2], 2).tolist() == [1, 1, 1, 2]  # ties share a bin
    dist = [i / 10 for i in range(10)]
    correct = [1, 1, 1, 1, 0, 1, 0, 0, 0, 0]
    rows = accuracy_by_bin(dist, correct, 5)
    assert [(b, n) for b, *_, n in rows] == [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]
    assert [acc for *_, acc, _ in rows] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert rows[0][1:3] == (0.0, 0.1)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    return report_data.fill(tmp_path_factory.mktemp("stats") / "results.duckdb")


def test_difficulty_report_signs_on_synthetic_data(filled):
    from cp_assets.lib.reports import difficulty

    with filled["db"].connect(read_only=True) as con:
        rep = difficulty.build_report(con, n_boot=200, seed=0)
    assert rep.embed_model == report_data.EMBED and rep.notes == []
    got = {(r.split, r.eval_set, r.variable, r.model_id): r.corr for r in rep.correlations}
    for split, sign in (("near", 1), ("far", -1)):
        for var in ("min_cosine_vs_level", "percentile_vs_level"):
            c = got[(split, "math500", var, None)]
            assert c.n == 40 and np.sign(c.rho) == sign and c.excludes_zero()
        c = got[(split, "gsm8k", "min_cosine_vs_n_steps", None)]
        assert c.n == 30 and np.sign(c.rho) == sign and c.excludes_zero()
        # m1 is right on the questions closest to `near`: closer is righter there, further is righter in `far`
        c = got[(split, "math500", "min_cosine_vs_correct", "m1")]
        assert np.sign(c.rho) == -sign and c.excludes_zero()
    assert (("near", "gsm8k", "min_cosine_vs_correct", "m1")) not in got  # no gsm8k rollouts
    readings = {(s, e): v for s, e, _, _, _, _, v in difficulty.hypothesis_rows(rep)}
    assert readings[("near", "math500")].startswith("supports") and readings[("far", "gsm8k")].startswith("contradicts")
    bins = rep.accuracy_bins[("near", "math500", "m1")]
    assert [b[0] for b in bins] == [1, 2, 3, 4, 5] and bins[0][3] == 1.0 and bins[-1][3] == 0.0
    assert ("math500", "near", 40, 3 / 40) in rep.contamination


def test_difficulty_report_skips_missing_inputs(tmp_path):
    from cp_assets.lib.reports import difficulty
    from cp_assets.lib.reports.results_db import ResultsDB

    db = ResultsDB(tmp_path / "empty.duckdb")
    db.replace_samples("math500", report_data.samples()["math500"])
    with db.connect(read_only=True) as con:
        rep = difficulty.build_report(con, n_boot=50)
    assert rep.correlations == [] and rep.contamination == []
    assert any("eval_proximity" in n for n in rep.notes) and any("contamination" in n for n in rep.notes)
    assert difficulty.figures(rep, tmp_path) == {}


def test_no_interval_when_many_resamples_are_degenerate():
    from cp_assets.lib.core.stats import spearman

    c = spearman([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [0, 0, 0, 0, 0, 0, 0, 1])
    assert c.defined and c.rho > 0 and np.isnan(c.ci_low) and "constant" in c.reason
