"""Local generation with transformers: the offline default (SmolLM2-135M-Instruct, Gemma-3-270M from packaged GGUFs).

A GGUF checkpoint is dequantized once (~20-70 s of pure-Python parsing) and saved as safetensors under
`CPROX_MODEL_CACHE/<id>/` (default CPROX_HOME/models) with `checksums.json` (each file's size and sha256); later loads
take about a second. Before use the copy is checked (sizes and sha256, hashed once per process: ~0.4 s for SmolLM2;
copies made before manifests existed: safetensors structure and JSON files, then a manifest is added); a truncated or
garbage copy is logged (a warning naming the file and why) and converted again, never loaded. Conversions of one model
are serialized by a file lock. Generation is batched (left padding), greedy or sampled (seeded), and returns token ids
and per-token logprobs.

Also, for membership inference and extraction tests: `score(texts)` (teacher-forced logprobs of every token of a text,
with mu/sigma over the vocabulary, see `cp_assets.lib.evals.scoring`) and `generate_from_ids(prefixes, n)` (greedy
continuation of exact token ids, no re-tokenization).
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from cp_assets.lib.core import integrity, settings
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

LOGIT_BUDGET = 2 ** 28  # most logits (rows x tokens x vocabulary) one scoring forward pass materializes: 1 GiB fp32
REQUIRED = ("config.json", "model.safetensors")  # what a converted checkpoint must hold
log = logging.getLogger(__name__)


def model_dir(spec: ModelSpec) -> Path | str:
    """A directory (or hub name) transformers loads fast: for GGUF models, the converted copy, made on first use and
    made again (with a warning naming the bad file) when the copy fails its checks (see `cache_problem`)."""
    if spec.gguf is None:
        return spec.path
    target = settings.model_cache() / spec.id
    problem = cache_problem(target)
    if problem is None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f"{target.name}.lock"), "w") as lock:  # one conversion at a time per model
        fcntl.flock(lock, fcntl.LOCK_EX)
        problem = cache_problem(target)  # another process may have converted it meanwhile
        if problem is None:
            return target
        if target.exists():
            log.warning("converted checkpoint of %s is unusable: %s; converting %s again", spec.id, problem,
                        spec.gguf_path())
        _convert(spec, target)
    return target


def cache_problem(target: Path) -> str | None:
    """Why the converted checkpoint at `target` cannot be used (None: it can). A copy with a manifest must match its
    sizes and sha256s; an older copy without one must have a structurally whole model.safetensors and readable JSON
    files, and is then given a manifest (best effort: the cache may be read-only)."""
    if not target.exists():
        return "missing"
    try:
        if integrity.has_manifest(target):
            integrity.verify_manifest(target, required=REQUIRED)
            return None
        for name in REQUIRED:
            if not (target / name).exists():
                return f"{target / name} is missing"
        integrity.check_safetensors(target / "model.safetensors")
        for f in target.glob("*.json"):
            try:
                json.loads(f.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise integrity.CorruptFile(f, f"not valid JSON ({exc})") from None
    except integrity.CorruptFile as exc:
        return str(exc)
    try:
        integrity.write_manifest(target, _checkpoint_files(target))
    except OSError:
        pass
    return None


def _checkpoint_files(directory: Path) -> list[str]:
    return [f.name for f in directory.iterdir() if f.is_file() and f.name != integrity.MANIFEST
            and not f.name.startswith(".")]


def _convert(spec: ModelSpec, target: Path) -> None:
    """Dequantize the GGUF into a sibling directory, record its manifest, then swap it in for `target`."""
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
    integrity.write_manifest(tmp, _checkpoint_files(tmp))
    if target.exists():  # the bad copy: moved aside, then deleted (it is derived: the GGUF is the source)
        aside = target.with_name(f"{target.name}.corrupt-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    tmp.rename(target)  # a crash mid-conversion leaves only the .partial directory


@functools.lru_cache(maxsize=2)
def load(spec: ModelSpec, device: str | None = None):
    """(model, tokenizer) in eval mode, on `device` (default: CPROX_DEVICE, else CUDA when available)."""
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
    device = device or settings.device() or ("cuda" if torch.cuda.is_available() else "cpu")
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

    @property
    def tokenizer(self):
        """The HF tokenizer (encode/decode); its padding side is left, as generation needs."""
        return self.model_and_tokenizer[1]

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


    # -- membership inference: teacher-forced scores, greedy continuation of exact ids ------------------------------
    def score(self, texts: Sequence[str], *, max_tokens: int = 512) -> list[TokenScores]:
        """Teacher-forced token scores of each text (see `cp_assets.lib.evals.scoring`), in input order.

        The text is encoded as the tokenizer does by default (a BOS token only where it adds one); the first token of
        that sequence is context and every later one is scored, at most `max_tokens` of them and the whole sequence
        within the context length: a longer text is cut (`truncated=True`, `text` = the part scored). Texts run in
        batches of similar length (right padding: positions and causal attention of the real tokens are unchanged)."""
        import numpy as np
        import torch

        model, tok = self.model_and_tokenizer
        limit = min(max_tokens + 1, self.context_length())
        encoded = [encode_for_scoring(tok, t, limit) for t in texts]
        results: list[TokenScores | None] = [None] * len(texts)
        for i, (ids, text, cut) in enumerate(encoded):
            if len(ids) < 2:  # nothing to score: an empty text, or a single token with no BOS before it
                results[i] = TokenScores(text, [], np.zeros(0), np.zeros(0), np.zeros(0), truncated=cut)
        order = sorted((i for i, r in enumerate(results) if r is None), key=lambda i: -len(encoded[i][0]))
        vocab = model.config.vocab_size
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        start = 0
        while start < len(order):
            longest = len(encoded[order[start]][0])
            rows = max(1, min(self.spec.batch_size, LOGIT_BUDGET // (longest * vocab)))
            batch = order[start:start + rows]
            start += rows
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                n = len(encoded[i][0])
                ids[row, :n] = torch.tensor(encoded[i][0])
                mask[row, :n] = 1
            with self._lock, torch.inference_mode():
                logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits
                for row, i in enumerate(batch):
                    seq, text, cut = encoded[i]
                    logp, mu, sigma = distribution_stats(logits[row, :len(seq) - 1])
                    target = torch.tensor(seq[1:], device=logp.device)
                    lp = logp.gather(1, target[:, None])[:, 0]
                    results[i] = TokenScores(text, list(seq[1:]), *(x.double().cpu().numpy() for x in (lp, mu, sigma)),
                                             truncated=cut)
                del logits
        return results

    def generate_from_ids(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, *,
                          stop_at_eos: bool = True) -> list[list[int]]:
        """Greedy continuation of each exact token-id prefix (left padding with an attention mask, no
        re-tokenization): only the new ids, at most `max_new_tokens`. With `stop_at_eos` a continuation ends with the
        first end-of-sequence token (kept, as `generate()` keeps it); without, exactly `max_new_tokens` are made."""
        import torch

        model, tok = self.model_and_tokenizer
        limit = self.context_length()
        for i, p in enumerate(prefixes):
            if not p:
                raise GenerationError(self.model_id, f"prefix {i} is empty: give at least one token id (e.g. BOS)")
            if len(p) + max_new_tokens > limit:
                raise GenerationError(self.model_id, f"prefix {i} of {len(p)} tokens + max_new_tokens "
                                      f"{max_new_tokens} exceeds the context length {limit}")
        if max_new_tokens <= 0:
            return [[] for _ in prefixes]
        eos = set(_as_list(model.generation_config.eos_token_id)) | {tok.eos_token_id}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                      pad_token_id=pad)
        if not stop_at_eos:
            kwargs["eos_token_id"] = None
        out: list[list[int]] = []
        for start in range(0, len(prefixes), self.spec.batch_size):
            chunk = [list(map(int, p)) for p in prefixes[start:start + self.spec.batch_size]]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            with self._lock, torch.inference_mode():
                seqs = model.generate(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **kwargs)
            for row in seqs[:, width:].tolist():
                end = next((j for j, t in enumerate(row) if t in eos), None) if stop_at_eos else None
                out.append(row[:end + 1] if end is not None else row)
        return out


def encode_for_scoring(tok, text: str, limit: int) -> tuple[list[int], str, bool]:
    """(token ids with a BOS where the tokenizer adds one, the text those ids cover, cut) for a sequence of at most
    `limit` tokens. The text is encoded without special tokens and the BOS prepended, so no EOS a tokenizer might
    append is ever scored."""
    probe_with, probe_without = tok("a").input_ids, tok("a", add_special_tokens=False).input_ids
    bos = [tok.bos_token_id] if (tok.bos_token_id is not None and len(probe_with) > len(probe_without)
                                 and probe_with[0] == tok.bos_token_id) else []
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError):  # a slow tokenizer: no offsets
        enc, offsets = tok(text, add_special_tokens=False), None
    ids = bos + list(enc["input_ids"])
    if len(ids) <= limit:
        return ids, text, False
    kept = limit - len(bos)
    cut = text[:offsets[kept - 1][1]] if offsets and kept > 0 else tok.decode(ids[len(bos):limit])
    return ids[:limit], cut, True


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]
