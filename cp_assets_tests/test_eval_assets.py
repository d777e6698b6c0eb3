"""eval_samples and rollouts through Dagster: partitions (eval set x dynamic model), the models sensor, grading,
idempotent reruns, and clear errors for unknown or unreachable models (kill -9 mid-rollouts: test_faults.py)."""

import dagster as dg
import pytest

from cp_assets_tests.conftest import metadata

SMOL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def instance():
    from cp_assets.defs.evals.models_registry_sensor import sync_model_partitions

    inst = dg.DagsterInstance.ephemeral()
    assert SMOL in sync_model_partitions(inst)
    return inst


@pytest.fixture(scope="module")
def results_db():
    from cp_assets.lib.reports.results_db import ResultsDB

    return ResultsDB()


def materialize(assets, partition, instance, resources, config=None, **kw):
    from cp_assets.definitions import eval_assets

    run_config = {"ops": {"rollouts": {"config": config}}} if config else None
    return dg.materialize(eval_assets, selection=assets, partition_key=partition, instance=instance,
                          resources=resources, run_config=run_config, **kw)


def key(eval_set, model=SMOL):
    return dg.MultiPartitionKey({"eval_set": eval_set, "model": model})


@pytest.mark.parametrize("eval_set,n,first", [("gsm8k", 1319, "gsm8k:0"), ("math500", 500, "math500:0"),
                                              ("recall", 79, "recall:sonnet18")])
def test_eval_samples_asset(instance, resources, results_db, eval_set, n, first):
    result = materialize(["eval_samples"], eval_set, instance, resources)
    md = metadata(result, "eval_samples")
    assert md["samples"] == n and md["first_id"] == first
    rows = results_db.samples(eval_set)
    assert len(rows) == n and rows[0]["sample_id"] == first
    assert materialize(["eval_samples"], eval_set, instance, resources).success  # idempotent
    assert len(results_db.samples(eval_set)) == n


def test_models_sensor_syncs_dynamic_partitions(tmp_path, monkeypatch):
    from cp_assets.defs.evals.models_registry_sensor import models_registry_sensor
    from cp_assets.lib.evals import model_registry

    # models trained by other tests of this worker (trained_models.yaml under CPROX_HOME) are not this test's subject
    monkeypatch.setattr(model_registry, "trained_models_file", lambda: tmp_path / "no_trained_models.yaml")
    inst = dg.DagsterInstance.ephemeral()
    inst.add_dynamic_partitions("models", ["gone-model", SMOL])
    result = models_registry_sensor(dg.build_sensor_context(instance=inst))
    reqs = result.dynamic_partitions_requests
    assert [type(r).__name__ for r in reqs] == ["AddDynamicPartitionsRequest", "DeleteDynamicPartitionsRequest"]
    assert SMOL not in reqs[0].partition_keys and "gemma3-270m" in reqs[0].partition_keys
    assert reqs[1].partition_keys == ["gone-model"]
    custom = tmp_path / "models.yaml"
    custom.write_text("models:\n  only-one:\n    backend: openai\n    base_url: http://127.0.0.1:9/v1\n")
    monkeypatch.setenv("CPROX_MODELS", str(custom))
    reqs = models_registry_sensor(dg.build_sensor_context(instance=inst)).dynamic_partitions_requests
    assert reqs[0].partition_keys == ["only-one"] and set(reqs[1].partition_keys) == {"gone-model", SMOL}


def test_rollouts_generate_grade_and_rerun_nothing(instance, resources, results_db):
    assert materialize(["eval_samples"], "gsm8k", instance, resources).success
    cfg = {"limit": 3, "max_tokens": 32}
    md = metadata(materialize(["rollouts"], key("gsm8k"), instance, resources, cfg), "rollouts")
    assert (md["generated"], md["skipped_existing"], md["rollouts"]) == (3, 0, 3)
    assert md["backend"] == "local" and 0 <= md["accuracy"] <= 1 and md["tokens_per_s"] > 0
    assert md["accuracy_by_n_steps"].startswith("![accuracy by n_steps](data:image/png;base64,")
    stored = results_db.rollouts(eval_set="gsm8k", model_id=SMOL, params_hash=md["params_hash"])
    assert [r.sample_id for r in stored] == ["gsm8k:0", "gsm8k:1", "gsm8k:2"]
    assert all(r.correct is not None and r.completion_token_ids and r.logprobs for r in stored)
    assert stored[0].metadata["reference"] == "18" and stored[0].metadata["n_steps"] == 2

    again = metadata(materialize(["rollouts"], key("gsm8k"), instance, resources, cfg), "rollouts")
    assert (again["generated"], again["skipped_existing"]) == (0, 3), "same parameters: nothing generated"
    more = metadata(materialize(["rollouts"], key("gsm8k"), instance, resources, cfg | {"limit": 4}), "rollouts")
    assert (more["generated"], more["skipped_existing"]) == (1, 3)
    other = metadata(materialize(["rollouts"], key("gsm8k"), instance, resources, {"limit": 2, "max_tokens": 16}),
                     "rollouts")
    assert other["generated"] == 2 and other["params_hash"] != md["params_hash"]


def test_unknown_and_unreachable_models_fail_clearly(resources, tmp_path, monkeypatch):
    from cp_assets.defs.evals.models_registry_sensor import sync_model_partitions

    instance = dg.DagsterInstance.ephemeral()

    custom = tmp_path / "models.yaml"
    custom.write_text("models:\n  down-server:\n    backend: openai\n    base_url: http://127.0.0.1:9/v1\n"
                      "    max_retries: 0\n    timeout_s: 5\n")
    monkeypatch.setenv("CPROX_MODELS", str(custom))
    from cp_assets.resources import local_resources

    sync_model_partitions(instance)
    result = materialize(["rollouts"], key("recall", "down-server"), instance, local_resources(),
                         {"limit": 2, "max_tokens": 8}, raise_on_error=False)
    assert not result.success
    text = str([e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0].event_specific_data.error)
    assert "down-server" in text and "recall:" in text and "127.0.0.1:9" in text
    from cp_assets.lib.evals.model_registry import ModelRegistryError, load_models

    with pytest.raises(ModelRegistryError, match="unknown model 'smollm2-135m-instruct'"):
        load_models().get(SMOL)


def test_blocking_checks_of_samples_and_rollouts(instance, resources, results_db):
    """eval_samples' and rollouts' checks pass on what the assets wrote; the rollouts check fails on logprobs that
    are not one per token, and counts (without failing) a rollout of a sample the eval set no longer holds."""
    from cp_assets.defs.evals.eval_samples import check_eval_samples_consistent
    from cp_assets.defs.evals.rollouts import check_rollouts_consistent
    from cp_assets.definitions import eval_assets

    def checked(selection, partition, config=None):
        run_config = {"ops": {"rollouts": {"config": config}}} if config else None
        result = dg.materialize([*eval_assets, check_eval_samples_consistent, check_rollouts_consistent],
                                selection=selection, partition_key=partition, instance=instance, resources=resources,
                                run_config=run_config, raise_on_error=False)
        return {e.check_name: (e.passed, {k: v.value for k, v in e.metadata.items()})
                for e in result.get_asset_check_evaluations()}

    samples = checked(["eval_samples"], "math500")
    assert samples == {"check_eval_samples_consistent": (True, {"samples": 500, "empty_prompts": 0,
                                                                "distinct_row_idx": 500})}
    cfg = {"limit": 2, "max_tokens": 8}
    try:
        [(ok, figures)] = checked(["rollouts"], key("math500"), cfg).values()
        assert ok and figures == {"rollouts": 2, "logprobs_not_one_per_token": 0, "not_in_eval_samples": 0,
                                  "completion_without_token_ids": 0}
        with results_db.connect() as con:  # a leftover of a sample since removed: counted, not failed on
            con.execute("INSERT INTO rollouts SELECT * REPLACE ('math500:gone' AS sample_id) FROM rollouts "
                        "WHERE sample_id = 'math500:0' AND model_id = ?", [SMOL])
        [(ok, figures)] = checked(["rollouts"], key("math500"), cfg).values()
        assert ok and figures["not_in_eval_samples"] == 1
        with results_db.connect() as con:  # a logprob too many: fails
            con.execute("UPDATE rollouts SET logprobs = list_append(logprobs, -1.0) "
                        "WHERE sample_id = 'math500:1' AND model_id = ?", [SMOL])
        [(ok, figures)] = checked(["rollouts"], key("math500"), cfg).values()
        assert not ok and figures["logprobs_not_one_per_token"] == 1
    finally:
        with results_db.connect() as con:
            con.execute("DELETE FROM rollouts WHERE eval_set = 'math500' AND model_id = ?", [SMOL])


def test_samples_check_fails_on_an_empty_prompt_or_a_gap_in_row_indexes(tmp_path):
    from cp_assets.lib.evals.eval_registry import samples_consistent
    from cp_assets.lib.reports.results_db import ResultsDB

    db = ResultsDB(tmp_path / "results.duckdb")
    rows = [("s", f"s:{i}", i, f"question {i}", f"question {i}") for i in range(3)]
    with db.connect() as con:
        con.executemany("INSERT INTO eval_samples (eval_set, sample_id, row_idx, prompt, request_prompt) "
                        "VALUES (?, ?, ?, ?, ?)", rows)
    assert samples_consistent(db, "s") == (True, {"samples": 3, "empty_prompts": 0, "distinct_row_idx": 3})
    assert samples_consistent(db, "none") == (False, {"samples": 0, "empty_prompts": 0, "distinct_row_idx": 0})
    with db.connect() as con:
        con.execute("INSERT INTO eval_samples (eval_set, sample_id, row_idx, prompt, request_prompt) "
                    "VALUES ('s', 's:9', 9, '  ', 'x')")
    ok, figures = samples_consistent(db, "s")
    assert not ok and figures == {"samples": 4, "empty_prompts": 1, "distinct_row_idx": 4}
