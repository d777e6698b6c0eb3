"""vLLM's offline engine for batch generation on a GPU. vllm is imported only here, and only when installed (the
`gpu` extra); on a machine without it `available()` is False and asking for a vllm model is a clear error."""

from __future__ import annotations

import functools
import importlib.util
import time
from typing import Callable, Iterator, Sequence

from cp_assets.lib.models import ModelSpec
from cp_assets.lib.rollouts import GenerationError, GenerationRequest, Rollout, SamplingParams, make_rollout, now


def available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def _engine(spec: ModelSpec):
    from vllm import LLM

    kwargs = dict(model=spec.path, dtype=spec.dtype, gpu_memory_utilization=spec.gpu_memory_utilization)
    if spec.context_length:
        kwargs["max_model_len"] = spec.context_length
    return LLM(**kwargs)


class VLLMBackend:
    backend = "vllm"

    def __init__(self, spec: ModelSpec):
        if importlib.util.find_spec("vllm") is None:
            raise GenerationError(spec.id, "the vllm backend needs the `gpu` extra (pip install -e '.[gpu]') on a "
                                  "CUDA machine; vllm is not installed here")
        self.spec, self.model_id = spec, spec.id

    @property
    def engine(self):
        return _engine(self.spec)

    def _messages(self, req: GenerationRequest) -> list[dict]:
        return ([{"role": "system", "content": req.system_prompt}] if req.system_prompt else []) + [
            {"role": "user", "content": req.prompt}]

    def _render(self, req: GenerationRequest) -> str:
        if not self.spec.chat_template:
            return f"{req.system_prompt}\n\n{req.prompt}" if req.system_prompt else req.prompt
        tok = self.engine.get_tokenizer()
        return tok.apply_chat_template(self._messages(req), tokenize=False, add_generation_prompt=True)

    def _params(self, params: SamplingParams):
        from vllm import SamplingParams as VSP

        return VSP(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                   seed=params.seed, stop=list(params.stop) or None, logprobs=0 if params.logprobs else None)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> Iterator[Rollout]:
        """vLLM schedules the whole batch itself (continuous batching); results come back in request order."""
        for start in range(0, len(requests), self.spec.batch_size):
            chunk = requests[start:start + self.spec.batch_size]
            texts = [self._render(r) for r in chunk]
            started, t0 = now(), time.perf_counter()
            try:
                outs = self.engine.generate(texts, self._params(params), use_tqdm=False)
            except ValueError as exc:  # e.g. prompt longer than max_model_len
                raise GenerationError(self.model_id, str(exc), chunk[0].sample_id) from exc
            latency = time.perf_counter() - t0
            for req, text, out in zip(chunk, texts, outs):
                yield self._rollout(req, params, text, out, started, latency, len(chunk))

    def stream(self, request: GenerationRequest, params: SamplingParams,
               on_text: Callable[[str], None]) -> Rollout:
        """The offline engine has no token stream: the text arrives in one piece."""
        rollout = next(iter(self.generate([request], params)))
        on_text(rollout.completion)
        return rollout

    def _rollout(self, req, params, text, out, started, latency, batch) -> Rollout:
        c = out.outputs[0]
        lps = None
        if params.logprobs and c.logprobs is not None:
            lps = [float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs)]
        return make_rollout(self, req, params, completion=c.text, finish_reason=c.finish_reason or "stop",
                            started_at=started, latency_s=round(latency, 4), rendered_prompt=text,
                            prompt_token_ids=list(out.prompt_token_ids), completion_token_ids=list(c.token_ids),
                            logprobs=lps, metadata={"batch_size": batch})
