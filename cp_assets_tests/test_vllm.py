"""vLLM's offline engine: runs only where vllm is installed and CUDA is present (skips cleanly elsewhere); without
vllm, asking for a vllm model is a clear error."""

import importlib.util

import pytest

from cp_assets.lib.evals.model_registry import ModelSpec, load_models
from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, SamplingParams


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_model_without_vllm_is_a_clear_error():
    from cp_assets.lib.evals.rollouts import backend_for

    spec = load_models().get("qwen2.5-0.5b-instruct-vllm")
    with pytest.raises(GenerationError, match=r"model 'qwen2.5-0.5b-instruct-vllm'.*gpu.*extra"):
        backend_for(spec)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not cuda(), reason="needs vllm and CUDA")
def test_vllm_offline_engine_generates_with_logprobs():
    from cp_assets.lib.evals.backends.local import model_dir
    from cp_assets.lib.evals.backends.vllm_engine import VLLMBackend

    local = model_dir(load_models().get("smollm2-135m-instruct"))  # the converted checkpoint: no hub needed
    spec = ModelSpec(id="smollm2-vllm", backend="vllm", path=str(local), dtype="float16", batch_size=64,
                     gpu_memory_utilization=0.3)
    backend = VLLMBackend(spec)
    reqs = [GenerationRequest(sample_id=f"q:{i}", prompt="What is the capital of France?") for i in range(32)]
    out = list(backend.generate(reqs, SamplingParams(max_tokens=24)))
    assert len(out) == 32 and len({r.completion for r in out}) == 1, "greedy: identical prompts, identical answers"
    r = out[0]
    assert "Paris" in r.completion and r.backend == "vllm" and r.prompt_token_ids and r.completion_token_ids
    assert len(r.logprobs) == len(r.completion_token_ids) and all(lp <= 0 for lp in r.logprobs)
