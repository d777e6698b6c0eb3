"""The tiny GPT's training settings and results, without torch: model sizes (`SIZES`), `TrainConfig`, `TrainResult`
(what train.json holds) and `TrainingDiverged`. Training itself is in train.py, which re-exports these; code that only
reads configs or results (Dagster definitions, reports) imports them from here and never loads torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cp_assets.lib.tinygpt.model import GPTConfig


@dataclass(frozen=True)
class ModelSize:
    """An architecture plus the batch size and token budget that suit it (TrainConfig may override both)."""

    name: str
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    seq_len: int
    batch_size: int  # sequences per step
    total_tokens: int

    def config(self, vocab_size: int | None = None) -> "GPTConfig":
        from cp_assets.lib.tinygpt.model import GPTConfig  # torch

        return GPTConfig(vocab_size=vocab_size or self.vocab_size, n_layer=self.n_layer, n_head=self.n_head,
                         n_embd=self.n_embd, seq_len=self.seq_len)


SIZES: dict[str, ModelSize] = {
    # 1.3M parameters (0.8M in the blocks), 256 steps of 2,048 tokens: ~50-60 s per run on 2 CPU cores
    # (10-13k tokens/s; benchmarks/train.py)
    "cpu": ModelSize("cpu", vocab_size=2048, n_layer=4, n_head=2, n_embd=128, seq_len=256, batch_size=8,
                     total_tokens=524_288),
    # for tests: 0.16M parameters, a few seconds per run
    "test": ModelSize("test", vocab_size=512, n_layer=2, n_head=1, n_embd=64, seq_len=128, batch_size=8,
                      total_tokens=98_304),
    # nanochat d12-like (~110M parameters with this vocabulary): CUDA + bf16 autocast
    "gpu": ModelSize("gpu", vocab_size=16384, n_layer=12, n_head=6, n_embd=768, seq_len=1024, batch_size=32,
                     total_tokens=100_000_000),
}


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["adamw", "muon"] = "muon"
    seed: int = 0
    total_tokens: int | None = None  # None: the size's budget (SFT: the size's / 4)
    batch_size: int | None = None  # sequences per step; None: the size's
    muon_lr: float = 0.02  # "muon": the block matrices
    adamw_matrix_lr: float = 0.003  # "adamw": the block matrices
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.01
    lr_scale: float = 1.0  # multiplies every learning rate
    adam_betas: tuple[float, float] = (0.8, 0.95)
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # nanochat warms Muon's momentum up from 0.85 over its first 300 steps
    muon_momentum_warmup_steps: int = 300
    weight_decay: float = 0.0  # on the block matrices (embedding and lm_head: none, as nanochat)
    warmup_frac: float = 0.0
    warmdown_frac: float = 0.5
    final_lr_frac: float = 0.0
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    # divergence: NaN/inf loss or grad norm, or a loss above max_loss_ratio x ln(vocab) (the loss of a uniform guess,
    # where training starts): the soft-capped logits keep an exploded model's loss finite (~20-30 nats); 0 = off
    max_loss_ratio: float = 2.0
    eval_every: int = 128  # steps (also at every checkpoint and at the end)
    eval_tokens: int = 16_384  # held-out tokens per evaluation (the first ones of the packed val stream)
    n_checkpoints: int = 6  # intermediate, evenly spaced (the final model comes on top)
    target_val_loss: float | None = None  # stop at the first evaluation at or below it (matched-loss comparisons)
    log_every: int = 20
    device: str | None = None  # None: CUDA when available
    threads: int | None = None  # torch CPU threads (set once per process); None: leave as is

    def __post_init__(self):
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError(f"optimizer must be 'adamw' or 'muon', not {self.optimizer!r}")
        if not 0 <= self.n_checkpoints <= 6:
            raise ValueError("n_checkpoints: between 0 and 6 intermediate checkpoints")
        if self.warmup_frac + self.warmdown_frac > 1 or min(self.warmup_frac, self.warmdown_frac) < 0:
            raise ValueError("warmup_frac + warmdown_frac must lie in [0, 1]")

    @classmethod
    def sft(cls, optimizer: str = "muon", seed: int = 0, **overrides) -> "TrainConfig":
        """Defaults for fine-tuning a base checkpoint: the base learning rates decayed linearly over the whole run
        (a quarter of the size's token budget). On GSM8K after the cpu base, full learning rates beat 0.3x and 0.1x
        (held-out loss 2.93 / 3.16 / 3.65 with AdamW, 3.02 / 3.38 / 4.04 with Muon)."""
        return cls(**{"optimizer": optimizer, "seed": seed, "warmdown_frac": 1.0, "eval_every": 32, **overrides})


class TrainingDiverged(RuntimeError):
    """The loss (or gradient norm) became NaN/inf or exploded; `last_good` is the last intermediate checkpoint
    written before, else the `init_from` checkpoint, else None."""

    def __init__(self, message: str, step: int, last_good: Path | None):
        super().__init__(message)
        self.step, self.last_good = step, last_good


@dataclass
class TrainResult:
    out_dir: str
    optimizer: str
    seed: int
    final_train_loss: float
    final_val_loss: float
    curve: list[dict]  # rows: step, tokens, train_loss (mean since the last row), val_loss (eval steps), lr, seconds
    tokens_per_s: float  # training steps only (evaluation and checkpoint writes excluded)
    seconds: float  # the whole call
    checkpoints: list[tuple[int, int, float, str]]  # (step, tokens, val_loss, path), final model last
    n_params: int
    steps: int = 0
    tokens: int = 0
    init_from: str | None = None
    meta: dict = field(default_factory=dict)  # configs, sizes of the data

    @classmethod
    def load(cls, out_dir: str | Path) -> "TrainResult":
        body = json.loads((Path(out_dir) / "train.json").read_text())
        body["checkpoints"] = [tuple(c) for c in body["checkpoints"]]
        return cls(**body)
