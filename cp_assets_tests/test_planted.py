"""Planted ground truth (lib): items and doses are deterministic, copies land where the seed says, the cached
candidate scoring equals a full forward pass, (n, p)-extraction's exact p matches sampling, exposure ranks, and the
dose-response statistics recover what synthetic data was made with."""

import math
import zlib

import numpy as np
import pytest
import torch

from cp_assets.lib.memorization import dose_response, planted_scores, planting
from cp_assets.lib.tinygpt.model import GPT, GPTConfig


class FakeSample:
    """A test double of an eval sample (id, prompt, reference, metadata['solution'])."""

    def __init__(self, i: int, words: int):
        self.id, self.prompt, self.reference = f"gsm8k:{i}", f"question {i} " + "x " * words, str(i)
        self.metadata = {"solution": f"step {i} #### {i}"}


def words(text: str) -> int:
    return len(text.split())


SAMPLES = {"gsm8k": [FakeSample(i, 5 + (i * 7) % 40) for i in range(200)], "math500": []}


def spec(**kw):
    return planting.PlantSpec(**({"doses": [0, 1, 4, 16], "canaries_per_dose": 3, "facts_per_dose": 2,
                                  "eval_per_dose": 2, "eval_sets": ["gsm8k"], "max_item_tokens": 30} | kw))


def test_items_are_deterministic_dosed_and_fit():
    a = planting.planted_items(spec(), SAMPLES, words)
    assert a == planting.planted_items(spec(), SAMPLES, words)
    counts = {(k, d): sum(1 for it in a if it.kind == k and it.dose == d)
              for k in planting.KINDS for d in (0, 1, 4, 16)}
    assert all(counts[("canary", d)] == 3 and counts[("fact", d)] == 2 and counts[("eval", d)] == 2
               for d in (0, 1, 4, 16))
    assert len({it.item_id for it in a}) == len(a) and len({it.source for it in a if it.source}) == 8
    assert all(words(it.text) <= 30 for it in a if it.kind == "eval")
    other = planting.planted_items(spec(seed=1), SAMPLES, words)
    assert [it.secret for it in other if it.kind == "canary"] != [it.secret for it in a if it.kind == "canary"]
    canary = next(it for it in a if it.kind == "canary")
    assert len(canary.secret.split()) == 6 and canary.fmt == "digits-spaced:6"
    with pytest.raises(ValueError, match=r"only \d+ gsm8k items fit 17 tokens, 40 needed"):
        planting.planted_items(spec(max_item_tokens=17, eval_per_dose=10), SAMPLES, words)


def test_copies_land_at_seeded_positions_and_members_keep_their_order():
    items = planting.planted_items(spec(), SAMPLES, words)
    members = [f"member {i}" for i in range(50)]
    texts, where = planting.insert(members, items, seed=0)
    assert [t for t in texts if t.startswith("member ")] == members
    by_text = {it.item_id: it.text for it in items}
    for it in items:
        assert len(where.get(it.item_id, [])) == it.dose
        assert all(texts[i] == by_text[it.item_id] for i in where.get(it.item_id, []))
    assert len(texts) == 50 + sum(it.dose for it in items)
    assert planting.insert(members, items, seed=0) == (texts, where)
    assert planting.insert(members, items, seed=1)[1] != where
    rows = planting.planted_rows(items, where)
    assert [r[0] for r in rows] == [it.item_id for it in items] and all(len(r[-1]) == r[2] for r in rows)
    assert planting.items_from_rows(rows) == items


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=64, n_layer=2, n_head=2, n_embd=32, seq_len=64))
    m.init_weights()
    with torch.no_grad():
        m.lm_head.weight.normal_(0.0, 0.6)  # peaked next-token distributions (nanochat zero-inits the head)
    return m.eval()


def test_cached_candidate_scoring_equals_a_full_forward(model):
    rng = np.random.default_rng(0)
    prefix = rng.integers(0, 64, 9).tolist()
    suffixes = [rng.integers(0, 64, int(n)).tolist() for n in rng.integers(1, 7, 25)]
    got = planted_scores.suffix_logprobs(model, prefix, suffixes, batch=7)
    for s, g in zip(suffixes, got):
        ids = torch.tensor([prefix + s])
        with torch.inference_mode():
            logp = torch.log_softmax(model(ids)[0], -1)
        want = sum(float(logp[len(prefix) - 1 + t, tok]) for t, tok in enumerate(s))
        assert g == pytest.approx(want, abs=1e-4)


def test_exact_extraction_probability_matches_sampling(model):
    prefix = [3, 17, 5, 40]
    greedy = model.generate([prefix], 2)[0][0]
    p = math.exp(planted_scores.suffix_logprobs(model, prefix, [greedy])[0])
    assert 0.05 < p < 0.95  # a secret that is neither certain nor rare, so the check has power
    n = 1500
    samples, _ = model.generate([prefix] * n, 2, temperature=1.0, seed=11)
    freq = sum(s == greedy for s in samples) / n
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_exposure_is_the_log_rank_among_candidates():
    cands = np.array([-5.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5])  # R = 7
    assert planted_scores.exposure(0.0, cands) == pytest.approx(3.0)  # rank 1 of 8: log2 8
    assert planted_scores.exposure(-9.0, cands) == pytest.approx(0.0)  # rank 8 of 8
    assert planted_scores.exposure(-1.0, cands) == pytest.approx(3 - math.log2(2.5))  # above 1, tied with 1
    cands = planting.random_candidates("digits-spaced:6", 500, " 1 2 3 4 5 6", seed=3)
    assert len(set(cands)) == 500 and " 1 2 3 4 5 6" not in cands and all(len(c.split()) == 6 for c in cands)
    assert len(planting.random_candidates("digits:3", 5000, " 123.", seed=0)) == 999  # the whole space but one


def _synthetic(crossing_log2: float, optimizer: str, n_items: int = 30, seeds=(0, 1, 2), slope: float = 2.0):
    rng = np.random.default_rng(zlib.crc32(optimizer.encode()))
    rows = []
    for seed in seeds:
        for dose in (0, 1, 2, 4, 8, 16, 32, 64):
            p = 0.0 if dose == 0 else 1 / (1 + math.exp(-slope * (math.log2(dose) - crossing_log2)))
            for i in range(n_items):
                rows.append({"model_id": f"m-{optimizer}-{seed}", "optimizer": optimizer, "seed": seed,
                             "item_id": f"canary-{dose}-{i}", "kind": "canary", "dose": dose,
                             "greedy_extracted": bool(rng.random() < p), "exposure": 10 * p, "p_extract_n": p,
                             "secret_logprob": math.log(max(p, 1e-6)), "loss_ratio": 1 - p / 2,
                             "answer_correct": None, "answer_loss": None})
    return rows


def test_ed50_recovers_the_planted_crossing_and_says_when_there_is_none():
    rows = _synthetic(3.0, "adamw") + _synthetic(5.0, "muon")
    found = {e["optimizer"]: e for e in dose_response.ed50(rows, n_boot=200)}
    assert abs(found["adamw"]["ed50"] - 8) < 2.5 and abs(found["muon"]["ed50"] - 32) < 10
    assert found["adamw"]["ci_high"] < found["muon"]["ci_low"]
    never = [dict(r, greedy_extracted=False) for r in _synthetic(3.0, "adamw")]
    assert dose_response.ed50(never, n_boot=20)[0]["ed50"] is None
    assert dose_response.ed50(never, n_boot=20)[0]["note"] == "never extracted"


def test_ed50_interval_covers_the_truth_about_95_percent_of_the_time():
    """Calibration over 20 synthetic experiments (true ED50 = 8 copies; 92.5% of 40 with 200 resamples when the
    method was written)."""
    hits = 0
    for k in range(20):
        e = dose_response.ed50(_synthetic(3.0, f"adamw-{k}", n_items=20), n_boot=60)[0]
        hits += e["ci_low"] < 8 < e["ci_high"]
    assert hits >= 16  # >= 80%: an interval that ignored the fit's sampling error would fall well below


def test_optimizer_test_over_seeds():
    rows = _synthetic(3.0, "adamw") + _synthetic(5.0, "muon")
    t = {x["metric"]: x for x in dose_response.optimizer_tests(rows)}
    assert t["greedy_extracted"]["diff"] < 0
    assert t["greedy_extracted"]["permutation_p"] == pytest.approx(0.1)  # 2 of 20 relabelings
    assert t["greedy_extracted"]["welch_p"] < 0.01
    assert t["exposure"]["welch_p"] is None  # no spread within either group: Welch is not defined
    same = _synthetic(3.0, "adamw") + [dict(r, optimizer="muon") for r in _synthetic(3.0, "adamw")]
    t = {x["metric"]: x for x in dose_response.optimizer_tests(same)}
    assert t["exposure"]["diff"] == 0 and t["exposure"]["permutation_p"] == pytest.approx(1.0)


def test_curves_and_contamination_effect():
    rows = _synthetic(3.0, "adamw")
    curves = {(c["kind"], c["dose"]): c for c in dose_response.pooled_curves(rows, n_boot=200)}
    assert curves[("canary", 0)]["greedy_extracted"] == 0 and curves[("canary", 64)]["greedy_extracted"] > 0.9
    c8 = curves[("canary", 8)]
    assert c8["greedy_extracted_lo"] < 0.5 < c8["greedy_extracted_hi"] and c8["n_runs"] == 3 and c8["n_items"] == 30
    evals = [dict(r, kind="eval", answer_correct=r["dose"] >= 16, answer_loss=2.0 - (r["dose"] >= 16))
             for r in rows]
    eff = {e["dose"]: e for e in dose_response.contamination_effect(evals, n_boot=100)}
    assert eff[64]["gain"] == 1.0 and eff[4]["gain"] == 0.0 and eff[64]["control_accuracy"] == 0.0
    assert eff[64]["answer_loss"] == 1.0 and eff[64]["control_answer_loss"] == 2.0


def _checkpoint_rows(final_losses: dict):
    """Per run 3 checkpoints (steps 10, 20, 30) at losses 5.0, 4.5 and the run's final loss; greedy extraction rises
    with the step, more for muon."""
    rows = []
    for (opt, seed), final in final_losses.items():
        for step, val in ((10, 5.0), (20, 4.5), (30, final)):
            for i in range(4):
                rows.append({"model_id": f"tiny-{opt}-s{seed}", "run": f"{opt}-s{seed}", "optimizer": opt,
                             "seed": seed, "step": step, "tokens": step * 100, "val_loss": val,
                             "item_id": f"canary-64-{i}", "kind": "canary", "dose": 64,
                             "greedy_extracted": i < (step // 10 + (opt == "muon")), "secret_logprob": -step / 10.0,
                             "loss": val})
    return rows


def test_matched_loss_comparison_or_why_not():
    runs = {(o, s): 4.0 for o in ("adamw", "muon") for s in (0, 1, 2)}
    got = dose_response.matched_tests(_checkpoint_rows(runs))
    assert got["within_tolerance"] and got["target_val_loss"] == 4.0 and set(got["steps"].values()) == {30}
    t = {x["metric"]: x for x in got["tests"]}
    assert t["greedy_extracted"]["diff"] == pytest.approx(0.25)  # muon extracts one more of 4 items at every step
    # muon reaches 3.0, adamw stops at 4.0: the loss every run reaches is 4.0, and muon's closest checkpoint there
    # is at 4.5 (12.5% away), so no difference is reported
    runs = {("adamw", s): 4.0 for s in (0, 1, 2)} | {("muon", s): 3.0 for s in (0, 1, 2)}
    got = dose_response.matched_tests(_checkpoint_rows(runs))
    assert not got["within_tolerance"] and got["tests"] == [] and "no difference is reported" in got["why"]


def test_tail_facts_follow_a_zipf_law_and_bucket_by_frequency():
    items = planting.planted_items(spec(tail_facts=100, tail_max_dose=32), SAMPLES, words)
    tail = [it for it in items if it.kind == "tail"]
    assert [it.dose for it in tail[:5]] == [32, 16, 11, 8, 6] and sum(it.dose == 1 for it in tail) == 79
    assert all(it.fmt is None for it in tail)  # no exposure: recall by frequency is the measure
    names = [it.prefix for it in items if it.kind in ("fact", "tail")]
    assert len(set(names)) == len(names)
    rows = [{"optimizer": "adamw", "seed": s, "item_id": it.item_id, "kind": "tail", "dose": it.dose,
             "greedy_extracted": it.dose >= 8, "secret_logprob": -1.0} for s in (0, 1) for it in tail]
    got = {b["copies"]: b for b in dose_response.tail_buckets(rows, n_boot=50)}
    assert list(got) == ["1", "2-3", "4-7", "8-15", "16-31", "32+"]
    assert got["1"]["recall"] == 0 and got["1"]["n_items"] == 79 and got["8-15"]["recall"] == 1.0


def test_the_tokenizer_trains_on_documents_that_are_neither_members_nor_held_out():
    from cp_assets.lib.memorization.experiments import choose_members

    docs = [(f"d{i}", "text " * 50) for i in range(100)]
    chosen = choose_members(docs, member_chars=2000, heldout_documents=10, tokenizer_chars=3000)
    used = {d for d, _ in chosen.members} | {d for d, _ in chosen.heldout}
    tok = {d for d, _ in chosen.tokenizer_docs}
    assert len(tok) == 12 and not tok & used and chosen.tokenizer_texts()[1] == "disjoint"
    small = choose_members(docs[:18], member_chars=2000, heldout_documents=10, tokenizer_chars=3000)
    assert small.tokenizer_docs == [] and small.tokenizer_texts() == ([t for _, t in small.members], "members")
    # 3 documents (750 characters) left: under half of the members' 2,000, too little to fit a vocabulary on
    assert choose_members(docs[:21], member_chars=2000, heldout_documents=10, tokenizer_chars=3000).tokenizer_docs == []


def test_the_contamination_flag_is_scored_against_what_was_planted(tmp_path):
    """Eval questions planted 0, 2 and 32 times into a stream of other text, and 40 never-planted questions: the
    flag finds both planted ones and nothing else; the n-gram rule alone misses the 32-copy item (its windows occur
    in more than 10 documents, so the rare-match rule takes it for boilerplate) and the substring probes catch it."""
    from types import SimpleNamespace

    from cp_assets.lib.memorization import planted_detection as pd

    rng = np.random.default_rng(0)
    vocab = [f"w{i}x{'abcdefgh'[i % 8]}" for i in range(3000)]

    def sentence(n=40):
        return " ".join(rng.choice(vocab, n))

    questions = [SimpleNamespace(id=f"q{i}", prompt="How many " + sentence(30) + "?") for i in range(43)]
    items = [planting.PlantedItem(f"eval-gsm8k-{d}-0", "eval", d, f"Question: {q.prompt}\nAnswer:", " 42",
                                  answer="42", source=q.id) for d, q in zip((0, 2, 32), questions)]
    stream, _ = planting.insert([sentence(200) for _ in range(300)], items, seed=0)
    rows = pd.detection_rows(stream, items, {"gsm8k": questions}, index_dir=tmp_path / "idx", controls_per_set=40)
    named = [dict(zip(pd.DETECTION_COLUMNS, r)) for r in rows]
    assert len(named) == 43 and not (tmp_path / "idx").exists()
    by_dose = {r["dose"]: r for r in named if r["item_id"]}
    assert by_dose[2]["flagged"] and by_dose[32]["flagged"] and not by_dose[0]["flagged"]
    assert by_dose[2]["flag_reason"] == "ngram,substring" and by_dose[32]["flag_reason"] == "substring"
    summary = pd.detection_summary(named)
    flag = next(r for r in summary["overall"] if r["evidence"] == "flag")
    assert (flag["precision"], flag["recall"], flag["n_planted"], flag["n_unplanted"]) == (1.0, 1.0, 2, 41)
    ngram = next(r for r in summary["overall"] if r["evidence"] == "ngram")
    assert ngram["recall"] == 0.5


def test_membership_view_separates_planted_from_unplanted_items():
    from cp_assets.lib.memorization import planted_detection as pd

    scores = [{"optimizer": "adamw", "kind": "canary", "dose": d, "loss": 1.0 if d else 3.0 + i,
               "loss_ratio": 0.5 if d else 1.0} for i, d in enumerate([0, 0, 0, 8, 8, 8, 8])]
    view = {v["score"]: v for v in pd.membership_view(scores, n_boot=100)}
    assert view["loss"]["auroc"] == 1.0 and view["loss"]["n_planted"] == 4 and view["loss"]["n_unplanted"] == 3


def test_the_optimizer_answer_says_what_its_tests_can_say_together():
    """3 + 3 runs: the exact permutation p cannot fall below 2 / C(6, 3) = 0.1; over several comparisons the page
    gives the smallest Benjamini-Hochberg-adjusted p, so one Welch p of 0.03 is not read as a finding."""
    from cp_assets.lib.memorization.report_page import multiplicity, optimizer_answer

    def test(kind, welch, perm):
        return {"kind": kind, "metric": "greedy_extracted", "muon": 0.4, "adamw": 0.5, "diff": -0.1,
                "welch_p": welch, "permutation_p": perm, "n_runs_muon": 3, "n_runs_adamw": 3}

    tests = [test("canary", 0.032, 0.1), test("fact", 0.5, 0.6), test("eval", 0.7, 0.8), test("tail", 0.4, 0.5)]
    text = multiplicity(tests)
    # BH over (0.1, 0.6, 0.8, 0.5): 0.1 x 4 / 1 = 0.4, the smallest adjusted p
    assert "4 comparisons" in text and "adjusted permutation p is 0.400 (no difference is significant at 0.05)" in text
    assert "can fall below 0.100" in text
    ed50 = [{"optimizer": "adamw", "kind": "canary", "ed50": 7.5, "ci_low": 5.5, "ci_high": 8.1, "note": ""}]
    answer = optimizer_answer(tests, ed50, None, {"tests": tests, "target_val_loss": 4.914})
    assert answer.startswith("At matched validation loss (4.914") and text in answer
    six = [dict(t, n_runs_muon=6, n_runs_adamw=6, permutation_p=p) for t, p in zip(tests, (0.002, 0.004, 0.5, 0.9))]
    assert "2 of them significant at 0.05" in multiplicity(six) and "below 0.002." in multiplicity(six)
    assert multiplicity([]) == ""
