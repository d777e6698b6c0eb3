"""A small nanochat-style GPT trained here (cp_assets/lib/tinygpt/train.py), its byte-level BPE tokenizer, and checkpoints.

Model (as in karpathy/nanochat's gpt.py): token embedding, rotary position embeddings, QK-norm, RMSNorm without
learnable parameters (`F.rms_norm`), ReLU² MLP, no biases, an untied lm_head with zero init, logits soft-capped at
15*tanh(x/15), causal attention through `F.scaled_dot_product_attention`. `param_groups()` splits the transformer
blocks' 2-D matrices (for Muon) from the embedding and lm_head (for AdamW).

Generation is batched with left padding and a KV cache; it returns the new token ids and their logprobs under the
model's own (temperature 1) distribution, so they agree with teacher-forced scoring.

Checkpoint = a directory holding config.json (GPTConfig), model.safetensors, tokenizer.json and checksums.json (each
file's size and sha256, see cp_assets.lib.core.integrity). `GPT.save` writes into a temporary sibling directory and renames
it into place, so a crash never leaves a half checkpoint that loads; `GPT.load` checks the manifest first, so a file
truncated or overwritten later raises `integrity.CorruptFile` naming it instead of loading garbage weights.
The tokenizer is a byte-level BPE trained with HF `tokenizers`; one special token, `<|endoftext|>`, separates
documents in the training stream and is the BOS given to prompts and scored texts, and the end-of-sequence token.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cp_assets.lib.core import integrity

EOS = "<|endoftext|>"
SOFTCAP = 15.0
CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    seq_len: int

    def __post_init__(self):
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd {self.n_embd} must split into {self.n_head} heads of even size")


# ---------------------------------------------------------------------------------------------------------- model

def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.n_embd // cfg.n_head
        self.c_q = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.c_k = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.c_v = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, mask=None, cache: list | None = None):
        B, T, C = x.shape
        q, k, v = (lin(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2) for lin in (self.c_q, self.c_k,
                                                                                             self.c_v))
        q, k = _norm(_rotary(q, cos, sin)), _norm(_rotary(k, cos, sin))  # QK-norm after rotary, as nanochat
        if cache is not None:  # [k, v] of earlier positions, extended in place
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x, cos, sin, mask=None, cache=None):
        x = x + self.attn(_norm(x), cos, sin, mask, cache)
        return x + self.mlp(_norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        hd = config.n_embd // config.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        freqs = torch.outer(torch.arange(config.seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", freqs.cos(), persistent=False)  # [seq_len, hd/2]
        self.register_buffer("sin", freqs.sin(), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's init: embedding N(0, 1), linears N(0, 1/sqrt(fan_in) * min(1, sqrt(fan_out/fan_in))),
        zeros for lm_head and the output projections (so the initial loss is exactly ln(vocab))."""
        nn.init.normal_(self.wte.weight, std=1.0)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                fan_out, fan_in = m.weight.shape
                nn.init.normal_(m.weight, std=min(1.0, math.sqrt(fan_out / fan_in)) / math.sqrt(fan_in))
        nn.init.zeros_(self.lm_head.weight)
        for b in self.blocks:
            nn.init.zeros_(b.attn.c_proj.weight)
            nn.init.zeros_(b.mlp.c_proj.weight)

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """{"matrix": the blocks' 2-D weights (Muon), "embedding": [wte], "lm_head": [lm_head]} (AdamW)."""
        return {"matrix": [p for p in self.blocks.parameters()], "embedding": [self.wte.weight],
                "lm_head": [self.lm_head.weight]}

    def _logits(self, idx, pos=None, mask=None, caches=None):
        cos, sin = (self.cos[: idx.size(1)], self.sin[: idx.size(1)]) if pos is None else (self.cos[pos],
                                                                                          self.sin[pos])
        if pos is not None:  # per-row positions [B, T] -> [B, 1, T, hd/2]
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        x = _norm(self.wte(idx))
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, mask, None if caches is None else caches[i])
        logits = self.lm_head(_norm(x)).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        """Logits [B, T, V] (float32, soft-capped), or with `targets` the cross-entropy (targets -1 are ignored)."""
        if idx.size(1) > self.config.seq_len:
            raise ValueError(f"sequence of {idx.size(1)} tokens exceeds seq_len {self.config.seq_len}")
        logits = self._logits(idx)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)

    @torch.inference_mode()
    def generate(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | Sequence[int] | None = None, eos_id: int | None = None,
                 should_stop: Callable[[int, list[int]], bool] | None = None
                 ) -> tuple[list[list[int]], list[list[float]]]:
        """New token ids per prefix and log p(token | prefix, earlier new tokens) at temperature 1. Greedy when
        temperature == 0, else sampling (nucleus `top_p`), each row from its own torch.Generator seeded with
        `seed[row]` (an int seed: seed + row), so a row's sample does not depend on what it is batched with. A row
        ends after `eos_id` (kept) or when `should_stop(row, new_ids)` says so."""
        if any(len(p) == 0 for p in prefixes):
            raise ValueError("every prefix needs at least one token (e.g. the BOS/<|endoftext|> id)")
        longest = max((len(p) for p in prefixes), default=0)
        if longest + max_new_tokens > self.config.seq_len:
            raise ValueError(f"prefix of {longest} tokens + {max_new_tokens} new tokens exceeds seq_len "
                             f"{self.config.seq_len}")
        B, dev = len(prefixes), self.device
        out: list[list[int]] = [[] for _ in range(B)]
        lps: list[list[float]] = [[] for _ in range(B)]
        if B == 0 or max_new_tokens <= 0:
            return out, lps
        seeds = [(seed or 0) + i for i in range(B)] if seed is None or isinstance(seed, int) else list(seed)
        gens = [torch.Generator(device=dev).manual_seed(int(s)) for s in seeds] if temperature > 0 else []
        idx = torch.zeros(B, longest, dtype=torch.long, device=dev)
        valid = torch.zeros(B, longest, dtype=torch.bool, device=dev)
        for i, p in enumerate(prefixes):  # left padding
            idx[i, longest - len(p):] = torch.tensor(list(p), dtype=torch.long)
            valid[i, longest - len(p):] = True
        pos = (valid.long().cumsum(1) - 1).clamp_min(0)
        causal = torch.ones(longest, longest, dtype=torch.bool, device=dev).tril()
        eye = torch.eye(longest, dtype=torch.bool, device=dev)
        mask = (causal & (valid[:, None, :] | eye)).unsqueeze(1)  # pad queries see themselves: no all-masked rows
        caches = [[] for _ in self.blocks]
        logits = self._logits(idx, pos, mask, caches)[:, -1]
        done = [False] * B
        for step in range(max_new_tokens):
            logp = torch.log_softmax(logits, dim=-1)
            if temperature == 0:
                tok = logp.argmax(-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                if top_p < 1.0:
                    sp, si = probs.sort(-1, descending=True)
                    keep = (sp.cumsum(-1) - sp) < top_p
                    probs = torch.zeros_like(probs).scatter(-1, si, sp * keep)
                tok = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)])
            chosen = logp.gather(-1, tok[:, None]).squeeze(-1).tolist()
            for i, t in enumerate(tok.tolist()):
                if done[i]:
                    continue
                out[i].append(t)
                lps[i].append(chosen[i])
                if (eos_id is not None and t == eos_id) or (should_stop is not None and should_stop(i, out[i])):
                    done[i] = True
            if all(done) or step == max_new_tokens - 1:
                break
            valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool, device=dev)], dim=1)
            pos = pos[:, -1:] + 1
            logits = self._logits(tok[:, None], pos, valid[:, None, None, :], caches)[:, -1]
        return out, lps

    def generate_ids(self, prefixes: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 0.0,
                     seed: int | None = None, eos_id: int | None = None) -> list[list[int]]:
        """New token ids per prefix (greedy when temperature == 0); see `generate`."""
        return self.generate(prefixes, max_new_tokens, temperature=temperature, seed=seed, eos_id=eos_id)[0]

    # ---------------------------------------------------------------------------------------------- checkpoints

    def save(self, path: str | Path, tokenizer: "BPETokenizer | None" = None,
             extra: dict[str, dict] | None = None) -> Path:
        """Write config.json, model.safetensors (+ tokenizer.json, + `extra` json files) into a temporary sibling
        directory, then rename it to `path` (an existing checkpoint there is replaced)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            self.write_files(tmp, tokenizer, extra)
            publish_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return path

    def write_files(self, directory: Path, tokenizer: "BPETokenizer | None" = None,
                    extra: dict[str, dict] | None = None) -> None:
        """The checkpoint files, written in place (config.json, then the sha256 manifest last); `save` makes this
        atomic."""
        from safetensors.torch import save_file

        directory = Path(directory)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        if tokenizer is not None:
            tokenizer.save(directory / TOKENIZER)
        for name, body in (extra or {}).items():
            write_json(directory / name, body)
        write_json(directory / CONFIG, asdict(self.config))
        written = [WEIGHTS, CONFIG, *(extra or {})] + ([TOKENIZER] if tokenizer is not None else [])
        integrity.write_manifest(directory, written)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None) -> "GPT":
        """A checkpoint directory -> model in eval mode on `device` (default CPU). Raises `integrity.CorruptFile`
        naming the file when the checkpoint is damaged (see `verify_checkpoint`)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG).exists() or not (path / WEIGHTS).exists():
            raise FileNotFoundError(f"{path}: not a tiny GPT checkpoint (needs {CONFIG} and {WEIGHTS})")
        verify_checkpoint(path)
        try:
            config = GPTConfig(**json.loads((path / CONFIG).read_text()))
        except (ValueError, TypeError) as exc:
            raise integrity.CorruptFile(path / CONFIG, f"not a GPTConfig ({exc})") from None
        model = cls(config)
        try:
            model.load_state_dict(load_file(str(path / WEIGHTS)))
        except Exception as exc:  # noqa: BLE001 - safetensors' own errors, missing/mis-shaped tensors
            raise integrity.CorruptFile(path / WEIGHTS, f"cannot load the weights ({exc})") from None
        return model.to(device or "cpu").eval()


def verify_checkpoint(path: str | Path) -> None:
    """Raise `integrity.CorruptFile` (naming the file) unless the checkpoint's files match its sha256 manifest;
    checkpoints written before manifests existed get the structural check of model.safetensors instead."""
    path = Path(path)
    if integrity.has_manifest(path):
        integrity.verify_manifest(path, required=(CONFIG, WEIGHTS))
    else:
        integrity.check_safetensors(path / WEIGHTS)


def publish_dir(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; an existing `dst` is moved aside first and deleted after (directories cannot be
    renamed over non-empty ones). A crash in between leaves no `dst`, never a mix of the two."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


def write_json(path: Path, body) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------------ tokenizer

class BPETokenizer:
    """A byte-level BPE (HF `tokenizers`) with one special token, `<|endoftext|>` = BOS = EOS = separator."""

    def __init__(self, tok):
        self._tok = tok
        eos = tok.token_to_id(EOS)
        if eos is None:
            raise ValueError(f"tokenizer has no {EOS} token")
        self.eos_id = self.bos_id = eos

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json at `path` (a file path, or a directory to put tokenizer.json in)."""
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER
        tmp = path.with_name(f".{path.name}.tmp")
        self._tok.save(str(tmp))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        path = Path(path)
        return cls(Tokenizer.from_file(str(path / TOKENIZER if path.is_dir() else path)))


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path | None = None) -> BPETokenizer:
    """Train a byte-level BPE of `vocab_size` tokens (256 byte tokens + merges + `<|endoftext|>`, id 0) on `texts`;
    saved as tokenizer.json at `path` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    bpe = BPETokenizer(tok)
    if path is not None:
        bpe.save(path)
    return bpe


def load_checkpoint(path: str | Path, device: str | torch.device | None = None) -> tuple[GPT, BPETokenizer]:
    """(model, tokenizer) of a checkpoint directory; `integrity.CorruptFile` when a file is damaged."""
    model = GPT.load(path, device)
    try:
        return model, BPETokenizer.load(Path(path) / TOKENIZER)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - `tokenizers` raises a bare Exception for a malformed file
        raise integrity.CorruptFile(Path(path) / TOKENIZER, f"cannot load the tokenizer ({exc})") from None
