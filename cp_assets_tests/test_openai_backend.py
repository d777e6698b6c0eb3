"""The OpenAI-compatible HTTP backend against real servers on loopback serving SmolLM2-135M-Instruct.

`server` (cp_assets_tests/servers.py) runs each test once per server kind: `transformers serve` and llama.cpp's
server, each skipped with its reason when its packages are missing. Faults (503s, a stall, a malformed reply, a key
echoed back) come from `FaultProxy` in front of the real server; the model's answers always come from the server.
"""

from __future__ import annotations

import logging
import time

import pytest

from cp_assets.lib.evals.backends.openai_compat import OpenAIBackend
from cp_assets.lib.evals.model_registry import ModelSpec
from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, SamplingParams
from cp_assets_tests.servers import LLAMA_CTX, FaultProxy, closed_port_url, server  # noqa: F401 - `server` is a fixture

FRANCE = GenerationRequest(sample_id="q-france", prompt="What is the capital of France?", eval_set="smoke")
GREEDY = SamplingParams(max_tokens=24)  # llama.cpp's Q4_1 SmolLM2 names Paris after ~12 tokens
FAKE_KEY = "sk-cprox-test-5b1e9d7c3a0f4e2d"


def _req(i: int, prompt: str = "Name a colour.") -> GenerationRequest:
    return GenerationRequest(sample_id=f"s{i}", prompt=prompt)


# ---- against a real server -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_chat_greedy(server, monkeypatch):
    monkeypatch.setenv("CPROX_TEST_KEY", FAKE_KEY)  # servers on loopback ignore it; it must not show up anywhere
    backend = OpenAIBackend(server.spec(api_key_env="CPROX_TEST_KEY"))
    [r] = list(backend.generate([FRANCE], GREEDY))
    assert "Paris" in r.completion
    assert r.finish_reason in ("stop", "length")
    assert r.backend == "openai" and r.model_id == backend.model_id and r.sample_id == "q-france"
    assert r.eval_set == "smoke" and r.params_hash == GREEDY.key()
    assert 0 < r.latency_s < 60 and r.started_at <= r.finished_at
    usage = r.metadata["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= GREEDY.max_tokens
    assert r.metadata["retries"] == 0 and r.metadata["endpoint"] == "chat"
    if server.logprobs:
        assert r.logprobs and all(lp <= 0 for lp in r.logprobs)
        assert len(r.logprobs) == usage["completion_tokens"]
    else:
        assert r.logprobs is None  # transformers serve ignores the logprobs field
    assert FAKE_KEY not in r.model_dump_json()
    [again] = list(backend.generate([FRANCE], GREEDY))
    assert again.completion == r.completion  # greedy is deterministic


@pytest.mark.slow
def test_stream_pieces_add_up(server):
    backend = OpenAIBackend(server.spec())
    pieces: list[str] = []
    r = backend.stream(FRANCE, GREEDY, pieces.append)
    assert len(pieces) >= 3
    assert "".join(pieces) == r.completion and "Paris" in r.completion
    assert r.finish_reason in ("stop", "length")
    assert r.metadata["stream_pieces"] == len(pieces) and 0 < r.metadata["ttft_s"] <= r.latency_s
    if server.logprobs:
        assert r.logprobs and all(lp <= 0 for lp in r.logprobs)


@pytest.mark.slow
def test_completion_endpoint(server):
    backend = OpenAIBackend(server.spec(endpoint="completion"))
    req = GenerationRequest(sample_id="c1", prompt="The capital of France is")
    [r] = list(backend.generate([req], SamplingParams(max_tokens=8)))
    assert "Paris" in r.completion
    assert r.rendered_prompt == "The capital of France is" and r.metadata["endpoint"] == "completion"
    assert r.finish_reason in ("stop", "length")
    if server.logprobs:
        assert r.logprobs and all(lp <= 0 for lp in r.logprobs)
        assert len(r.logprobs) == r.metadata["usage"]["completion_tokens"]
    else:
        assert r.logprobs is None


@pytest.mark.slow
def test_sampling_params_pass_through(server):
    backend = OpenAIBackend(server.spec())
    count = GenerationRequest(sample_id="n", prompt="Count from 1 to 20, separated by commas.")
    [short] = list(backend.generate([count], SamplingParams(max_tokens=4)))
    assert short.finish_reason == "length" and short.metadata["usage"]["completion_tokens"] == 4
    [stopped] = list(backend.generate([count], SamplingParams(max_tokens=16, stop=("3",))))
    assert stopped.completion.startswith("1") and "3" not in stopped.completion and stopped.finish_reason == "stop"
    word = _req(0, "Write a word.")
    a, b, c = (list(backend.generate([word], SamplingParams(temperature=1.0, seed=s, max_tokens=8)))[0]
               for s in (123, 123, 7))
    assert a.completion == b.completion  # same seed, same sample
    if server.samples:
        assert a.completion != c.completion  # another seed, another sample
    # (transformers serve samples only when the model's generation_config says do_sample: SmolLM2's does not)


@pytest.mark.slow
def test_failure_stops_the_batch(server):
    """A refused request stops the run: queued requests are never sent, those in flight finish and are yielded
    (the caller persists them), then the error is raised."""
    with FaultProxy(server.base_url, fail_first=1, status=400) as proxy:
        backend = OpenAIBackend(server.spec(base_url=proxy.base_url, max_concurrency=2))
        got = []
        with pytest.raises(GenerationError, match="HTTP 400"):
            for r in backend.generate([_req(i) for i in range(6)], SamplingParams(max_tokens=4)):
                got.append(r)
    assert proxy.failed == 1 and proxy.hits <= 3 and len(got) == proxy.forwarded == proxy.hits - 1


@pytest.mark.slow
def test_bounded_concurrency(server):
    spec = server.spec(max_concurrency=2)
    with FaultProxy(server.base_url) as proxy:
        backend = OpenAIBackend(spec.model_copy(update={"base_url": proxy.base_url}))
        rollouts = list(backend.generate([_req(i) for i in range(6)], SamplingParams(max_tokens=4)))
    assert sorted(r.sample_id for r in rollouts) == [f"s{i}" for i in range(6)]
    assert all(r.completion for r in rollouts)
    assert proxy.hits == 6 and proxy.max_in_flight == 2


@pytest.mark.slow
def test_retries_503_then_succeeds(server):
    with FaultProxy(server.base_url, fail_first=2, status=503) as proxy:
        backend = OpenAIBackend(server.spec(base_url=proxy.base_url, max_retries=3))
        [r] = list(backend.generate([FRANCE], GREEDY))
    assert "Paris" in r.completion
    assert (proxy.failed, proxy.forwarded) == (2, 1) and r.metadata["retries"] == 2
    with FaultProxy(server.base_url, fail_first=2, status=503) as proxy:  # too few retries: the 503 surfaces
        backend = OpenAIBackend(server.spec(base_url=proxy.base_url, max_retries=1))
        with pytest.raises(GenerationError, match="HTTP 503 after 1 retries"):
            list(backend.generate([FRANCE], GREEDY))
    assert (proxy.failed, proxy.forwarded) == (2, 0)


@pytest.mark.slow
def test_retries_after_timeout(server):
    # the first request hangs past the timeout; the retry reaches the server (1 token: fast even on a busy CPU)
    with FaultProxy(server.base_url, fail_first=1, stall_s=15.0) as proxy:
        backend = OpenAIBackend(server.spec(base_url=proxy.base_url, timeout_s=4.0, max_retries=2))
        t0 = time.perf_counter()
        [r] = list(backend.generate([FRANCE], SamplingParams(max_tokens=1)))
    assert time.perf_counter() - t0 >= 4.0 and r.metadata["retries"] == 1 and r.completion
    assert (proxy.hits, proxy.forwarded) == (2, 1)


@pytest.mark.slow
def test_unknown_model(server):
    backend = OpenAIBackend(server.spec(model="no-such-model"))
    with pytest.raises(GenerationError) as err:
        list(backend.generate([FRANCE], GREEDY))
    msg = str(err.value)
    assert backend.model_id in msg and "q-france" in msg and "'no-such-model'" in msg
    assert "does not serve a model" in msg and server.model in msg


@pytest.mark.slow
def test_prompt_longer_than_context(server):
    if server.enforces_context:  # the server's own refusal (HTTP 400), made readable
        backend = OpenAIBackend(server.spec())
        long = GenerationRequest(sample_id="long", prompt="word " * (LLAMA_CTX + 50))
    else:  # a server that runs past the context: the backend checks usage against models.yaml's context_length
        backend = OpenAIBackend(server.spec(context_length=64))
        long = GenerationRequest(sample_id="long", prompt="word " * 80)
    with pytest.raises(GenerationError, match="context") as err:
        list(backend.generate([long], SamplingParams(max_tokens=4)))
    assert backend.model_id in str(err.value) and "'long'" in str(err.value)


# ---- failures that need no model -------------------------------------------------------------------------------

def test_unreachable_server_fails_fast_and_clearly():
    url = closed_port_url()
    backend = OpenAIBackend(ModelSpec(id="offline-model", backend="openai", base_url=url, max_retries=1))
    t0 = time.perf_counter()
    with pytest.raises(GenerationError) as err:
        list(backend.generate([FRANCE, _req(1)], GREEDY))
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "offline-model" in msg and url in msg and "must be started" in msg


@pytest.mark.parametrize("reply, content_type", [
    (b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}', "application/json"),
    (b"<html>502 Bad Gateway</html>", "text/html"),
])
def test_malformed_reply(reply, content_type):
    with FaultProxy(reply=reply, content_type=content_type) as proxy:
        backend = OpenAIBackend(ModelSpec(id="m", backend="openai", base_url=proxy.base_url, max_retries=0))
        with pytest.raises(GenerationError, match="malformed reply") as err:
            list(backend.generate([FRANCE], GREEDY))
    assert "'m'" in str(err.value) and "q-france" in str(err.value)


def test_api_key_never_leaks(monkeypatch, caplog):
    monkeypatch.setenv("CPROX_TEST_KEY", FAKE_KEY)
    caplog.set_level(logging.DEBUG)
    messages = []
    for status in (401, 500):  # a provider that echoes the key back, in a refusal and in a server error
        with FaultProxy(fail_first=10, status=status, echo_auth=True) as proxy:
            backend = OpenAIBackend(ModelSpec(id="keyed", backend="openai", base_url=proxy.base_url,
                                              api_key_env="CPROX_TEST_KEY", max_retries=0))
            with pytest.raises(GenerationError) as err:
                list(backend.generate([FRANCE], GREEDY))
        assert proxy.failed == 1
        messages.append(str(err.value))
    backend = OpenAIBackend(ModelSpec(id="keyed", backend="openai", base_url=closed_port_url(),
                                      api_key_env="CPROX_TEST_KEY", max_retries=0))
    with pytest.raises(GenerationError) as err:
        list(backend.generate([FRANCE], GREEDY))
    messages.append(str(err.value))
    assert "refused the API key" in messages[0] and "$CPROX_TEST_KEY" in messages[0]
    assert "<redacted>" in messages[1]
    for text in messages + [caplog.text]:
        assert FAKE_KEY not in text and FAKE_KEY[-8:] not in text


def test_missing_key_env_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CPROX_TEST_KEY", raising=False)
    backend = OpenAIBackend(ModelSpec(id="keyed", backend="openai", base_url=closed_port_url(),
                                      api_key_env="CPROX_TEST_KEY"))
    with pytest.raises(GenerationError, match="set the environment variable CPROX_TEST_KEY"):
        list(backend.generate([FRANCE], GREEDY))
