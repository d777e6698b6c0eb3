"""Memorization-lab metrics on hand-computable cases: verbatim recall scores (cp_assets.lib.memorization.recall),
k-extractability (extraction), membership-inference scores and AUROC (membership), run-group comparisons and
matched-loss checkpoints (compare_runs); and recall scoring of the real verbatim-recall file against itself."""

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cp_assets.lib.memorization.compare_runs import compare, comparison_plot, matched_checkpoints
from cp_assets.lib.memorization.extraction import distance_histogram, make_prompts, score_extraction, summarize_extraction
from cp_assets.lib.memorization.membership import (auroc, evaluate, loss, min_k, min_k_plus_plus, roc_plot, scores, tpr_at_fpr,
                                      zlib_bytes, zlib_ratio)
from cp_assets.lib.core import settings
from cp_assets.lib.core.plots import markdown_image
from cp_assets.lib.memorization.recall import recall_plot, score_recall, summarize
from cp_assets.lib.evals.scoring import TokenScores
from cp_assets_tests.conftest import png_size

RECALL_FILE = settings.data_dir() / "verbatim_recall/famous_public_domain_texts.jsonl"
GETTYSBURG = " a new nation, conceived in Liberty,"  # 35 characters after the leading space, 6 words


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


# ---------------------------------------------------------------------------------------------- recall

@pytest.mark.parametrize("continuation,completion,exact,normalized,char_d,word_d,prefix,n_words", [
    # verbatim, then the model keeps going: the tail is cut off before comparing
    (GETTYSBURG, " a new nation, conceived in Liberty, and dedicated to", True, True, 0, 0, 6, 6),
    # case and punctuation variants: A->a, two commas missing, L->l = 4 character edits, 0 word edits
    (GETTYSBURG, "A new nation conceived in liberty and dedicated", False, True, 4, 0, 6, 6),
    # one wrong character in the third word
    (GETTYSBURG, " a new notion, conceived in Liberty,", False, False, 1, 1, 2, 6),
    # the continuation must not end mid-word: 'the end' vs 'the ending' (3 inserted characters)
    ("the end", "the ending is near", False, False, 3, 1, 1, 2),
    # a short completion: two words missing (11 characters: ' three four')
    ("one two three four", "one two", False, False, 11, 2, 2, 4),
    # a dash splits words: 'Day—and' is 'day and' once normalized; D->d and the dash->space = 2 edits
    ("Day—and night", "day and night and more", False, True, 2, 0, 3, 3),
    # ... and a comma the continuation does not have is one more
    ("Day—and night", "day and night, and more", False, True, 3, 0, 3, 3),
    # leading whitespace and CRLF do not count
    ("\nline one\r\nline two", "line one\nline two\nline three", True, True, 0, 0, 4, 4),
    # nothing generated
    ("a b", "", False, False, 3, 2, 0, 2),
])
def test_score_recall(continuation, completion, exact, normalized, char_d, word_d, prefix, n_words):
    s = score_recall(continuation, completion)
    assert (s.exact, s.normalized) == (exact, normalized)
    assert (s.char_distance, s.word_distance, s.prefix_words, s.n_words) == (char_d, word_d, prefix, n_words)
    assert 0 <= s.char_similarity <= 1 and (s.char_similarity == 1.0) == (char_d == 0)
    assert s.word_similarity == pytest.approx(1 - word_d / n_words)
    assert s.exact == (s.char_distance == 0) and s.normalized == (s.word_distance == 0)


@pytest.mark.parametrize("completion,char_sim", [
    ("A new nation conceived in liberty and dedicated", 1 - 4 / 35),  # the longer text is the continuation (35)
    (" a new notion, conceived in Liberty,", 1 - 1 / 35),
    # cut after 'liberty,,,,' (38 characters): L->l and 3 extra commas
    ("a new nation, conceived in liberty,,,, and", 1 - 4 / 38),
    # the continuation followed by punctuation is still exact ('Liberty,' then ',,, and'): nothing to count
    ("a new nation, conceived in Liberty,,,, and", 1.0),
])
def test_char_similarity_values(completion, char_sim):
    assert score_recall(GETTYSBURG, completion).char_similarity == pytest.approx(char_sim)


@pytest.mark.parametrize("compare_words,exact,normalized,prefix,n_words", [
    (3, True, True, 3, 3),  # only 'one two three' is compared
    (4, False, False, 3, 4),
    (None, False, False, 3, 5),
])
def test_compare_words(compare_words, exact, normalized, prefix, n_words):
    s = score_recall("one two three four five", "one two three FIVE six", compare_words=compare_words)
    assert (s.exact, s.normalized, s.prefix_words, s.n_words) == (exact, normalized, prefix, n_words)


def test_word_edit_distance_on_known_lists():
    # normalized words: [the, cat, sat, on, the, mat] vs [the, dog, sat, on, mat, today]:
    # cat->dog (1), delete 'the' (1), insert 'today' (1) = 3 over 6 words
    s = score_recall("The cat sat on the mat.", "the dog sat on mat today and then left")
    assert s.word_distance == 3 and s.word_similarity == pytest.approx(0.5) and s.prefix_words == 1


def test_summarize_rates_intervals_and_overall_row():
    rows = [{"category": "poem", **score_recall("a b c", c).as_dict()} for c in ("a b c", "A, b c", "x y z", "a b")]
    rows += [{"category": "song", **score_recall("la la", "la la la").as_dict()}] * 3
    out = summarize(rows, n_boot=200)
    assert [r["category"] for r in out] == ["poem", "song", "all"]
    poem, song, total = out
    assert (poem["n"], poem["exact_k"], poem["normalized_k"]) == (4, 1, 2)
    assert poem["exact_rate"] == 0.25 and poem["normalized_rate"] == 0.5
    # Wilson 95% for 1/4, by hand: centre 0.3725, half-width 0.3269
    assert (poem["exact_ci_low"], poem["exact_ci_high"]) == pytest.approx((0.0456, 0.6994), abs=1e-3)
    assert poem["mean_prefix_words"] == pytest.approx((3 + 3 + 0 + 2) / 4)
    # word similarity per poem row: 1, 1, 0, 2/3
    assert poem["word_similarity"] == pytest.approx((1 + 1 + 0 + 2 / 3) / 4)
    assert poem["word_similarity_ci_low"] <= poem["word_similarity"] <= poem["word_similarity_ci_high"]
    assert song["exact_rate"] == 1.0 and song["char_similarity_ci_low"] == song["char_similarity_ci_high"] == 1.0
    assert total["n"] == 7 and total["exact_k"] == 4 and total["normalized_k"] == 5


def _recall_rows():
    return [json.loads(line) for line in RECALL_FILE.read_text().splitlines() if line.strip()]


def test_real_recall_file_against_itself_and_shuffled(tmp_path):
    items = _recall_rows()
    assert len(items) == 79
    same = [{"category": it["category"], **score_recall(it["continuation"], it["continuation"]).as_dict()}
            for it in items]
    assert all(r["exact"] and r["normalized"] and r["char_distance"] == 0 and r["word_similarity"] == 1.0
               for r in same)
    # every continuation against the next item's continuation
    shuffled = [{"category": it["category"],
                 **score_recall(it["continuation"], items[(i + 1) % len(items)]["continuation"]).as_dict()}
                for i, it in enumerate(items)]
    assert not any(r["exact"] or r["normalized"] for r in shuffled)
    assert np.mean([r["char_similarity"] for r in shuffled]) < 0.5
    summary_same, summary_shuffled = summarize(same), summarize(shuffled)
    assert len(summary_same) == 13  # 12 categories + all
    assert summary_same[-1]["exact_rate"] == 1.0 and summary_same[-1]["n"] == 79
    assert summary_same[-1]["exact_ci_low"] == pytest.approx(0.9536, abs=1e-3)  # Wilson for 79/79
    assert summary_shuffled[-1]["exact_rate"] == 0.0 and summary_shuffled[-1]["normalized_k"] == 0
    path = recall_plot(summary_shuffled, tmp_path / "recall.png", "shuffled continuations")
    assert _png(path) and markdown_image(path, "recall").startswith("![recall](data:image/png;base64,")


# ---------------------------------------------------------------------------------------------- extraction

TEXTS = [list(range(100)), list(range(1000, 1010)), list(range(2000, 2064)), list(range(3000, 3200))]


def test_make_prompts_windows_deterministic_and_of_the_right_lengths():
    prompts = make_prompts(TEXTS, n=10, seed=7)
    assert sorted(p.text_index for p in prompts) == [0, 2, 3]  # text 1 is too short for 32 + 32 tokens
    for p in prompts:
        assert len(p.prefix_ids) == 32 and len(p.target_ids) == 32
        assert list(p.prefix_ids + p.target_ids) == TEXTS[p.text_index][p.offset:p.offset + 64]
    assert next(p for p in prompts if p.text_index == 2).offset == 0  # exactly 64 tokens: one window
    assert make_prompts(TEXTS, n=10, seed=7) == prompts
    assert len(make_prompts(TEXTS, n=2, seed=7)) == 2
    assert len({tuple(p.offset for p in make_prompts(TEXTS, n=3, seed=s)) for s in range(5)}) > 1


@pytest.mark.parametrize("prefix_tokens,suffix_tokens", [(4, 2), (1, 1), (8, 8)])
def test_make_prompts_small_windows(prefix_tokens, suffix_tokens):
    (p,) = make_prompts([list(range(16))], n=1, seed=0, prefix_tokens=prefix_tokens, suffix_tokens=suffix_tokens)
    assert p.prefix_ids == tuple(range(p.offset, p.offset + prefix_tokens))
    assert p.target_ids == tuple(range(p.offset + prefix_tokens, p.offset + prefix_tokens + suffix_tokens))
    assert 0 <= p.offset <= 16 - prefix_tokens - suffix_tokens


@pytest.mark.parametrize("generated,exact,prefix,fraction", [
    ([1, 2, 3, 4], True, 4, 1.0),
    ([1, 2, 3, 4, 7, 8], True, 4, 1.0),  # tokens past S do not count
    ([1, 2, 9, 4, 5], False, 2, 0.75),
    ([9, 2, 3, 4], False, 0, 0.75),
    ([1, 2], False, 2, 0.5),  # too short
    ([], False, 0, 0.0),
])
def test_score_extraction_tokens(generated, exact, prefix, fraction):
    r = score_extraction([1, 2, 3, 4], generated, "kitten", "sitting")
    assert (r["exact"], r["matching_prefix"], r["token_match_fraction"]) == (exact, prefix, fraction)
    assert r["char_distance"] == 3 and r["char_similarity"] == pytest.approx(1 - 3 / 7)


def test_summarize_extraction_and_histogram(tmp_path):
    rows = [{"exact": e, "char_distance": d, "char_similarity": 1 - d / 10, "matching_prefix": m,
             "token_match_fraction": f} for e, d, m, f in [(True, 0, 32, 1.0), (False, 2, 10, 0.5),
                                                            (False, 4, 0, 0.25), (False, 10, 1, 0.25)]]
    s = summarize_extraction(rows)
    assert (s["n"], s["exact_k"], s["exact_rate"]) == (4, 1, 0.25)
    assert (s["exact_ci_low"], s["exact_ci_high"]) == pytest.approx((0.0456, 0.6994), abs=1e-3)
    assert s["char_distance_mean"] == 4.0 and s["char_distance_q50"] == 3.0
    assert (s["char_distance_q25"], s["char_distance_q75"]) == (1.5, 5.5)
    assert s["mean_matching_prefix"] == 10.75 and s["mean_token_match_fraction"] == 0.5
    empty = summarize_extraction([])
    assert empty["n"] == 0 and math.isnan(empty["exact_rate"]) and math.isnan(empty["char_distance_q50"])
    assert _png(distance_histogram(rows, tmp_path / "d.png", "edit distance"))


# ---------------------------------------------------------------------------------------------- membership

LOGPROBS = -np.arange(1.0, 11.0)  # -1 .. -10
MU = np.full(10, -1.0)
SIGMA = np.r_[np.ones(8), 3.0, 3.0]  # z = (lp - mu)/sigma = 0, -1, ..., -7, -8/3, -3


def _ts(logprobs=LOGPROBS, mu=None, sigma=None, text="some text"):
    return TokenScores(text=text, token_ids=list(range(len(logprobs))), logprobs=np.asarray(logprobs, float),
                       mu=mu, sigma=sigma)


@pytest.mark.parametrize("k,expected", [(10, -10.0), (20, -9.5), (25, -9.5), (50, -8.0), (5, -10.0), (100, -5.5)])
def test_min_k(k, expected):
    assert min_k(_ts(), k) == pytest.approx(expected)  # mean of the lowest max(1, floor(10 k / 100)) logprobs


@pytest.mark.parametrize("k,expected", [(10, -7.0), (20, -6.5), (30, -6.0), (50, -5.0)])
def test_min_k_plus_plus(k, expected):
    # the z-scores reorder the tokens: -9 and -10 (sigma 3) are no longer the lowest
    assert min_k_plus_plus(_ts(mu=MU, sigma=SIGMA), k) == pytest.approx(expected)


def test_loss_zlib_and_scores_dict():
    ts = _ts(text="abc")
    assert loss(ts) == -5.5  # minus the mean NLL: higher = member
    assert zlib_bytes("abc") == len(zlib.compress(b"abc")) == 11 and zlib_bytes("") == 8
    assert zlib_ratio(ts) == pytest.approx(-5.5 / 11)
    # same loss, text harder to compress -> larger zlib length -> score closer to 0 (higher: more member-like)
    assert zlib_ratio(_ts(text="the quick brown fox jumps")) > zlib_ratio(_ts(text="aaaaaaaaaaaaaaaaaaaaaaaaa"))
    s = scores(ts)
    assert list(s) == ["loss", "zlib", "min_k_10", "min_k_20", "min_k_50", "min_k_pp_10", "min_k_pp_20",
                       "min_k_pp_50"]
    assert s["min_k_20"] == -9.5 and s["min_k_pp_20"] is None  # no mu/sigma: unavailable, not approximated
    assert scores(_ts(mu=MU, sigma=SIGMA), ks=(20,))["min_k_pp_20"] == pytest.approx(-6.5)
    assert all(v is None for v in scores(_ts(logprobs=[])).values())


@pytest.mark.parametrize("members,nonmembers,expected", [
    ([3, 4, 5], [0, 1, 2], 1.0),
    ([0, 1, 2], [3, 4, 5], 0.0),
    ([2, 4], [1, 3], 0.75),  # 3 of 4 pairs ordered
    ([1, 2], [1, 0], 0.875),  # a tie counts one half
    (list(range(50)), list(range(50)), 0.5),  # identical distributions
])
def test_auroc_hand_computed(members, nonmembers, expected):
    a = auroc(members, nonmembers, n_boot=500)
    assert a.auroc == pytest.approx(expected) == roc_auc_score([1] * len(members) + [0] * len(nonmembers),
                                                               members + nonmembers)
    assert a.ci_low <= a.auroc <= a.ci_high and a.reason is None
    assert (a.n_members, a.n_nonmembers, a.n_missing) == (len(members), len(nonmembers), 0)
    if expected == 1.0:
        assert a.ci_low == a.ci_high == 1.0 and a.tpr_at_1pct_fpr == a.tpr_at_5pct_fpr == 1.0
    if expected == 0.5:
        assert a.ci_low < 0.45 and a.ci_high > 0.55


def test_auroc_same_distribution_interval_covers_half():
    rng = np.random.default_rng(3)
    a = auroc(rng.normal(size=300).tolist(), rng.normal(size=300).tolist(), seed=1)
    assert abs(a.auroc - 0.5) < 0.06 and a.ci_low < 0.5 < a.ci_high
    shifted = auroc(rng.normal(1.0, 1, 300).tolist(), rng.normal(size=300).tolist(), seed=1)
    assert shifted.ci_low > 0.65 and 0 < shifted.tpr_at_1pct_fpr < shifted.tpr_at_5pct_fpr < 1
    assert auroc([1, 3, 2, 5], [0, 2, 4], seed=4) == auroc([1, 3, 2, 5], [0, 2, 4], seed=4)


def test_tpr_at_fpr():
    y, s = np.r_[np.ones(4), np.zeros(4)], np.array([5, 6, 7, 8, 1, 2, 3, 9.0])
    assert tpr_at_fpr(y, s, 0.01) == 0.0  # the top score is a non-member: nothing found at 0 false positives
    assert tpr_at_fpr(y, s, 0.25) == 1.0


def test_tpr_at_a_tenth_of_a_percent_fpr():
    """With 2,000 non-members, 0.1% FPR allows 2 false positives: the members above the third-highest non-member."""
    rng = np.random.default_rng(0)
    others = rng.normal(size=2000)
    top3 = np.sort(others)[-3]
    members = np.r_[np.full(30, top3 + 1.0), np.full(70, top3 - 1.0)]
    a = auroc(members.tolist(), others.tolist(), n_boot=0)
    assert a.tpr_at_01pct_fpr == pytest.approx(0.3) and a.tpr_at_1pct_fpr >= 0.3
    assert auroc([2.0, 0.5], [1.0, 0.0], n_boot=0).tpr_at_01pct_fpr == 0.5  # 0 false positives of 2 allowed


@pytest.mark.parametrize("members,nonmembers,reason,n_missing", [
    ([], [1.0, 2.0], "no member scores (none given)", 0),
    ([1.0], [], "no non-member scores (none given)", 0),
    ([None, None], [1.0, 2.0], "no member scores (all 2 scores are None or not finite)", 2),
    ([1.0, 2.0], [None, float("nan")], "no non-member scores (all 2 scores", 2),
])
def test_auroc_empty_class_gives_nan_with_reason(members, nonmembers, reason, n_missing):
    a = auroc(members, nonmembers)
    assert math.isnan(a.auroc) and math.isnan(a.ci_low) and not a.defined
    assert reason in a.reason and a.n_missing == n_missing and "n/a" in a.text()


def test_auroc_drops_missing_scores():
    a = auroc([3.0, None, 4.0], [1.0, float("nan"), 2.0])
    assert a.auroc == 1.0 and (a.n_members, a.n_nonmembers, a.n_missing) == (2, 2, 2)


def test_evaluate_and_roc_plot(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"id": f"m{i}", "member": True, "loss": float(rng.normal(2)), "min_k_pp_20": None} for i in range(40)]
    rows += [{"id": f"n{i}", "member": False, "loss": float(rng.normal(0)), "min_k_pp_20": None} for i in range(40)]
    out = evaluate(rows, n_boot=200)
    assert [r["score"] for r in out] == ["loss", "min_k_pp_20"]  # 'id' is text, not a score
    assert out[0]["auroc"] > 0.8 and out[0]["n_members"] == 40 and out[0]["reason"] is None
    assert math.isnan(out[1]["auroc"]) and "None" in out[1]["reason"] and out[1]["n_missing"] == 80
    by_score = {name: ([r[name] for r in rows if r["member"]], [r[name] for r in rows if not r["member"]])
                for name in ("loss", "min_k_pp_20")}
    assert _png(roc_plot(by_score, tmp_path / "roc.png", "members vs non-members"))


# ---------------------------------------------------------------------------------------------- compare runs

def _groups(effect: float, binary: bool, n_items: int = 300, seed: int = 0):
    """3 runs per group; item difficulty varies a lot, runs a little; group b is shifted by `effect`."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.1, 0.7, n_items)

    def run(shift):
        p = np.clip(base + shift + rng.normal(0, 0.01), 0, 1)
        v = rng.random(n_items) < p if binary else p + rng.normal(0, 0.05, n_items)
        return {f"item{i}": float(x) for i, x in enumerate(v)}

    return ({f"a{s}": run(0.0) for s in range(3)}, {f"b{s}": run(effect) for s in range(3)})


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("effect", [0.0, 0.15])
def test_compare_recovers_planted_difference(effect, binary):
    a, b = _groups(effect, binary)
    c = compare(a, b, n_boot=1000, seed=1, label_a="adamw", label_b="muon")
    assert c.diff == pytest.approx(effect, abs=0.07)
    assert c.ci_low <= c.diff <= c.ci_high and c.welch_ci_low <= c.diff <= c.welch_ci_high
    assert c.excludes_zero() == c.welch_excludes_zero() == (effect > 0)
    assert c.ci_low < effect < c.ci_high and c.welch_ci_low < effect < c.welch_ci_high
    assert (c.welch_p < 0.01) == (effect > 0)
    assert c.mean_a_ci_low <= c.mean_a <= c.mean_a_ci_high and c.mean_b_ci_low <= c.mean_b <= c.mean_b_ci_high
    assert (c.n_runs_a, c.n_runs_b, c.n_items_a, c.n_items_b, c.paired) == (3, 3, 300, 300, True)
    assert [r["group"] for r in c.per_run] == ["adamw"] * 3 + ["muon"] * 3
    assert np.mean([r["mean"] for r in c.per_run[3:]]) == pytest.approx(c.mean_b)


def test_pairing_items_cancels_item_difficulty():
    a, b = _groups(0.05, binary=False)
    paired, unpaired = compare(a, b, seed=2), compare(a, b, seed=2, paired_items=False)
    assert paired.diff == pytest.approx(unpaired.diff)
    assert paired.ci_high - paired.ci_low < 0.5 * (unpaired.ci_high - unpaired.ci_low)
    assert paired.excludes_zero()


def test_compare_hand_computed_means_and_item_alignment():
    a = {"r1": {"x": 1, "y": 0}, "r2": {"x": 1, "y": 1, "w": None}}
    b = {"r3": {"x": 0, "y": 0, "z": 1}}
    c = compare(a, b, n_boot=100)
    assert (c.mean_a, c.mean_b, c.diff, c.n_items_a) == (0.75, 0.0, -0.75, 2)  # only x and y are in every run
    u = compare(a, b, n_boot=100, paired_items=False)
    assert (u.mean_a, u.mean_b, u.n_items_b) == (0.75, pytest.approx(1 / 3), 3)
    assert [r["mean"] for r in c.per_run] == [0.5, 1.0, 0.0]
    assert math.isnan(c.welch_p) and math.isnan(c.welch_ci_low)  # one run in b: no t-test
    # Welch on run means a = (1, 2, 3), b = (2, 3, 5): t = 4/3 / sqrt(1/3 + 7/9) = 1.2649, df = 3.448
    w = compare({r: {"x": v} for r, v in zip("abc", (1, 2, 3))}, {r: {"x": v} for r, v in zip("def", (2, 3, 5))})
    assert w.diff == pytest.approx(4 / 3) and w.welch_p == pytest.approx(0.28463, abs=1e-4)
    assert w.welch_ci_low < 0 < w.welch_ci_high
    with pytest.raises(ValueError, match="no runs"):
        compare({}, b)
    with pytest.raises(ValueError, match="no item"):
        compare({"r1": {"x": 1}}, {"r2": {"y": 1}})


def test_matched_checkpoints():
    curves = {"muon1": [(100, 3.0), (200, 2.5), (300, 2.2)],
              "muon2": [(100, 3.1), (200, 2.7), (300, 2.4), (400, float("nan"))],
              "adamw1": [(300, 2.45), (100, 3.2), (200, 2.8)]}
    m = matched_checkpoints(curves)
    assert m.target_loss == 2.45  # the worst of the best losses (2.2, 2.4, 2.45): every run reached it
    assert m.steps == {"muon1": 200, "muon2": 300, "adamw1": 300}
    assert m.losses == {"muon1": 2.5, "muon2": 2.4, "adamw1": 2.45}
    assert m.rel_gaps["muon1"] == pytest.approx(0.05 / 2.45) and m.within_tolerance
    assert not matched_checkpoints(curves, tolerance=0.01).within_tolerance
    tie = matched_checkpoints({"a": [(1, 3.0), (2, 2.0)], "b": [(1, 2.5)]})
    assert tie.target_loss == 2.5 and tie.steps == {"a": 1, "b": 1}  # equally close: the earlier step
    assert tie.rel_gaps["a"] == 0.2 and not tie.within_tolerance
    with pytest.raises(ValueError, match="no finite"):
        matched_checkpoints({"a": [(1, float("nan"))]})


def test_comparison_plot(tmp_path, figures):
    comps = {"exact": compare(*_groups(0.1, True, 60), n_boot=200), "similarity": compare(*_groups(0.0, False, 60),
                                                                                           n_boot=200)}
    path = comparison_plot(comps, tmp_path / "cmp.png", "muon vs adamw at matched loss")
    assert png_size(path) == (640, 360)  # two panels in one row: (2.9 x 2 + 0.6) x 3.6 inches at 100 dpi
    [fig] = figures
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert fig._suptitle.get_text() == "muon vs adamw at matched loss"
    for ax, (metric, c) in zip(panels, comps.items(), strict=True):
        assert ax.get_title().splitlines() == [
            metric, f"diff {c.diff:+.3f} boot [{c.ci_low:+.3f}, {c.ci_high:+.3f}]",
            f"Welch [{c.welch_ci_low:+.3f}, {c.welch_ci_high:+.3f}]"]
        assert [b.get_height() for b in ax.patches] == pytest.approx([c.mean_a, c.mean_b])
        assert [t.get_text() for t in ax.get_xticklabels()] == [c.label_a, c.label_b]


def test_blind_baseline_sees_a_distribution_shift_and_nothing_else():
    """The text-only baseline (never queries a model): near 0.5 when members and non-members come from one
    distribution, near 1 when the members are about something else."""
    from cp_assets.lib.memorization.membership import blind_scores

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    same = [" ".join(rng.choice(vocab, 40)) for _ in range(200)]
    member = [i % 2 == 0 for i in range(200)]
    s = blind_scores(same, member)
    a = auroc([x for x, m in zip(s, member) if m], [x for x, m in zip(s, member) if not m], n_boot=200)
    assert a.ci_low < 0.5 < a.ci_high
    shifted = [t + (" ocean tide harbor" if m else " desert dune sand") for t, m in zip(same, member)]
    s = blind_scores(shifted, member)
    assert auroc([x for x, m in zip(s, member) if m], [x for x, m in zip(s, member) if not m], n_boot=0).auroc > 0.95
    assert blind_scores(["a b", "c d"], [True, False]) == [None, None]  # too few of a class to cross-validate


def test_dataset_inference_finds_a_trained_set_and_not_a_random_half():
    """Per passage the member shift is small (AUROC ~0.64), over 150 passages the set-level test finds it; the control
    (half the non-members against the other half) does not."""
    from cp_assets.lib.memorization import membership as mia

    rng = np.random.default_rng(5)
    rows = [{"member": m, "loss": float(rng.normal(-0.5 if m else 0.0)), "zlib": float(rng.normal()),
             "min_k_pp_20": None} for m in [True] * 150 + [False] * 150]
    got = {r[1]: dict(zip(mia.DATASET_INFERENCE_COLUMNS, r)) for r in
           mia.dataset_inference("m", rows, ["loss", "zlib", "min_k_pp_20"])}
    trained, control = got["members_vs_heldout"], got["control_heldout_halves"]
    assert trained["features"] == "loss,zlib"  # a score no passage has is left out
    assert trained["p_value"] < 0.01 and control["p_value"] > 0.05
    assert (trained["n_suspect"], trained["n_validation"], control["n_suspect"]) == (150, 150, 75)
    few = mia.dataset_test(rows[:5], rows[-5:], ["loss"])
    assert few["p_value"] is None and "8+" in few["reason"]
