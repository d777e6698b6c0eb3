"""Teacher-forced token scores (membership inference) and greedy continuation from exact token ids, on the real
SmolLM2-135M-Instruct: the local backend's scores against a direct forward pass and the model's own `labels=` loss,
batching and truncation; `generate_from_ids` against `generate()`; the OpenAI backend's scoring against the real
servers of `servers.py` (`transformers serve` ignores echo/logprobs: ScoringUnavailable), its reading of an echo reply
laid out as vLLM's (built from the local model's own scores) and of refusals. vLLM's scoring needs a GPU (see
test_vllm.py)."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest

from cp_assets.lib.evals.backends.openai_compat import OpenAIBackend
from cp_assets.lib.evals.model_registry import ModelSpec, load_models
from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, SamplingParams
from cp_assets.lib.evals.scoring import ScoringUnavailable
from cp_assets_tests.servers import FaultProxy, server  # noqa: F401 - `server` is a fixture

SMOL = "smollm2-135m-instruct"
FAKE_KEY = "sk-cprox-test-0c9e1a7b5d3f4e21"
TOL = 1e-4
MEMBERS = [  # the kind of text the model was trained on
    "The United States of America is a country primarily located in North America. Its capital is Washington, D.C., "
    "and its most populous city is New York City.",
    "Water is made of two hydrogen atoms and one oxygen atom. It boils at 100 degrees Celsius at sea level.",
]
_rng = random.Random(0)
RANDOM = ["".join(_rng.choice(string.ascii_letters + string.digits + string.punctuation + " ") for _ in range(n))
          for n in (80, 60)]
TEXTS = MEMBERS + ["The quick brown fox jumps over the lazy dog.", "Once upon a time, in a small village by the sea, "
                   "there lived an old fisherman who told stories to the children every evening."]
LONG = " ".join(TEXTS)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """On the 2-core test machine, shared with other jobs, torch's two intra-op threads spin against each other:
    a forward pass measured 10-25x slower than with one thread. Restored after this module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def smol():
    from cp_assets.lib.evals.rollouts import backend_for

    b = backend_for(load_models().get(SMOL))
    b.model_and_tokenizer  # noqa: B018 - load outside the timed parts
    return b


@pytest.fixture(scope="module")
def alone(smol):
    """Each of TEXTS + RANDOM scored on its own (no padding)."""
    return [smol.score([t])[0] for t in TEXTS + RANDOM]


def variant(smol, **update):
    """The same loaded weights under another batch size or context length (the load cache ignores both)."""
    from cp_assets.lib.evals.backends.local import LocalBackend

    return LocalBackend(smol.spec.model_copy(update=update))


def direct(smol, ids: list[int]):
    """Scores of one unpadded sequence, straight from the model: (logprobs, mu, sigma, the model's own loss)."""
    import torch

    model, _ = smol.model_and_tokenizer
    x = torch.tensor([ids])
    with torch.inference_mode():
        out = model(input_ids=x, labels=x)
    logp = torch.log_softmax(out.logits[0, :-1].double(), -1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = (p * (logp - mu[:, None]) ** 2).sum(-1).sqrt()  # centred form, unlike distribution_stats
    lp = logp.gather(1, x[0, 1:, None])[:, 0]
    return lp.numpy(), mu.numpy(), sigma.numpy(), float(out.loss)


# ---- local scores ----------------------------------------------------------------------------------------------

def test_local_scores_equal_a_direct_forward_pass_and_the_models_loss(smol):
    tok = smol.tokenizer
    for t, s in zip(TEXTS, smol.score(TEXTS)):
        ids = tok(t).input_ids
        assert ids == tok(t, add_special_tokens=False).input_ids, "SmolLM2 adds no BOS: its first token is context"
        assert s.token_ids == ids[1:] and s.n_tokens == len(ids) - 1 and s.text == t and not s.truncated
        lp, mu, sigma, loss = direct(smol, ids)
        np.testing.assert_allclose(s.logprobs, lp, atol=TOL, rtol=0)
        np.testing.assert_allclose(s.mu, mu, atol=TOL, rtol=0)
        np.testing.assert_allclose(s.sigma, sigma, atol=TOL, rtol=0)
        assert -s.logprobs.mean() == pytest.approx(loss, abs=TOL)  # the loss membership inference starts from
        assert s.logprobs.dtype == np.float64 and s.has_distribution
        assert (s.logprobs <= 0).all() and (s.mu <= 0).all() and (s.sigma >= 0).all()


@pytest.mark.parametrize("batch_size", [2, 8])
def test_local_batching_does_not_change_scores(smol, alone, batch_size):
    texts = TEXTS + RANDOM  # different lengths: padding in every batch
    batched = variant(smol, batch_size=batch_size).score(texts)
    assert [s.text for s in batched] == texts  # input order, though batches run longest first
    for a, b in zip(alone, batched):
        assert a.token_ids == b.token_ids
        for field in ("logprobs", "mu", "sigma"):
            np.testing.assert_allclose(getattr(b, field), getattr(a, field), atol=TOL, rtol=0)


def test_member_like_text_scores_far_above_random_characters(smol):
    members, randoms = smol.score(MEMBERS), smol.score(RANDOM)
    for m, r in zip(members, randoms):
        assert m.logprobs.mean() > -3.0, m.logprobs.mean()
        assert r.logprobs.mean() < m.logprobs.mean() - 2.5, (m.logprobs.mean(), r.logprobs.mean())


@pytest.mark.parametrize("max_tokens, context, kept", [
    (16, None, 16),  # cut at max_tokens scored tokens
    (512, 24, 23),  # cut at the context: 24 tokens in, the first is context
    (16, 12, 11),  # both: the smaller wins
])
def test_local_truncation(smol, max_tokens, context, kept):
    tok = smol.tokenizer
    full = smol.score([LONG])[0]
    assert full.n_tokens > 40 and not full.truncated
    s = variant(smol, context_length=context).score([LONG], max_tokens=max_tokens)[0]
    assert s.truncated and s.n_tokens == kept and s.token_ids == full.token_ids[:kept]
    np.testing.assert_allclose(s.logprobs, full.logprobs[:kept], atol=TOL, rtol=0)
    np.testing.assert_allclose(s.sigma, full.sigma[:kept], atol=TOL, rtol=0)
    assert LONG.startswith(s.text) and len(s.text) < len(LONG)  # `text` is the part scored
    assert tok(s.text).input_ids[1:] == s.token_ids
    exact = smol.score([LONG], max_tokens=full.n_tokens)[0]  # just fits: not cut
    assert not exact.truncated and exact.n_tokens == full.n_tokens


def test_local_texts_with_nothing_to_score(smol):
    empty, one, two = smol.score(["", "Hi", "Hi there"])
    assert (empty.n_tokens, one.n_tokens, two.n_tokens) == (0, 0, 1)
    assert not empty.truncated and one.mu is not None and len(one.mu) == 0


# ---- greedy continuation from exact token ids ------------------------------------------------------------------

def test_generate_from_ids_matches_generate(smol):
    tok = smol.tokenizer
    reqs = [GenerationRequest(sample_id=f"q:{i}", prompt=p) for i, p in
            enumerate(["What is the capital of France?", "Name a primary color."])]
    rollouts = sorted(smol.generate(reqs, SamplingParams(max_tokens=10)), key=lambda r: r.sample_id)
    prefixes = []
    for r in rollouts:
        ids = tok.encode(r.rendered_prompt, add_special_tokens=False)
        assert ids == r.prompt_token_ids and tok.decode(ids) == r.rendered_prompt  # tokenizes identically
        prefixes.append(ids)
    first = smol.generate_from_ids(prefixes, 10)
    assert first == smol.generate_from_ids(prefixes, 10), "greedy is deterministic"
    assert first == [r.completion_token_ids for r in rollouts]  # only the new ids, EOS kept as generate() keeps it
    assert [smol.generate_from_ids([p], 10)[0] for p in prefixes] == first  # left padding changes nothing
    assert "Paris" in tok.decode(first[0])


def test_generate_from_ids_continues_raw_text_and_can_run_past_eos(smol):
    tok = smol.tokenizer
    [raw] = smol.generate_from_ids([tok.encode("The capital of France is", add_special_tokens=False)], 3)
    assert tok.decode(raw).startswith(" Paris") and len(raw) == 3
    prefix = tok.encode(smol.render(GenerationRequest(sample_id="s", prompt="What is 2+3?")), add_special_tokens=False)
    stopping = smol.generate_from_ids([prefix], 16)[0]
    assert stopping[-1] == tok.eos_token_id and len(stopping) < 16  # "2 + 3 = 5<|im_end|>"
    exact = smol.generate_from_ids([prefix], 16, stop_at_eos=False)[0]
    assert len(exact) == 16 and exact[:len(stopping)] == stopping


def test_generate_from_ids_errors_name_the_model(smol):
    limit = smol.context_length()
    with pytest.raises(GenerationError, match=rf"model '{SMOL}': prefix 1 of {limit - 4} tokens \+ max_new_tokens 8 "
                                              rf"exceeds the context length {limit}"):
        smol.generate_from_ids([[1, 2], [1] * (limit - 4)], 8)
    with pytest.raises(GenerationError, match=rf"model '{SMOL}': prefix 0 is empty"):
        smol.generate_from_ids([[]], 4)


# ---- OpenAI-compatible servers ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_openai_score_against_a_real_server(server, smol, monkeypatch):
    """`transformers serve` answers echo+logprobs with only the generated text (no logprobs field): unavailable,
    and said so clearly. llama.cpp's server (optional, not installed everywhere) either scores or says so too."""
    monkeypatch.setenv("CPROX_TEST_KEY", FAKE_KEY)
    backend = OpenAIBackend(server.spec(endpoint="completion", api_key_env="CPROX_TEST_KEY"))
    try:
        member, rand = backend.score([MEMBERS[0], RANDOM[0]])
    except ScoringUnavailable as exc:
        msg = str(exc)
        assert backend.model_id in msg and server.base_url in msg and "logprobs" in msg and "vllm serve" in msg
        assert FAKE_KEY not in msg and FAKE_KEY[-8:] not in msg
        assert isinstance(exc, GenerationError)  # callers that catch generation errors catch this too
        if server.kind == "transformers":
            assert "no logprobs" in msg
        return
    assert server.kind != "transformers", "transformers serve gives no prompt logprobs"
    assert member.mu is None and member.sigma is None and not member.truncated
    assert (member.logprobs <= 0).all() and member.n_tokens >= 20
    assert rand.logprobs.mean() < member.logprobs.mean() - 2.0


def echo_reply(smol, text: str, token_ids: bool) -> bytes:
    """A /v1/completions reply to echo=True, logprobs=1, max_tokens=1 laid out as vLLM's (first prompt token's
    logprob None, then each prompt token's, then the generated token's), carrying the local model's own scores."""
    tok = smol.tokenizer
    s = smol.score([text])[0]
    ids = [tok(text).input_ids[0]] + s.token_ids + [tok.eos_token_id]
    pieces = [tok.decode([i]) for i in ids[:-1]] + [""]
    offsets = [sum(map(len, pieces[:j])) for j in range(len(ids))]
    tokens = [f"token_id:{i}" for i in ids] if token_ids else pieces
    values = [None] + [float(x) for x in s.logprobs] + [-0.5]
    body = {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop",
                         "logprobs": {"tokens": tokens, "token_logprobs": values, "text_offset": offsets,
                                      "top_logprobs": [None] + [{t: v} for t, v in zip(tokens[1:], values[1:])]}}],
            "usage": {"prompt_tokens": len(ids) - 1, "completion_tokens": 1, "total_tokens": len(ids)}}
    return json.dumps(body).encode()


@pytest.mark.parametrize("token_ids", [False, True], ids=["token-strings", "token-ids"])
def test_openai_score_reads_a_vllm_echo_reply(smol, token_ids):
    text = TEXTS[0]
    local = smol.score([text])[0]
    with FaultProxy(reply=echo_reply(smol, text, token_ids)) as proxy:
        backend = OpenAIBackend(ModelSpec(id="echo-model", backend="openai", base_url=proxy.base_url, max_retries=0))
        s, empty = backend.score([text, ""])
        cut = backend.score([text], max_tokens=5)[0]
    assert empty.n_tokens == 0 and proxy.hits == 2  # an empty text is not sent
    np.testing.assert_allclose(s.logprobs, local.logprobs, atol=1e-12)
    assert s.mu is None and s.sigma is None and s.text == text and not s.truncated
    assert s.token_ids == (local.token_ids if token_ids else [-1] * local.n_tokens)
    assert cut.truncated and cut.n_tokens == 5
    np.testing.assert_allclose(cut.logprobs, local.logprobs[:5], atol=1e-12)
    # string tokens: the server's text offsets say where the scored part ends; "token_id:<id>" tokens: they cannot
    assert cut.text == (text if token_ids else smol.tokenizer.decode(smol.tokenizer(text).input_ids[:6]))


@pytest.mark.parametrize("status, message, unavailable", [
    (404, "This is a chat model and not supported in the v1/completions endpoint. Did you mean to use "
          "v1/chat/completions?", True),  # OpenAI's answer for a chat-only model
    (400, "Setting 'echo' and 'logprobs' at the same time is not supported for this model.", True),
    (400, "prompt is too long for this model", False),  # other refusals stay ordinary generation errors
])
def test_openai_score_refusals(status, message, unavailable):
    with FaultProxy(fail_first=5, status=status, message=message) as proxy:
        backend = OpenAIBackend(ModelSpec(id="remote", backend="openai", base_url=proxy.base_url, max_retries=0))
        with pytest.raises(GenerationError) as err:
            backend.score(["some text"])
    assert isinstance(err.value, ScoringUnavailable) == unavailable
    assert "'remote'" in str(err.value) and proxy.base_url in str(err.value) and f"HTTP {status}" in str(err.value)
    if unavailable:
        assert "prompt tokens' logprobs" in str(err.value)


# ---- vLLM (GPU only) -------------------------------------------------------------------------------------------

def _vllm_and_cuda() -> bool:
    import importlib.util

    import torch

    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _vllm_and_cuda(), reason="needs vllm and CUDA")
def test_vllm_scores_and_continuations_match_local(smol):
    from cp_assets.lib.evals.backends.local import model_dir
    from cp_assets.lib.evals.backends.vllm_engine import VLLMBackend

    spec = ModelSpec(id="smollm2-vllm", backend="vllm", path=str(model_dir(smol.spec)), dtype="float32",
                     gpu_memory_utilization=0.3, context_length=2048)
    vllm = VLLMBackend(spec)
    texts = TEXTS + RANDOM
    for v, loc in zip(vllm.score(texts), smol.score(texts)):
        assert v.token_ids == loc.token_ids and v.mu is None and v.sigma is None and not v.truncated
        assert np.abs(v.logprobs - loc.logprobs).mean() < 0.02
    cut = vllm.score([LONG], max_tokens=16)[0]
    assert cut.truncated and cut.n_tokens == 16
    prefixes = [smol.tokenizer.encode(t, add_special_tokens=False)[:8] for t in TEXTS]
    assert [c[:4] for c in vllm.generate_from_ids(prefixes, 4)] == [c[:4] for c in smol.generate_from_ids(prefixes, 4)]
    with pytest.raises(GenerationError, match="context length 2048"):
        vllm.generate_from_ids([[1] * 2040], 16)
