"""The tiny GPT (cp_assets/lib/tinygpt/model.py): shapes, parameter groups, checkpoints, tokenizer, batched generation; and
its backend (cp_assets/lib/evals/backends/tiny.py) through the Backend protocol, on a model with random weights and a BPE
trained on real text. Training itself is in test_train.py."""

import gzip
import json
import math

import numpy as np
import pytest
import torch

from cp_assets.lib.core import settings
from cp_assets.lib.evals.backends.tiny import TinyBackend
from cp_assets.lib.evals.rollouts import backend_for
from cp_assets.lib.evals.model_registry import ModelSpec
from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, SamplingParams
from cp_assets.lib.tinygpt.model import GPT, BPETokenizer, GPTConfig, load_checkpoint, train_tokenizer

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: small ops on 2 threads collapse (OpenMP spin-waits) when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CFG = GPTConfig(vocab_size=300, n_layer=2, n_head=2, n_embd=32, seq_len=64)


def random_model(cfg: GPTConfig = CFG, seed: int = 0) -> GPT:
    """Random weights everywhere (the real init zeroes lm_head, which makes every next token equally likely)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with gzip.open(settings.data_dir() / "fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz", "rt") as f:
        return [json.loads(line)["text"] for line in f][:40]


@pytest.fixture(scope="module")
def tokenizer(texts, tmp_path_factory) -> BPETokenizer:
    return train_tokenizer(texts, 400, tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.fixture(scope="module")
def checkpoint(tokenizer, tmp_path_factory):
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32, seq_len=64)
    return random_model(cfg, seed=1).save(tmp_path_factory.mktemp("ckpt") / "model", tokenizer)


@pytest.fixture
def backend(checkpoint) -> TinyBackend:
    return TinyBackend(ModelSpec(id="tiny-test", backend="tiny", path=str(checkpoint), batch_size=3))


@pytest.mark.parametrize("batch,length", [(1, 1), (3, 17), (2, 64)])
def test_forward_shapes_and_loss(batch, length):
    model = random_model()
    idx = torch.randint(0, CFG.vocab_size, (batch, length))
    logits = model(idx)
    assert logits.shape == (batch, length, CFG.vocab_size) and logits.dtype == torch.float32
    loss = model(idx, idx)
    nll = -torch.log_softmax(logits, -1).gather(-1, idx[..., None]).mean()
    assert loss.ndim == 0 and loss.item() == pytest.approx(nll.item(), abs=1e-5)
    targets = idx.clone()
    targets[:, 0] = -1  # ignored
    if length > 1:
        kept = -torch.log_softmax(logits, -1).gather(-1, idx[..., None])[:, 1:].mean()
        assert model(idx, targets).item() == pytest.approx(kept.item(), abs=1e-5)
    with torch.no_grad():  # logits of hundreds without the soft cap: 15 tanh(x / 15) keeps them just under 15
        model.lm_head.weight.mul_(100)
    assert 14.9 < model(idx).abs().max().item() <= 15.0
    with pytest.raises(ValueError, match="seq_len"):
        model(torch.zeros(1, CFG.seq_len + 1, dtype=torch.long))


def test_fresh_model_predicts_uniformly():
    """nanochat's init zeroes lm_head: the first loss is exactly ln(vocab)."""
    torch.manual_seed(0)
    idx = torch.randint(0, CFG.vocab_size, (2, 10))
    assert GPT(CFG)(idx, idx).item() == pytest.approx(math.log(CFG.vocab_size), abs=1e-5)


def test_causal_attention():
    model, idx = random_model(), torch.randint(0, CFG.vocab_size, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % CFG.vocab_size
    assert torch.allclose(model(idx)[0, :12], model(changed)[0, :12], atol=1e-5)
    assert not torch.allclose(model(idx)[0, 12:], model(changed)[0, 12:])


@pytest.mark.parametrize("cfg", [CFG, GPTConfig(vocab_size=50, n_layer=3, n_head=4, n_embd=64, seq_len=16)])
def test_param_groups_cover_every_parameter_once(cfg):
    model = GPT(cfg)
    groups = model.param_groups()
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert all(p.ndim == 2 for p in groups["matrix"]) and len(groups["matrix"]) == 6 * cfg.n_layer
    assert groups["embedding"] == [model.wte.weight] and groups["lm_head"] == [model.lm_head.weight]
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())


def test_save_load_round_trip(tmp_path, tokenizer):
    model = random_model()
    path = model.save(tmp_path / "ckpt", tokenizer)
    assert {p.name for p in path.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json",
                                                "checksums.json"}  # sizes + sha256, checked on load
    loaded, tok = load_checkpoint(path)
    assert loaded.config == CFG
    idx = torch.randint(0, CFG.vocab_size, (2, 30))
    assert torch.equal(model(idx), loaded(idx))
    assert tok.encode("Hello world") == tokenizer.encode("Hello world")
    # saving again replaces the checkpoint; no temporary directories stay behind
    other = random_model(seed=5).save(path)
    assert not torch.equal(GPT.load(other)(idx), model(idx))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_interrupted_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch

    model = random_model()
    path = model.save(tmp_path / "ckpt")

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        random_model(seed=9).save(path)
    idx = torch.randint(0, CFG.vocab_size, (1, 8))
    assert torch.equal(GPT.load(path)(idx), model(idx))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    with pytest.raises(FileNotFoundError, match="not a tiny GPT checkpoint"):
        GPT.load(tmp_path)


def test_tokenizer_round_trip(tokenizer, texts, tmp_path):
    assert tokenizer.vocab_size == 400 and tokenizer.eos_id == tokenizer.bos_id == 0
    for text in texts[:5] + ["caf\u00e9 \U0001f600 \u65e5\u672c", "  two  spaces\n\nand lines"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    ids = tokenizer.encode(texts[0])
    assert len(ids) < 0.7 * len(texts[0].encode())  # 143 merges already compress the training text
    assert tokenizer.decode([tokenizer.eos_id] + ids[:5]) == tokenizer.decode(ids[:5])  # special tokens skipped
    again = BPETokenizer.load(tokenizer.save(tmp_path / "t.json"))
    assert again.encode_batch(texts[:3]) == [tokenizer.encode(t) for t in texts[:3]]


def test_greedy_generation_matches_forward_batched_or_not():
    model = random_model()
    prefixes = [[5, 6, 7, 8, 9, 10, 11], [3], [100, 101, 102]]
    batched, lps = model.generate(prefixes, 12)
    for prefix, new, lp in zip(prefixes, batched, lps):
        assert model.generate_ids([prefix], 12) == [new]  # left padding does not change a row
        logp = torch.log_softmax(model(torch.tensor([prefix + new]))[0], -1)
        steps = range(len(prefix) - 1, len(prefix) + len(new) - 1)
        assert [int(logp[i].argmax()) for i in steps] == new
        assert np.allclose([float(logp[i, t]) for i, t in zip(steps, new)], lp, atol=1e-4)


def test_sampling_is_seeded_per_row_and_eos_stops():
    model = random_model()
    a = model.generate_ids([[1, 2], [3, 4]], 10, temperature=1.0, seed=[7, 8])
    assert a == model.generate_ids([[1, 2], [3, 4]], 10, temperature=1.0, seed=[7, 8])
    assert model.generate_ids([[3, 4]], 10, temperature=1.0, seed=[8]) == [a[1]]  # independent of the batch
    assert a != model.generate_ids([[1, 2], [3, 4]], 10, temperature=1.0, seed=[17, 18])
    greedy = model.generate_ids([[1, 2]], 10)[0]
    stopped = model.generate_ids([[1, 2]], 10, eos_id=greedy[3])[0]
    assert stopped == greedy[: greedy.index(greedy[3]) + 1]
    with pytest.raises(ValueError, match="seq_len"):
        model.generate_ids([[1] * 60], 5)


def test_backend_generates_through_the_protocol(backend, checkpoint):
    assert isinstance(backend_for(ModelSpec(id="t2", backend="tiny", path=str(checkpoint))), TinyBackend)
    reqs = [GenerationRequest(sample_id=f"s{i}", prompt=p, eval_set="e", metadata={"level": i})
            for i, p in enumerate(["The cat", "Education is", "In 1990 the", "Water"])]
    params = SamplingParams(max_tokens=8)
    first = sorted(backend.generate(reqs, params), key=lambda r: r.sample_id)
    again = sorted(backend.generate(reqs, params), key=lambda r: r.sample_id)
    assert [r.completion_token_ids for r in first] == [r.completion_token_ids for r in again]
    tok = backend.tokenizer
    for req, r in zip(reqs, first):
        assert r.model_id == "tiny-test" and r.backend == "tiny" and r.metadata["level"] == req.metadata["level"]
        assert r.prompt_token_ids == [tok.bos_id] + tok.encode(req.prompt)
        assert len(r.logprobs) == len(r.completion_token_ids) and all(lp <= 0 for lp in r.logprobs)
        assert r.completion == tok.decode(r.completion_token_ids)
        assert r.finish_reason == ("stop" if r.completion_token_ids[-1] == tok.eos_id else "length")
    sampled = [list(backend.generate(reqs[:2], SamplingParams(max_tokens=8, temperature=1.0, seed=s)))
               for s in (1, 1, 2)]
    ids = [[r.completion_token_ids for r in run] for run in sampled]
    assert ids[0] == ids[1] and ids[0] != ids[2]
    pieces: list[str] = []
    streamed = backend.stream(reqs[1], params, pieces.append)
    assert "".join(pieces) == streamed.completion == first[1].completion


def test_backend_stop_strings_cut_the_completion(backend):
    req = GenerationRequest(sample_id="s", prompt="The")
    full = next(backend.generate([req], SamplingParams(max_tokens=20)))
    stop = full.completion[3:5]
    assert stop and full.completion.find(stop) == 3
    cut = next(backend.generate([req], SamplingParams(max_tokens=20, stop=(stop,))))
    assert cut.completion == full.completion[:3] and cut.finish_reason == "stop"
    assert cut.completion_token_ids == full.completion_token_ids[: len(cut.completion_token_ids)]


def test_backend_score_is_teacher_forced_forward(backend, checkpoint):
    """score = log p(token | <|endoftext|> + the tokens before), with mu/sigma over the whole vocabulary; the same
    numbers as generation's logprobs (test_greedy_generation_matches_forward_batched_or_not, and on a trained model
    test_train.py::test_backend_on_trained_model)."""
    model, tok = load_checkpoint(checkpoint)
    model.requires_grad_(False)
    text = "Students learn about water and energy."
    (s,) = backend.score([text])
    ids = tok.encode(text)
    assert s.token_ids == ids and s.n_tokens == len(ids) and s.has_distribution and not s.truncated
    logp = torch.log_softmax(model(torch.tensor([[tok.bos_id] + ids]))[0, :-1].double(), -1)
    assert np.allclose(s.logprobs, logp[torch.arange(len(ids)), ids].numpy(), atol=1e-5)
    p = logp.exp()
    assert np.allclose(s.mu, (p * logp).sum(-1).numpy(), atol=1e-4)
    assert np.allclose(s.sigma, ((p * logp**2).sum(-1) - (p * logp).sum(-1) ** 2).sqrt().numpy(), atol=1e-3)
    batched = backend.score(["x", text, "a much longer text than the others, to pad the batch " * 3])
    assert np.allclose(batched[1].logprobs, s.logprobs, atol=1e-5)  # right padding in a batch changes nothing


def test_backend_score_truncates_and_handles_empty(backend, texts):
    out = backend.score([texts[0], "", "Hi"], max_tokens=20)
    assert [s.n_tokens for s in out] == [20, 0, len(backend.tokenizer.encode("Hi"))]
    assert [s.truncated for s in out] == [True, False, False]
    assert out[0].token_ids == backend.tokenizer.encode(texts[0])[:20]
    (whole,) = backend.score([texts[0]])  # the context (64) caps it: 63 tokens after the BOS
    assert whole.n_tokens == 63 and whole.truncated
    assert np.allclose(whole.logprobs[:20], out[0].logprobs, atol=1e-5)


def test_backend_context_errors_name_model_and_sample(backend):
    long = GenerationRequest(sample_id="too-long", prompt="word " * 80)
    with pytest.raises(GenerationError, match=r"model 'tiny-test', sample 'too-long': .*context length 64"):
        list(backend.generate([long], SamplingParams(max_tokens=4)))
    with pytest.raises(GenerationError, match="tiny-test"):
        backend.generate_from_ids([[1] * 60], 10)
    with pytest.raises(GenerationError, match="no tiny GPT checkpoint"):
        list(TinyBackend(ModelSpec(id="gone", backend="tiny", path="/nonexistent/x")).generate(
            [long], SamplingParams(max_tokens=1)))


def test_backend_generate_from_ids_is_greedy(backend, checkpoint):
    model, tok = load_checkpoint(checkpoint)
    prefixes = [tok.encode("The history of"), tok.encode("A")]
    out = backend.generate_from_ids(prefixes, 6)
    assert all(len(o) == 6 for o in out)
    assert out == [model.generate_ids([[tok.bos_id] + p], 6)[0] for p in prefixes]
    assert backend.generate_from_ids(prefixes, 6, add_bos=False)[1] == model.generate_ids([prefixes[1]], 6)[0]
