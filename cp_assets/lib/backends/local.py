"""Local generation with transformers: the offline default (SmolLM2-135M-Instruct, Gemma-3-270M from packaged GGUFs).

A GGUF checkpoint is dequantized once (~20-70 s of pure-Python parsing) and saved as safetensors under
`CPROX_HOME/models/<id>/`; later loads take under a second. Generation is batched (left padding), greedy or sampled
(seeded), and returns token ids and per-token logprobs.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from cp_assets.lib import settings
from cp_assets.lib.models import ModelSpec
from cp_assets.lib.rollouts import GenerationError, GenerationRequest, Rollout, SamplingParams, make_rollout, now


def model_dir(spec: ModelSpec) -> Path | str:
    """A directory (or hub name) transformers loads fast: for GGUF models, the converted copy, made on first use."""
    if spec.gguf is None:
        return spec.path
    target = settings.model_cache() / spec.id
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = spec.gguf_path()
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001 - any loader failure is the model files' fault here
        raise GenerationError(spec.id, f"cannot load GGUF {gguf}: {exc}") from exc
    model.hf_quantizer = None  # dequantized to fp32: save as a plain checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists() and not (target / "model.safetensors").exists():
        shutil.rmtree(target, ignore_errors=True)  # an incomplete copy from elsewhere
    try:
        tmp.rename(target)  # atomic: a crash mid-conversion leaves only the .partial directory
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@functools.lru_cache(maxsize=2)
def load(spec: ModelSpec, device: str | None = None):
    """(model, tokenizer) in eval mode, on `device` (default: CUDA when available)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where = model_dir(spec)
    try:
        tok = AutoTokenizer.from_pretrained(where)
        dtype = getattr(torch, spec.dtype)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except OSError as exc:
        raise GenerationError(spec.id, f"model files not found at {where}: {exc}") from exc
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


class LocalBackend:
    """transformers `generate` over batches of requests."""

    backend = "local"

    def __init__(self, spec: ModelSpec, device: str | None = None):
        self.spec, self.model_id, self.device = spec, spec.id, device
        # the load cache key: what determines the weights, so specs differing in batch size share one loaded model
        self._weights = spec.model_copy(update={"batch_size": 1, "description": ""})
        self._lock = threading.Lock()

    @property
    def model_and_tokenizer(self):
        return load(self._weights, self.device)

    def render(self, req: GenerationRequest) -> str:
        """The text the model sees: the chat template for instruct models, else system + prompt as plain text."""
        _, tok = self.model_and_tokenizer
        if self.spec.chat_template and tok.chat_template:
            messages = ([{"role": "system", "content": req.system_prompt}] if req.system_prompt else [])
            messages.append({"role": "user", "content": req.prompt})
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"{req.system_prompt}\n\n{req.prompt}" if req.system_prompt else req.prompt

    def context_length(self) -> int:
        model, _ = self.model_and_tokenizer
        return self.spec.context_length or getattr(model.config, "max_position_embeddings", 2048)

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> Iterator[Rollout]:
        for start in range(0, len(requests), self.spec.batch_size):
            yield from self._batch(requests[start:start + self.spec.batch_size], params)

    def stream(self, request: GenerationRequest, params: SamplingParams,
               on_text: Callable[[str], None]) -> Rollout:
        return next(iter(self._batch([request], params, on_text=on_text)))

    def _batch(self, reqs: Sequence[GenerationRequest], params: SamplingParams,
               on_text: Callable[[str], None] | None = None) -> list[Rollout]:
        import torch
        from transformers import TextIteratorStreamer

        model, tok = self.model_and_tokenizer
        texts = [self.render(r) for r in reqs]
        templated = self.spec.chat_template and bool(tok.chat_template)
        enc = tok(texts, return_tensors="pt", padding=True,
                  add_special_tokens=not (templated and "bos_token" in tok.chat_template))
        limit = self.context_length()
        for r, mask in zip(reqs, enc["attention_mask"]):
            n = int(mask.sum())
            if n + params.max_tokens > limit:
                raise GenerationError(self.model_id, f"prompt of {n} tokens + max_tokens {params.max_tokens} exceeds "
                                      f"the context length {limit}", r.sample_id)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        kwargs = dict(max_new_tokens=params.max_tokens, return_dict_in_generate=True, output_scores=params.logprobs,
                      pad_token_id=tok.pad_token_id)
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        started, t0 = now(), time.perf_counter()
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            if on_text is None:
                out = model.generate(**enc, **kwargs)
            else:
                streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
                result: dict = {}
                worker = threading.Thread(target=lambda: result.setdefault("out", model.generate(
                    **enc, **kwargs, streamer=streamer)))
                worker.start()
                for piece in streamer:
                    if piece:
                        on_text(piece)
                worker.join()
                out = result["out"]
        latency = time.perf_counter() - t0
        n_prompt = enc["input_ids"].shape[1]
        new = out.sequences[:, n_prompt:]
        lps = None
        if params.logprobs:
            scores = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            lps = scores.float().cpu()
        rollouts = []
        eos = set(_as_list(model.generation_config.eos_token_id)) | {tok.eos_token_id}
        for i, req in enumerate(reqs):
            ids = new[i].tolist()
            end = next((j for j, t in enumerate(ids) if t in eos), None)
            if end is not None:  # keep the end-of-sequence token; what follows is padding
                ids, finish = ids[:end + 1], "stop"
            else:
                finish = "length" if len(ids) >= params.max_tokens else "stop"  # else a stop string ended it
            n = len(ids)
            completion = tok.decode([t for t in ids if t not in eos], skip_special_tokens=True)
            if params.stop:
                cut = [completion.find(s) for s in params.stop if s in completion]
                if cut:
                    completion, finish = completion[:min(cut)], "stop"
            prompt_ids = [t for t, m in zip(enc["input_ids"][i].tolist(), enc["attention_mask"][i].tolist()) if m]
            rollouts.append(make_rollout(
                self, req, params, completion=completion, finish_reason=finish, started_at=started,
                latency_s=round(latency, 4), rendered_prompt=texts[i], prompt_token_ids=prompt_ids,
                completion_token_ids=ids, logprobs=[round(float(x), 6) for x in lps[i, :n]] if lps is not None else None,
                metadata={"batch_size": len(reqs), "device": str(model.device)}))
        return rollouts


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
