"""Generation and scoring with a tiny GPT trained here (cp_assets/lib/tinygpt/train.py): models.yaml `backend: tiny`, `path:`
the checkpoint directory (config.json, model.safetensors, tokenizer.json, checksums.json). A damaged checkpoint
raises `GenerationError` naming the file and the partition to re-materialize (it is a training result: never rebuilt
silently).

Prompts are plain text (no chat template; a system prompt goes before the prompt, as for base models elsewhere),
prefixed with the `<|endoftext|>` token the model saw before every training document. Generation is batched
(`spec.batch_size`), greedy at temperature 0, else sampled with a per-request seed derived from `params.seed` and the
sample id (so a completion does not depend on its batch). Logprobs are log p(token | prefix) under the model's own
distribution, the same numbers `score` gives for the same tokens.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from cp_assets.lib.core import settings
from cp_assets.lib.evals.generation import (
    GenerationError,
    GenerationRequest,
    Rollout,
    SamplingParams,
    make_rollout,
    now,
)
from cp_assets.lib.evals.model_registry import ModelSpec
from cp_assets.lib.evals.scoring import TokenScores, distribution_stats


def load(path: str | Path, device: str | None = None):
    """(GPT, BPETokenizer) of a checkpoint, cached per (path, device, checkpoint mtime): a retrained checkpoint at
    the same path is reloaded."""
    import torch

    p = Path(path).expanduser().resolve()
    device = device or settings.device() or ("cuda" if torch.cuda.is_available() else "cpu")
    stamp = (p / "config.json").stat().st_mtime_ns if (p / "config.json").exists() else 0
    return _load(str(p), device, stamp)


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str, stamp: int):
    from cp_assets.lib.tinygpt.model import load_checkpoint

    return load_checkpoint(path, device)


class TinyBackend:
    backend = "tiny"

    def __init__(self, spec: ModelSpec, device: str | None = None):
        if not spec.path:
            raise GenerationError(spec.id, "a tiny model needs `path` (its checkpoint directory)")
        self.spec, self.model_id, self.device = spec, spec.id, device
        self._lock = threading.Lock()

    @property
    def model_and_tokenizer(self):
        from cp_assets.lib.core.integrity import CorruptFile

        try:
            return load(self.spec.path, self.device)
        except FileNotFoundError as exc:
            raise GenerationError(self.model_id, f"no tiny GPT checkpoint at {self.spec.path}: {exc}") from exc
        except CorruptFile as exc:  # a training result: never rebuilt here, the user retrains it
            from cp_assets.lib.tinygpt.checkpoint import CorruptCheckpoint

            raise GenerationError(self.model_id, str(CorruptCheckpoint(exc, self.spec.path))) from None

    @property
    def model(self):
        return self.model_and_tokenizer[0]

    @property
    def tokenizer(self):
        """`encode(text) -> list[int]` (no special tokens), `decode(ids) -> str`, `eos_id` (= `bos_id`)."""
        return self.model_and_tokenizer[1]

    def context_length(self) -> int:
        n = self.model.config.seq_len
        return min(n, self.spec.context_length) if self.spec.context_length else n

    def render(self, req: GenerationRequest) -> str:
        return f"{req.system_prompt}\n\n{req.prompt}" if req.system_prompt else req.prompt

    # ---------------------------------------------------------------------------------------------- generation

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> Iterator[Rollout]:
        for start in range(0, len(requests), self.spec.batch_size):
            yield from self._batch(requests[start:start + self.spec.batch_size], params)

    def stream(self, request: GenerationRequest, params: SamplingParams,
               on_text: Callable[[str], None]) -> Rollout:
        return self._batch([request], params, on_text=on_text)[0]

    def _batch(self, reqs: Sequence[GenerationRequest], params: SamplingParams,
               on_text: Callable[[str], None] | None = None) -> list[Rollout]:
        model, tok = self.model_and_tokenizer
        texts = [self.render(r) for r in reqs]
        prompts = [[tok.bos_id] + ids for ids in tok.encode_batch(texts)]
        limit = self.context_length()
        cut = [0] * len(reqs)
        for i, (r, ids) in enumerate(zip(reqs, prompts)):
            if len(ids) + params.max_tokens <= limit:
                continue
            keep = limit - params.max_tokens
            if self.spec.truncate_prompt != "left" or keep < 1:
                raise GenerationError(self.model_id, f"prompt of {len(ids)} tokens + max_tokens {params.max_tokens} "
                                      f"exceeds the context length {limit}", r.sample_id)
            cut[i], prompts[i] = len(ids) - keep, ids[-keep:]
        emitted = [""] * len(reqs)

        def visible(ids: list[int]) -> tuple[str, bool]:
            """The completion text so far, cut at the first stop string; whether one was found."""
            text = tok.decode([t for t in ids if t != tok.eos_id])
            cuts = [text.find(s) for s in params.stop if s in text]
            return (text[:min(cuts)], True) if cuts else (text, False)

        def should_stop(row: int, ids: list[int]) -> bool:
            text, stopped = visible(ids)
            if on_text is not None:
                ready = text.rstrip("\ufffd") if not stopped else text  # hold back an incomplete UTF-8 sequence
                if len(ready) > len(emitted[row]) and ready.startswith(emitted[row]):
                    on_text(ready[len(emitted[row]):])
                    emitted[row] = ready
            return stopped

        seeds = [_seed(params.seed, r.sample_id) for r in reqs]
        started, t0 = now(), time.perf_counter()
        with self._lock:
            out, lps = model.generate(prompts, params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                                      seed=seeds, eos_id=tok.eos_id,
                                      should_stop=should_stop if (params.stop or on_text) else None)
        latency = time.perf_counter() - t0
        rollouts = []
        for i, req in enumerate(reqs):
            ids = out[i]
            completion, stopped = visible(ids)
            finish = "stop" if stopped or (ids and ids[-1] == tok.eos_id) else "length"
            if on_text is not None and len(completion) > len(emitted[i]) and completion.startswith(emitted[i]):
                on_text(completion[len(emitted[i]):])
            rollouts.append(make_rollout(
                self, req, params, completion=completion, finish_reason=finish, started_at=started,
                latency_s=round(latency, 4), rendered_prompt=texts[i], prompt_token_ids=prompts[i],
                completion_token_ids=ids, logprobs=[round(x, 6) for x in lps[i]] if params.logprobs else None,
                metadata={"batch_size": len(reqs), "device": str(model.device)}
                | ({"prompt_truncated": cut[i]} if cut[i] else {})))
        return rollouts

    def generate_from_ids(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                          add_bos: bool = True) -> list[list[int]]:
        """Greedy continuations of token-id prefixes (exactly `max_new_tokens` each: `<|endoftext|>` does not stop
        them), in `spec.batch_size` batches. `add_bos` puts `<|endoftext|>` before each prefix, as in training."""
        model, tok = self.model_and_tokenizer
        rows = [([tok.bos_id] if add_bos else []) + list(p) for p in prefixes]
        limit = self.context_length()
        for i, r in enumerate(rows):
            if not r or len(r) + max_new_tokens > limit:
                raise GenerationError(self.model_id, f"prefix {i}: {len(r)} tokens + {max_new_tokens} new tokens "
                                      f"must fit the context length {limit} (and the prefix be non-empty)")
        out: list[list[int]] = []
        with self._lock:
            for start in range(0, len(rows), self.spec.batch_size):
                out += model.generate_ids(rows[start:start + self.spec.batch_size], max_new_tokens)
        return out

    # ------------------------------------------------------------------------------------------------- scoring

    def score(self, texts: Sequence[str], *, max_tokens: int = 512) -> list[TokenScores]:
        """Teacher-forced scores of every token of each text given `<|endoftext|>` + the tokens before it. A text
        over min(max_tokens, context - 1) tokens keeps its first window and is flagged truncated."""
        import torch

        model, tok = self.model_and_tokenizer
        limit = min(max_tokens, self.context_length() - 1)
        encoded = tok.encode_batch(list(texts))
        results: list[TokenScores | None] = [None] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(order), self.spec.batch_size):
            idx = order[start:start + self.spec.batch_size]
            rows = [encoded[i][:limit] for i in idx]
            width = max(len(r) for r in rows) + 1
            batch = torch.full((len(rows), width), tok.eos_id, dtype=torch.long)
            for j, r in enumerate(rows):  # right padding: causal attention keeps it out of the real positions
                batch[j, 1:len(r) + 1] = torch.tensor(r, dtype=torch.long)
            with self._lock, torch.inference_mode():
                logits = model(batch.to(model.device))
            for j, i in enumerate(idx):
                n = len(rows[j])
                logp, mu, sigma = distribution_stats(logits[j, :n])
                target = torch.tensor(rows[j], dtype=torch.long, device=logp.device)
                chosen = logp.gather(-1, target[:, None]).squeeze(-1) if n else logp.new_zeros(0)
                results[i] = TokenScores(text=texts[i], token_ids=rows[j],
                                         logprobs=chosen.double().cpu().numpy(),
                                         mu=mu.double().cpu().numpy() if n else np.zeros(0),
                                         sigma=sigma.double().cpu().numpy() if n else np.zeros(0),
                                         truncated=len(encoded[i]) > limit)
        return results  # type: ignore[return-value]


def _seed(seed: int | None, sample_id: str) -> int:
    blob = f"{seed}:{sample_id}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:6], "big")
