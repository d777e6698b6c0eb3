"""vLLM's offline engine for batch generation on a GPU. vllm is imported only here, and only when installed (the
`gpu` extra); on a machine without it `available()` is False and asking for a vllm model is a clear error.

For membership inference: `score(texts)` (prompt logprobs, `SamplingParams(prompt_logprobs=0, max_tokens=1)`; only
the chosen token's logprob, so mu/sigma are None) and `generate_from_ids(prefixes, n)` (greedy, from exact token ids).
"""

from __future__ import annotations

import functools
import importlib.util
import time
from typing import Callable, Iterator, Sequence

from cp_assets.lib.evals.generation import (
    GenerationError,
    GenerationRequest,
    Rollout,
    SamplingParams,
    make_rollout,
    now,
)
from cp_assets.lib.evals.model_registry import ModelSpec
from cp_assets.lib.evals.scoring import TokenScores


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

    # -- membership inference -------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.engine.get_tokenizer()

    def context_length(self) -> int | None:
        """max_model_len of the running engine (models.yaml's context_length, else the model's own)."""
        for owner in (getattr(self.engine, "llm_engine", None), self.engine):
            n = getattr(getattr(owner, "model_config", None), "max_model_len", None)
            if n:
                return int(n)
        return self.spec.context_length

    def score(self, texts: Sequence[str], *, max_tokens: int = 512) -> list[TokenScores]:
        """Prompt-token logprobs of each text, tokenized and cut here exactly as the local backend does (a BOS where
        the tokenizer adds one, at most `max_tokens` scored tokens within the context) and passed as token ids.
        vLLM's `prompt_logprobs[j]` maps token ids to Logprob for position j (None at j = 0) and always holds the
        actual prompt token; with prompt_logprobs=0 nothing else."""
        import numpy as np
        from vllm import SamplingParams as VSP

        from cp_assets.lib.evals.backends.local import encode_for_scoring

        tok = self.tokenizer
        limit = min(max_tokens + 1, self.context_length() or max_tokens + 1)
        encoded = [encode_for_scoring(tok, t, limit) for t in texts]
        todo = [i for i, (ids, _, _) in enumerate(encoded) if len(ids) >= 2]
        outs = {}
        if todo:
            params = VSP(temperature=0.0, max_tokens=1, prompt_logprobs=0)
            prompts = [{"prompt_token_ids": encoded[i][0]} for i in todo]  # a TokensPrompt (a TypedDict)
            try:
                outs = dict(zip(todo, self.engine.generate(prompts, params, use_tqdm=False)))
            except ValueError as exc:
                raise GenerationError(self.model_id, str(exc)) from exc
        results = []
        for i, (ids, text, cut) in enumerate(encoded):
            lps: list[float] = []
            if i in outs:
                steps = outs[i].prompt_logprobs
                if steps is None or len(steps) != len(ids):
                    raise GenerationError(self.model_id, f"vLLM returned {0 if steps is None else len(steps)} "
                                          f"prompt logprobs for a prompt of {len(ids)} tokens")
                lps = [float(steps[j][ids[j]].logprob) for j in range(1, len(ids))]
            results.append(TokenScores(text, list(ids[1:]), np.asarray(lps, dtype=np.float64), truncated=cut))
        return results

    def generate_from_ids(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                          stop_at_eos: bool = True) -> list[list[int]]:
        """Greedy continuation of exact token ids (TokensPrompt: no re-tokenization); only the new ids. vLLM keeps
        the end-of-sequence token it stops at; `stop_at_eos=False` makes exactly `max_new_tokens` (ignore_eos)."""
        from vllm import SamplingParams as VSP

        limit = self.context_length()
        for i, p in enumerate(prefixes):
            if not p:
                raise GenerationError(self.model_id, f"prefix {i} is empty: give at least one token id (e.g. BOS)")
            if limit and len(p) + max_new_tokens > limit:
                raise GenerationError(self.model_id, f"prefix {i} of {len(p)} tokens + max_new_tokens "
                                      f"{max_new_tokens} exceeds the context length {limit}")
        if max_new_tokens <= 0 or not prefixes:
            return [[] for _ in prefixes]
        params = VSP(temperature=0.0, max_tokens=max_new_tokens, ignore_eos=not stop_at_eos)
        prompts = [{"prompt_token_ids": [int(t) for t in p]} for p in prefixes]
        try:
            outs = self.engine.generate(prompts, params, use_tqdm=False)
        except ValueError as exc:
            raise GenerationError(self.model_id, str(exc)) from exc
        return [list(o.outputs[0].token_ids) for o in outs]
