"""The memorization lab through Dagster on the test splits (conftest's training.yaml: base on `tiny`, SFT on `math`,
AdamW and Muon with one seed, the `test` size): tiny_models and tiny_sft_models train and register models,
verbatim_recall / extraction / membership run on them, memorization_report compares the optimizers and base vs SFT,
the SQL models read the tables; a diverging run fails cleanly and keeps its checkpoints; bad input is a clear error."""

import json

import dagster as dg
import pytest

from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.evals.model_registry import load_models
from cp_assets_tests.conftest import metadata

RUNS = ("adamw-s0", "muon-s0")


def defs_assets():
    from cp_assets.definitions import defs

    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]


def run(selection, key, resources, instance, config=None, ok=True):
    ops = {k: v for k, v in (config or {}).items() if k in selection}
    result = dg.materialize(defs_assets(), selection=selection, partition_key=key, resources=resources,
                            instance=instance, run_config={"ops": ops}, raise_on_error=ok)
    assert result.success is ok
    return result


@pytest.fixture(scope="module")
def instance():
    return dg.DagsterInstance.ephemeral()


@pytest.fixture(scope="module")
def trained(materialized, resources, instance):
    out = {}
    for r in RUNS:
        out[r] = (run(["tiny_models"], r, resources, instance), run(["tiny_sft_models"], r, resources, instance))
    return out


def test_training_registers_models_and_records_curves(trained, instance):
    from cp_assets.resources.results import ResultsStore

    models = load_models()
    for r, (base, sft) in trained.items():
        bm, sm = metadata(base, "tiny_models"), metadata(sft, "tiny_sft_models")
        assert bm["model_id"] == ex.base_model_id(r) and sm["model_id"] == ex.sft_model_id(r)
        assert bm["final_val_loss"] > 0 and bm["loss_curve"].startswith("![loss")
        assert bm["members"] >= 2 and bm["heldout"] == 12 and bm["recall_documents"] >= 1  # sonnet 18 is in `tiny`
        for m in (bm["model_id"], sm["model_id"]):
            assert models.get(m).backend == "tiny"
            assert m in instance.get_dynamic_partitions("models")
    with ResultsStore().db().connect(read_only=True) as con:
        rows = con.execute("SELECT model_id, stage, status, optimizer FROM training_runs ORDER BY 1").fetchall()
        curves = dict(con.execute("SELECT model_id, count(*) FROM training_curves GROUP BY 1").fetchall())
        roles = dict(con.execute("SELECT role, count(*) FROM training_documents WHERE split = 'tiny' "
                                 "GROUP BY 1").fetchall())
    assert {(m, s, st) for m, s, st, _ in rows} >= {(ex.base_model_id(r), "base", "ok") for r in RUNS} | {
        (ex.sft_model_id(r), "sft", "ok") for r in RUNS}
    assert all(curves[m] >= 2 for m, *_ in rows)
    assert roles["heldout"] == 12 and roles["member"] >= 2
    # the same members for both optimizers (chosen by document id, not by the run's seed)
    members = [json.loads((ex.run_dir(r, "base") / "members.json").read_text())["members"] for r in RUNS]
    assert members[0] == members[1]


@pytest.fixture(scope="module")
def tested(trained, resources, instance):
    cfg = {"verbatim_recall": {"config": {"limit": 12, "max_tokens": 24}},
           "membership": {"config": {"n": 10, "words": 24}},
           "extraction": {"config": {"n": 8, "prefix_tokens": 16, "suffix_tokens": 16}},
           "rollouts": {"config": {"limit": 4, "max_tokens": 8}}}
    run(["eval_samples"], "gsm8k", resources, instance)
    out = {}
    for r in RUNS:
        for m in (ex.base_model_id(r), ex.sft_model_id(r)):
            out[m] = run(["verbatim_recall", "membership"], m, resources, instance, cfg)
            # answers to GSM8K, and their distance to the `tiny` split (base vs SFT: outputs' distance to each split)
            run(["rollouts"], dg.MultiPartitionKey({"eval_set": "gsm8k", "model": m}), resources, instance, cfg)
            run(["rollout_proximity"], dg.MultiPartitionKey({"model": m, "split": "tiny"}), resources, instance)
            for split in ("tiny", "math"):
                run(["extraction"], dg.MultiPartitionKey({"model": m, "split": split}), resources, instance, cfg)
    return out


def test_recall_membership_extraction_rows(tested):
    from cp_assets.resources.results import ResultsStore

    model = ex.base_model_id("adamw-s0")
    rec, mia = metadata(tested[model], "verbatim_recall"), metadata(tested[model], "membership")
    assert rec["items"] == 12 and 0 <= rec["exact_rate"] <= 1 and rec["recall_plot"].startswith("![recall")
    assert mia["labels"] == "exact" and mia["members"] >= 2 and mia["nonmembers"] == 10
    with ResultsStore().db().connect(read_only=True) as con:
        aurocs = dict(con.execute("SELECT score, auroc FROM membership_auroc WHERE model_id = ?", [model]).fetchall())
        extraction = con.execute("SELECT split, count(*), bool_and(member) FILTER (WHERE split = 'tiny') "
                                 "FROM extraction WHERE model_id = ? GROUP BY 1 ORDER BY 1", [model]).fetchall()
    # full-vocabulary scores from the tiny backend: Min-K%++ is defined; a model trained 2 epochs on its members
    # scores them higher than held-out text under the plain loss
    assert set(aurocs) >= {"loss", "zlib", "min_k_20", "min_k_pp_20"} and aurocs["min_k_pp_20"] is not None
    assert aurocs["loss"] > 0.5
    assert [(s, n) for s, n, _ in extraction] == [("math", 8), ("tiny", 8)] and extraction[1][2] is True


def test_memorization_report_and_sql(tested, resources, instance):
    from cp_assets.definitions import defs
    from cp_assets.resources.results import ResultsStore

    result = dg.materialize(defs_assets(), selection=["memorization_report", "memorization_by_model",
                                                      "optimizer_memorization", "base_vs_sft"],
                            resources=defs.resources, instance=instance)
    assert result.success
    md = metadata(result, "memorization_report")
    assert md["optimizer"]["adamw_runs"] == 1 and md["optimizer"]["muon_runs"] == 1
    assert "| recall_exact |" in md["muon_vs_adamw_table"] and "| recall_exact |" in md["sft_vs_base_table"]
    with ResultsStore().db().connect(read_only=True) as con:
        comps = con.execute("SELECT comparison, metric, split, n_runs_a, n_runs_b, diff, ci_low, ci_high "
                            "FROM memorization_comparisons").fetchall()
        by_model = con.execute("SELECT model_id, stage, recall_items, auroc_min_k_20 FROM memorization_by_model "
                               "WHERE stage IS NOT NULL").fetchall()
        per_optimizer = con.execute("SELECT optimizer, seeds FROM optimizer_memorization ORDER BY 1").fetchall()
        pairs = con.execute("SELECT run, split, base_answers, sft_answers, sft_minus_base FROM base_vs_sft").fetchall()
        completions = con.execute("SELECT model_id, completion FROM rollouts").fetchall()
    metrics = {(c, m, s) for c, m, s, *_ in comps}
    assert ("muon_vs_adamw", "recall_exact", None) in metrics and ("muon_vs_adamw", "extraction_exact", "tiny") in metrics
    assert ("sft_vs_base", "extraction_exact", "math") in metrics
    assert ("sft_vs_base", "answer_cosine", "tiny") in metrics
    for c, m, s, na, nb, d, lo, hi in comps:
        if d is not None:
            assert na == nb == (1 if c == "muon_vs_adamw" else 2) and lo <= d <= hi
    by_model = [r for r in by_model if r[1] != "reference"]  # a reference model another test module trained here
    assert len(by_model) == 4 and all(n == 12 and a is not None for _, _, n, a in by_model)
    assert per_optimizer == [("adamw", 1), ("muon", 1)]
    # every stored rollout of the model with a non-empty answer (of 4 GSM8K answers + 12 recall continuations: a
    # test-size base model may stop at once)
    answered = {m: sum(1 for mm, c in completions if mm == m and c.strip()) for m, _ in completions}
    assert sorted((r, s, nb, ns) for r, s, nb, ns, _ in pairs) == [
        (r, "tiny", answered[f"tiny-{r}"], answered[f"tiny-{r}-sft"]) for r in RUNS]
    assert all(0 < answered[f"tiny-{r}{x}"] <= 16 for r in RUNS for x in ("", "-sft"))


def test_cprox_memorization_refreshes_the_sql_reports_over_the_lab():
    """`cprox memorization` materializes these after the lab (the demo printed empty columns when it did not)."""
    from cp_assets.cli.memorization import _lab_sql_reports

    assert _lab_sql_reports() == ["base_vs_sft", "memorization_by_model", "optimizer_memorization",
                                  "planted_dose_response"]


def test_diverging_run_fails_cleanly_and_keeps_checkpoints(trained, resources, instance):
    from cp_assets.resources.results import ResultsStore

    result = run(["tiny_models"], "muon-s0", resources, instance,
                 {"tiny_models": {"config": {"lr_scale": 1e9}}}, ok=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "diverged" in failure.event_specific_data.error.message.lower()
    with ResultsStore().db().connect(read_only=True) as con:
        status, error = con.execute("SELECT status, error FROM training_runs WHERE model_id = 'tiny-muon-s0'").fetchone()
    assert status == "failed" and "muon" in error
    out = ex.run_dir("muon-s0", "base")
    assert (out / "failure.json").exists()
    # retrain: the run completes again and replaces the failure
    run(["tiny_models"], "muon-s0", resources, instance)
    with ResultsStore().db().connect(read_only=True) as con:
        assert con.execute("SELECT status FROM training_runs WHERE model_id = 'tiny-muon-s0'").fetchone()[0] == "ok"
    assert (out / "model.safetensors").exists() and not (out / "failure.json").exists()


def test_bad_input_is_a_clear_error(trained, resources, instance):
    # a prefix longer than the model's context
    key = dg.MultiPartitionKey({"model": ex.base_model_id("adamw-s0"), "split": "tiny"})
    result = run(["extraction"], key, resources, instance,
                 {"extraction": {"config": {"n": 2, "prefix_tokens": 4000, "suffix_tokens": 8}}}, ok=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.to_string()
    assert "tiny-adamw-s0" in message and "context" in message


def test_long_prompts_error_or_are_cut_from_the_left(trained):
    from cp_assets.lib.evals.rollouts import backend_for
    from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, SamplingParams

    spec = load_models().get(ex.base_model_id("adamw-s0"))
    assert spec.truncate_prompt == "left"  # registered so: the tiny context is 128-256 tokens
    long = GenerationRequest(sample_id="long:1", prompt="Shall I compare thee to a summer's day? " * 60)
    params = SamplingParams(max_tokens=8)
    with pytest.raises(GenerationError, match="exceeds the context length"):
        list(backend_for(spec.model_copy(update={"truncate_prompt": "error"})).generate([long], params))
    backend = backend_for(spec)
    [r] = list(backend.generate([long], params))
    full = [backend.tokenizer.bos_id] + backend.tokenizer.encode(backend.render(long))
    keep = backend.context_length() - 8
    assert r.prompt_token_ids == full[-keep:], "the prompt's end is kept, its start cut"
    assert r.metadata["prompt_truncated"] == len(full) - keep > 0
    assert len(r.completion_token_ids) <= 8
