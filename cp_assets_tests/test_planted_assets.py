"""Planted ground truth through Dagster on the test split `tiny` (the `test` size, conftest's training.yaml plus a
`plant:` section): reference_model trains without the planted items, tiny_models trains with them and records
`planted_items`, canary_memorization scores the model (idempotently), and memorization_report writes the page."""

import dagster as dg
import pytest

from cp_assets_tests.conftest import TRAINING, metadata

PLANT = """
plant: {doses: [0, 64], canaries_per_dose: 3, facts_per_dose: 3, eval_per_dose: 0, exposure_candidates: 300,
        tail_facts: 10}
"""


def defs_assets():
    from cp_assets.definitions import defs

    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]


def run(selection, key, resources, instance):
    result = dg.materialize(defs_assets(), selection=selection, partition_key=key, resources=resources,
                            instance=instance)
    assert result.success
    return result


@pytest.fixture(scope="module")
def planted(materialized, resources, tmp_path_factory):
    training = tmp_path_factory.mktemp("plant") / "training.yaml"
    # conftest's experiment, trained for 8 epochs instead of 2: 64 copies x 2 epochs barely move the test size
    training.write_text(TRAINING.read_text().replace("epochs: 2,", "epochs: 8, lr_sweep: [2.0],") + PLANT)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPROX_TRAINING", str(training))
        ref = run(["reference_model"], None, resources, instance)
        base = run(["tiny_models"], "adamw-s0", resources, instance)
        scored = [run(["canary_memorization"], "adamw-s0", resources, instance) for _ in range(2)]
        lira = run(["lira_references"], None, resources, instance)
        sweep = run(["lr_sweep"], None, resources, instance)
        member = run(["membership"], "tiny-adamw-s0", resources, instance)
        report = run(["memorization_report", "planted_dose_response"], None, resources, instance)
        yield ref, base, scored, report, lira, sweep, member


def rows(sql):
    from cp_assets.resources.results import ResultsStore

    with ResultsStore().db().connect(read_only=True) as con:
        return con.execute(sql).fetchall()


def test_items_are_planted_at_their_dose_and_the_reference_saw_none(planted):
    ref, base, *_ = planted
    m = metadata(base, "tiny_models")
    assert m["planted_items"] == 22 and m["planted_copies"] == 6 * 64 + 187  # tail: 64 + 32 + 21 + ... + 6
    assert metadata(ref, "reference_model")["model_id"] == "tiny-reference"
    items = rows("SELECT kind, dose, len(doc_positions) FROM planted_items WHERE kind <> 'tail' ORDER BY 1, 2")
    assert sorted(set(items)) == [("canary", 0, 0), ("canary", 64, 64), ("fact", 0, 0), ("fact", 64, 64)]
    stages = dict(rows("SELECT model_id, stage FROM training_runs WHERE model_id IN ('tiny-reference', "
                       "'tiny-adamw-s0')"))
    assert stages == {"tiny-reference": "reference", "tiny-adamw-s0": "base"}
    # the planted model trained on more tokens than the reference (the copies), the reference on the members only
    tokens = dict(rows("SELECT model_id, tokens FROM training_runs WHERE model_id IN ('tiny-reference', "
                       "'tiny-adamw-s0')"))
    assert tokens["tiny-adamw-s0"] > tokens["tiny-reference"]


def test_dosed_items_are_memorized_and_controls_are_not(planted):
    got = {(k, d): (n, g, e, r) for k, d, n, g, e, r in rows(
        "SELECT kind, dose, n, greedy_extraction, exposure, loss_ratio FROM canary_memorization "
        "WHERE model_id = 'tiny-adamw-s0' AND kind <> 'tail'")}
    assert set(got) == {("canary", 0), ("canary", 64), ("fact", 0), ("fact", 64)}
    for kind in ("canary", "fact"):
        n0, g0, e0, r0 = got[(kind, 0)]
        n64, g64, e64, r64 = got[(kind, 64)]
        assert n0 == n64 == 3 and g0 == 0.0
        assert e64 > e0 + 3, got  # bits: the planted secrets rank far above their random same-format candidates
        assert r64 < r0  # the planted text's loss fell against the reference model's; the controls' did not
    assert got[("fact", 64)][1] + got[("canary", 64)][1] >= 1.0, got  # half of the 64-copy secrets extracted


def test_rescoring_replaces_the_run_rows(planted):
    _, _, scored, *_ = planted
    assert [metadata(r, "canary_memorization")["items"] for r in scored] == [22, 22]
    assert rows("SELECT count(*) FROM planted_scores WHERE model_id = 'tiny-adamw-s0'") == [(22,)]
    # canary and fact at doses 0 and 64, the 10 tail facts at their 10 distinct doses
    assert rows("SELECT count(*) FROM canary_memorization WHERE model_id = 'tiny-adamw-s0'") == [(14,)]
    assert rows("SELECT count(exposure) FROM planted_scores WHERE kind = 'tail'") == [(0,)]
    # every item at each intermediate checkpoint and the final model, with the checkpoint's validation loss
    (steps, n, losses), = rows("SELECT count(DISTINCT step), count(*), count(val_loss) FROM planted_checkpoint_scores "
                               "WHERE model_id = 'tiny-adamw-s0'")
    assert steps >= 3 and n == 22 * steps and losses == n


def test_report_page_answers_with_intervals(planted):
    from pathlib import Path

    m = metadata(planted[3], "memorization_report")
    page = Path(m["report_page"]).read_text()
    assert "Dose at which greedy extraction crosses 50%" in page and "data:image/png;base64" in page
    assert "Contamination inflates scores" in page and "Muon recalls planted text verbatim less" in page
    ed50 = {(e["optimizer"], e["kind"]): e for e in m["ed50"]}
    assert ("adamw", "canary") in ed50 and ("adamw", "fact") in ed50
    assert "Tail-end memory" in page and sum(b["n_items"] for b in m["tail_recall"]) == 10


def test_sql_dose_response(planted):
    got = rows("SELECT kind, dose, seeds, items, greedy_extraction FROM planted_dose_response "
               "WHERE optimizer = 'adamw' AND kind <> 'tail' ORDER BY 1, 2")
    assert [(k, d, s, i) for k, d, s, i, _ in got] == [("canary", 0, 1, 3), ("canary", 64, 1, 3), ("fact", 0, 1, 3),
                                                       ("fact", 64, 1, 3)]
    assert got[0][4] == 0.0 and got[2][4] == 0.0


def test_lira_references_train_on_disjoint_halves_and_score_every_passage(planted):
    import json

    from cp_assets.lib.memorization import experiments as ex

    info = json.loads((ex.lira_dir() / "halves.json").read_text())
    halves = info["halves"]
    members = json.loads((ex.run_dir("adamw-s0", "base") / "members.json").read_text())
    pool = set(members["members"]) | set(members["heldout"])
    assert set(halves) <= pool and {"a", "b"} == set(halves.values())  # each passage's document in one half
    # the references trained on exactly the passages the membership run scored
    scored = {t for t, in rows("SELECT DISTINCT text_id FROM membership_scores WHERE model_id = 'tiny-adamw-s0'")}
    assert set(info["passage_ids"].values()) == scored
    docs = dict(rows("SELECT model_id, tokens FROM training_runs WHERE stage = 'lira'"))
    assert set(docs) == {"tiny-lira-a", "tiny-lira-b"}
    got = {s: (a, nm, no) for s, a, nm, no in rows(
        "SELECT score, auroc, n_members, n_nonmembers FROM membership_auroc "
        "WHERE model_id = 'tiny-adamw-s0' AND score IN ('loss', 'ref_out', 'lira')")}
    scored = dict(rows("SELECT score, count(value) FROM membership_scores WHERE model_id = 'tiny-adamw-s0' "
                       "AND score IN ('loss', 'ref_out', 'lira') GROUP BY score"))
    assert set(got) == {"loss", "ref_out", "lira"}
    assert scored["lira"] == scored["ref_out"] == scored["loss"] > 20  # every passage has its LiRA scores
    for score, (a, n_members, n_nonmembers) in got.items():
        assert 0.0 <= a <= 1.0, (score, got)
        assert (n_members, n_nonmembers) == got["loss"][1:]  # the true n, the same passages for every score
    # the LiRA models are calibration models: not among the models the lab evaluates
    assert not ex.lab_model("tiny-lira-a") and ex.lab_model("tiny-adamw-s0")


def test_lr_sweep_trains_each_multiple_at_the_same_budget(planted):
    sweep = {(o, s): (src, tokens, loss, canary) for o, s, src, tokens, loss, canary in rows(
        "SELECT optimizer, lr_scale, source, tokens, final_val_loss, greedy_canary FROM lr_sweep")}
    # the default multiple is the experiment's own run; muon-s0 is not trained in this module, so it has no 1.0
    assert set(sweep) == {("adamw", 1.0), ("adamw", 2.0), ("muon", 2.0)}
    assert sweep[("adamw", 1.0)][0] == "tiny_models" and sweep[("adamw", 2.0)][0] == "lr_sweep"
    assert sweep[("adamw", 1.0)][1] == sweep[("adamw", 2.0)][1] == sweep[("muon", 2.0)][1]  # same token budget
    assert sweep[("adamw", 1.0)][2] != sweep[("adamw", 2.0)][2]
    assert all(v[3] is not None for v in sweep.values())  # planted canaries scored at every point
    best = {b["optimizer"]: b for b in metadata(planted[3], "memorization_report")["lr_sweep"]}
    assert best["adamw"]["points"] == 2 and best["muon"]["points"] == 1


def test_the_detector_view_is_on_the_page(planted):
    from pathlib import Path

    m = metadata(planted[3], "memorization_report")
    page = Path(m["report_page"]).read_text()
    assert "Learning-rate sweep" in page and "Membership scores of planted against unplanted items" in page
    view = {(v["kind"], v["score"]): v for v in m["planted_membership"] if v["optimizer"] == "adamw"}
    # 3 items at dose 64 against 3 unplanted, per kind: the loss against the reference separates them
    assert view[("canary", "loss / reference loss")]["n_planted"] == 3
    assert view[("canary", "loss / reference loss")]["auroc"] >= 0.8
