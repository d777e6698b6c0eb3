"""Rollout records (lossless DuckDB/Parquet round trip), the models registry, and the local transformers backend on the
real SmolLM2-135M-Instruct (batched, greedy, seeded sampling, logprobs, streaming, context errors)."""

import math
import threading
from datetime import datetime, timezone

import pytest

from cp_assets.lib.evals.model_registry import ModelRegistryError, load_models
from cp_assets.lib.reports.results_db import ResultsDB, read_parquet_rollouts
from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, Rollout, SamplingParams

SMOL = "smollm2-135m-instruct"


def rollout(sample_id="gsm8k:1", **kw) -> Rollout:
    p = kw.pop("params", SamplingParams(temperature=0.7, stop=("\n\n",), max_tokens=12))
    base = dict(sample_id=sample_id, eval_set="gsm8k", model_id="m", backend="local", prompt="Q?",
                completion="A \u00fc \U0001f600", prompt_token_ids=[1, 2, 3], completion_token_ids=[4, 5],
                logprobs=[-0.123456789012345, -2.5e-9], params=p, params_hash=p.key(None), finish_reason="stop",
                latency_s=0.25, started_at=datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc),
                finished_at=datetime.now(timezone.utc), correct=True, metadata={"level": 3, "x": [1, {"a": None}]})
    return Rollout(**(base | kw))


@pytest.mark.parametrize("variant", [{}, {"correct": None, "logprobs": None, "completion_token_ids": None},
                                     {"system_prompt": "be terse", "rendered_prompt": "<s>Q?", "completion": ""}])
def test_rollout_round_trips_through_duckdb_and_parquet(tmp_path, variant):
    r = rollout(**variant)
    db = ResultsDB(tmp_path / "r.duckdb")
    db.write_rollouts([r])
    db.write_rollouts([r])  # same key: replaced, not duplicated
    assert db.rollouts() == [r]
    assert read_parquet_rollouts(db.export_rollouts(tmp_path / "r.parquet")) == [r]
    assert Rollout.model_validate_json(r.model_dump_json()) == r
    assert db.done_sample_ids("m", r.params_hash, "gsm8k") == {"gsm8k:1"}
    assert db.done_sample_ids("m", SamplingParams().key(), "gsm8k") == set()


def test_params_hash_covers_params_and_system_prompt():
    a = SamplingParams()
    assert a.key() == SamplingParams().key()
    assert len({a.key(), a.key("sys"), SamplingParams(max_tokens=7).key(), SamplingParams(seed=1).key(),
                SamplingParams(temperature=0.5).key()}) == 5


def test_duckdb_writer_waits_for_another_process_lock(tmp_path):
    """DuckDB lets one process write at a time: a second writer waits for the lock instead of failing."""
    import subprocess
    import sys
    import time

    path = tmp_path / "locked.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); "
                               "print('held', flush=True); time.sleep(3); c.close()"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    assert ResultsDB(path, lock_timeout_s=30).write_rollouts([rollout()]) == 1
    assert time.monotonic() - t0 > 1, "it waited for the other process"
    holder.wait()
    with pytest.raises(RuntimeError, match="cannot open the results database"):
        other = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); "
                                  "print('held', flush=True); time.sleep(4)"], stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline().strip() == "held"
        try:
            ResultsDB(path, lock_timeout_s=0.5).write_rollouts([rollout("gsm8k:2")])
        finally:
            other.kill()


def test_models_registry_errors(tmp_path):
    reg = load_models()
    assert SMOL in reg.ids() and reg.get(SMOL).backend == "local"
    with pytest.raises(ModelRegistryError, match="unknown model 'nope'.*known"):
        reg.get("nope")
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  x:\n    backend: openai\n")
    with pytest.raises(ModelRegistryError, match=r"models.yaml: models.x: .*base_url"):
        load_models(bad)
    bad.write_text("models:\n  y:\n    backend: local\n    gguf: {package: not_a_package_here}\n")
    with pytest.raises(ModelRegistryError, match="package 'not_a_package_here' is not installed"):
        load_models(bad).get("y").gguf_path()
    bad.write_text("models:\n  z:\n    backend: local\n    path: x\n    temprature: 1\n")
    with pytest.raises(ModelRegistryError, match="models.z: temprature"):
        load_models(bad)


@pytest.fixture(scope="module")
def smol():
    from cp_assets.lib.evals.rollouts import backend_for

    b = backend_for(load_models().get(SMOL))
    b.model_and_tokenizer  # noqa: B018 - load (and convert the GGUF once) outside the timed parts
    return b


QUESTIONS = ["What is the capital of France?", "What is 2+3?", "Name a primary color.",
             "Write one sentence about the sea."]


def requests(prompts=QUESTIONS):
    return [GenerationRequest(sample_id=f"q:{i}", prompt=p, eval_set="q") for i, p in enumerate(prompts)]


def test_local_greedy_batched_equals_one_at_a_time(smol):
    params = SamplingParams(max_tokens=16)
    batched = {r.sample_id: r for r in smol.generate(requests(), params)}
    assert "Paris" in batched["q:0"].completion
    single = smol.generate(requests()[:1], params)
    assert next(iter(single)).completion == batched["q:0"].completion
    for r in batched.values():
        assert r.backend == "local" and r.model_id == SMOL and r.finish_reason in {"stop", "length"}
        assert r.rendered_prompt.startswith("<|im_start|>") and r.prompt_token_ids
        assert len(r.logprobs) == len(r.completion_token_ids) <= 16
        assert all(lp <= 0 and math.isfinite(lp) for lp in r.logprobs)
        assert r.params_hash == params.key() and r.latency_s > 0


def test_local_logprobs_match_a_forward_pass(smol):
    import torch

    [r] = list(smol.generate(requests()[:1], SamplingParams(max_tokens=8)))
    model, _ = smol.model_and_tokenizer
    ids = torch.tensor([r.prompt_token_ids + r.completion_token_ids])
    with torch.inference_mode():
        logits = model(ids).logits[0, len(r.prompt_token_ids) - 1:-1]
    lp = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(r.completion_token_ids)[:, None])[:, 0]
    assert lp.tolist() == pytest.approx(r.logprobs, abs=1e-3)


def test_local_sampling_is_seeded(smol):
    p = SamplingParams(temperature=1.0, max_tokens=12, seed=7)
    a = [r.completion for r in smol.generate(requests(), p)]
    b = [r.completion for r in smol.generate(requests(), p)]
    c = [r.completion for r in smol.generate(requests(), p.model_copy(update={"seed": 8}))]
    assert a == b and a != c


def test_local_streaming_matches_generate(smol):
    pieces = []
    r = smol.stream(requests()[0], SamplingParams(max_tokens=16), pieces.append)
    assert len(pieces) > 1 and "".join(pieces).strip() == r.completion.strip()


def test_local_prompt_longer_than_context_is_a_clear_error(smol):
    long = GenerationRequest(sample_id="q:long", prompt="word " * 9000, eval_set="q")
    with pytest.raises(GenerationError, match=r"model 'smollm2-135m-instruct', sample 'q:long'.*context length"):
        list(smol.generate([long], SamplingParams(max_tokens=8)))


def test_local_generation_is_thread_safe(smol):
    """Three threads generating at once get what each request gives alone (greedy is deterministic): no error, and
    no output garbled or swapped between threads."""
    params = SamplingParams(max_tokens=6)
    alone = {i: next(iter(smol.generate(requests()[i:i + 1], params))).completion for i in range(3)}
    results, errors = {}, []

    def work(i):
        try:
            results[i] = next(iter(smol.generate(requests()[i:i + 1], params))).completion
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == alone and len(set(alone.values())) == 3


@pytest.mark.parametrize("metas,field,expected", [
    ([{"level": 1}, {"level": 1}, {"level": 2}], "level", {1: (0.5, 2), 2: (1.0, 1)}),
    ([{"category": "poem"}, {"category": "poem"}, {"category": "speech"}], "category",
     {"poem": (0.5, 2), "speech": (1.0, 1)}),
    ([{}, {}, {}], None, {}),
])
def test_accuracy_by_group(metas, field, expected):
    from cp_assets.lib.evals.rollouts import accuracy_by

    rs = [rollout(f"s:{i}", metadata=m, correct=c) for i, (m, c) in enumerate(zip(metas, [False, True, True]))]
    assert accuracy_by(rs + [rollout("s:x", metadata=metas[0], correct=None)]) == (field, expected)


def test_completion_tokens_fall_back_to_server_usage():
    assert rollout().n_completion_tokens == 2
    assert rollout(completion_token_ids=None, metadata={"usage": {"completion_tokens": 7}}).n_completion_tokens == 7
    assert rollout(completion_token_ids=None, metadata={}).n_completion_tokens is None
