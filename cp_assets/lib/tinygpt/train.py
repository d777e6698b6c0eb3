"""Train the tiny GPT (cp_assets/lib/tinygpt/model.py) from lists of texts: base pretraining and SFT, AdamW or Muon.

`train(train_texts, val_texts, "cpu", TrainConfig(optimizer="muon", seed=0), out_dir)` packs the documents into one
token stream (`<|endoftext|>` before each document), cuts it into windows of seq_len + 1 tokens, and draws batches
from a per-epoch permutation of those windows made by a torch.Generator seeded with `seed` alone: both optimizers see
the same data in the same order, from the same initial weights, under the same token budget and schedule (nanochat's:
optional linear warmup, constant, then a linear warmdown to `final_lr_frac`).

Optimizers, as nanochat: "muon" = `torch.optim.Muon` on the transformer blocks' 2-D matrices (momentum warmed up
0.85 -> 0.95 over 300 steps) + AdamW on the embedding and lm_head; "adamw" = AdamW on everything (the matrices at
`adamw_matrix_lr`). Defaults tuned on the `cpu` size (FineWeb-Edu + Austen + Shakespeare + inaugural addresses, 524k
tokens): embedding 0.2, lm_head 0.01, matrices 0.02 (Muon) / 0.003 (AdamW), betas (0.8, 0.95), no weight decay,
warmdown over the second half. 3 seeds each: val loss AdamW 4.25 +- 0.03, Muon 4.29 +- 0.04 nats/token; after SFT on
GSM8K 2.95 / 2.93 (benchmarks/train.py).

Output directory (replaced as a whole when a run finishes, so old and new checkpoints never mix):
    out_dir/config.json, model.safetensors, tokenizer.json   the final model (a checkpoint `TinyBackend` loads)
    out_dir/train.json                                      configs, the loss curve, timings, checkpoints
    out_dir/step_000120/ ...                                up to 6 intermediate checkpoints, each with val.json
A run whose loss or gradient norm turns NaN/inf, or whose loss exceeds 2 x ln(vocab), stops: out_dir then holds the
good intermediate checkpoints and failure.json (no final model), and `TrainingDiverged` names the optimizer, seed,
step and last good checkpoint (else the `init_from` checkpoint).
`init_from=<checkpoint>` fine-tunes (SFT) that model with its tokenizer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch

from cp_assets.lib.tinygpt.config import (  # noqa: F401  (re-exported: the training API in one import)
    SIZES,
    ModelSize,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
)
from cp_assets.lib.tinygpt.model import (
    GPT,
    BPETokenizer,
    GPTConfig,
    publish_dir,
    train_tokenizer,
    write_json,
)
from cp_assets.lib.tinygpt.progress import Progress, on_progress, report  # noqa: F401  (on_progress re-exported)


def pack(tokenizer: BPETokenizer, texts: Sequence[str]) -> torch.Tensor:
    """One int64 stream: `<|endoftext|>` + tokens for each document."""
    ids: list[int] = []
    for doc in tokenizer.encode_batch([t for t in texts if t]):
        ids.append(tokenizer.eos_id)
        ids.extend(doc)
    return torch.tensor(ids, dtype=torch.long)


def windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[N, seq_len + 1] training windows, stride seq_len (a tail that does not fill one is dropped)."""
    n = (len(stream) - 1) // seq_len
    if n < 1:
        raise ValueError(f"only {len(stream)} training tokens: need more than seq_len {seq_len}")
    return stream[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)


def lr_multiplier(step: int, total: int, warmup_frac: float, warmdown_frac: float, final_frac: float) -> float:
    """nanochat's schedule: linear warmup, constant, linear warmdown to `final_frac` at the last step."""
    warmup, warmdown = round(warmup_frac * total), round(warmdown_frac * total)
    if step < warmup:
        return (step + 1) / warmup
    if step < total - warmdown:
        return 1.0
    progress = (total - step) / max(warmdown, 1)
    return progress + (1 - progress) * final_frac


def make_optimizers(model: GPT, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    groups, s = model.param_groups(), cfg.lr_scale
    adam = [{"params": groups["embedding"], "lr": cfg.embedding_lr * s, "weight_decay": 0.0},
            {"params": groups["lm_head"], "lr": cfg.unembedding_lr * s, "weight_decay": 0.0}]
    kw = dict(betas=cfg.adam_betas, eps=1e-10)
    if cfg.optimizer == "adamw":
        adam.append({"params": groups["matrix"], "lr": cfg.adamw_matrix_lr * s, "weight_decay": cfg.weight_decay})
        opts = [torch.optim.AdamW(adam, **kw)]
    else:
        opts = [torch.optim.AdamW(adam, **kw),
                torch.optim.Muon(groups["matrix"], lr=cfg.muon_lr * s, weight_decay=cfg.weight_decay,
                                 momentum=cfg.muon_momentum, nesterov=True)]
    for opt in opts:
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    return opts


@torch.no_grad()
def evaluate(model: GPT, val: torch.Tensor, batch_size: int, autocast) -> float:
    """Mean nats per token over the val windows (the last one padded, its padding ignored)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(val), batch_size):
        chunk = val[i:i + batch_size].to(model.device)
        x, y = chunk[:, :-1].clamp_min(0), chunk[:, 1:]  # padding: -1 targets (ignored), inputs any valid id
        with autocast():
            total += float(model(x, y, reduction="sum"))
        count += int((y >= 0).sum())
    model.train()
    return total / max(count, 1)


def val_windows(stream: torch.Tensor, seq_len: int, max_tokens: int) -> torch.Tensor:
    """[N, seq_len + 1] windows over the first `max_tokens` + 1 tokens, the last one padded with -1."""
    if len(stream) < 2:
        raise ValueError("no validation tokens: give some val_texts")
    stream = stream[: max_tokens + 1]
    n = max(1, math.ceil((len(stream) - 1) / seq_len))
    out = torch.full((n, seq_len + 1), -1, dtype=torch.long)
    for i in range(n):
        piece = stream[i * seq_len: i * seq_len + seq_len + 1]
        out[i, : len(piece)] = piece
    return out


def train(train_texts: Sequence[str], val_texts: Sequence[str], size_or_cfg: str | ModelSize | GPTConfig | None,
          cfg: TrainConfig, out_dir: str | Path, *, init_from: str | Path | None = None,
          tokenizer: BPETokenizer | None = None, log: Callable[[str], None] = print) -> TrainResult:
    """Train (or, with `init_from`, fine-tune) a tiny GPT; see the module docstring for what lands in out_dir."""
    t_start = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    size = SIZES[size_or_cfg] if isinstance(size_or_cfg, str) else size_or_cfg
    tag = f"[{cfg.optimizer} seed {cfg.seed}{' sft' if init_from else ''}]"
    if cfg.threads and torch.get_num_threads() != cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if init_from is not None:
        init_from = Path(init_from).resolve()
        size = size or _size_of(init_from)
    model, tokenizer = _model_and_tokenizer(train_texts, size, init_from, tokenizer, cfg.seed, device, tag, log)
    config = model.config
    model.train()

    base = size if isinstance(size, ModelSize) else None
    batch_size = cfg.batch_size or (base.batch_size if base else 16)
    budget = cfg.total_tokens or ((base.total_tokens // (4 if init_from else 1)) if base else 1_000_000)
    data = windows(pack(tokenizer, train_texts), config.seq_len)
    val = val_windows(pack(tokenizer, val_texts), config.seq_len, cfg.eval_tokens)
    per_step = batch_size * config.seq_len
    total_steps = max(1, budget // per_step)
    ckpt_steps = sorted({round(total_steps * i / (cfg.n_checkpoints + 1)) for i in range(1, cfg.n_checkpoints + 1)}
                        - {0, total_steps})
    opts = make_optimizers(model, cfg)
    uniform = math.log(config.vocab_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    log(f"{tag} {model.n_params():,} params {config}; {len(data):,} windows ({len(data) * config.seq_len:,} tokens)"
        f", {total_steps} steps x {per_step:,} tokens = {total_steps * per_step / len(data) / config.seq_len:.2f} "
        f"epochs; val {int((val[:, 1:] >= 0).sum()):,} tokens; device {device}")

    staging = out_dir.with_name(f".{out_dir.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    _remove_stale_staging(out_dir)
    staging.mkdir(parents=True)
    meta = {"train_config": asdict(cfg), "model_config": asdict(config), "size": asdict(base) if base else None,
            "train_docs": len(train_texts), "val_docs": len(val_texts), "batch_size": batch_size,
            "train_window_tokens": len(data) * config.seq_len, "device": str(device),
            "threads": torch.get_num_threads()}
    meta = json.loads(json.dumps(meta))  # as train.json will hold it (tuples become lists)
    curve: list[dict] = []
    checkpoints: list[tuple[int, int, float, str]] = []
    losses: list[float] = []  # since the last curve row
    order, recent, train_s, step, reached = torch.empty(0, dtype=torch.long), [], 0.0, 0, False
    try:
        curve.append(_row(0, 0, None, evaluate(model, val, batch_size, autocast), opts, t_start))
        log(f"{tag} step 0/{total_steps} val {curve[0]['val_loss']:.4f}")
        report(Progress(tag, 0, total_steps, 0, None, curve[0]["val_loss"], 0.0))
        for step in range(1, total_steps + 1):
            t0 = time.perf_counter()
            if len(order) < batch_size:  # a fresh permutation per epoch (leftover windows start the next batch)
                order = torch.cat([order, torch.randperm(len(data), generator=gen)])
            batch, order = data[order[:batch_size]].to(device, non_blocking=True), order[batch_size:]
            lrm = lr_multiplier(step - 1, total_steps, cfg.warmup_frac, cfg.warmdown_frac, cfg.final_lr_frac)
            loss = _optimizer_step(model, opts, batch, lrm, cfg, autocast, step, cap=cfg.max_loss_ratio * uniform)
            train_s += time.perf_counter() - t0
            recent, val_loss = (recent + [loss])[-10:], None
            losses.append(loss)
            if step % cfg.eval_every == 0 or step in ckpt_steps or step == total_steps:
                val_loss = evaluate(model, val, batch_size, autocast)
                if not math.isfinite(val_loss) or (cfg.max_loss_ratio and val_loss > cfg.max_loss_ratio * uniform):
                    raise _Diverged(f"val loss {val_loss} at step {step}")
            if val_loss is not None or step % cfg.log_every == 0:
                curve.append(_row(step, step * per_step, sum(losses) / len(losses), val_loss, opts, t_start))
                losses = []
                log(f"{tag} step {step}/{total_steps} tokens {step * per_step:,} loss {loss:.4f}"
                    + (f" val {val_loss:.4f}" if val_loss is not None else "")
                    + f" lr x{lrm:.3f} {step * per_step / train_s:,.0f} tok/s")
            report(Progress(tag, step, total_steps, step * per_step, loss, val_loss, step * per_step / train_s))
            if step in ckpt_steps:
                path = staging / f"step_{step:06d}"
                model.save(path, tokenizer, extra={"val.json": {"step": step, "tokens": step * per_step,
                                                                "val_loss": val_loss, "train_loss": loss}})
                checkpoints.append((step, step * per_step, val_loss, str(out_dir / path.name)))
            if val_loss is not None and cfg.target_val_loss is not None and val_loss <= cfg.target_val_loss:
                log(f"{tag} val {val_loss:.4f} <= target {cfg.target_val_loss:g}: stopping at step {step}")
                reached = True
                break
    except _Diverged as exc:
        last = Path(checkpoints[-1][3]) if checkpoints else init_from
        write_json(staging / "failure.json", {"step": step, "reason": str(exc), "optimizer": cfg.optimizer,
                                              "seed": cfg.seed, "last_good_checkpoint": str(last) if last else None,
                                              "checkpoints": checkpoints, "curve": curve, "meta": meta})
        publish_dir(staging, out_dir)
        raise TrainingDiverged(
            f"training diverged ({cfg.optimizer}, seed {cfg.seed}): {exc}; last good checkpoint: "
            f"{last or 'none (no intermediate checkpoint was written before the divergence)'}; "
            f"see {out_dir / 'failure.json'}", step, last) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    final_val = curve[-1]["val_loss"]
    meta |= {"planned_steps": total_steps, "reached_target": reached}
    total_steps = step
    checkpoints.append((total_steps, total_steps * per_step, final_val, str(out_dir)))
    result = TrainResult(out_dir=str(out_dir), optimizer=cfg.optimizer, seed=cfg.seed,
                         final_train_loss=sum(recent) / len(recent), final_val_loss=final_val, curve=curve,
                         tokens_per_s=total_steps * per_step / train_s, seconds=0.0, checkpoints=checkpoints,
                         n_params=model.n_params(), steps=total_steps, tokens=total_steps * per_step,
                         init_from=str(init_from) if init_from else None, meta=meta)
    result.seconds = time.perf_counter() - t_start
    model.write_files(staging, tokenizer, extra={"train.json": asdict(result)})
    publish_dir(staging, out_dir)
    log(f"{tag} done: val {final_val:.4f}, train {result.final_train_loss:.4f}, {result.tokens_per_s:,.0f} tok/s, "
        f"{result.seconds:.1f} s -> {out_dir}")
    return result


class _Diverged(Exception):
    pass


def _optimizer_step(model: GPT, opts, batch, lrm: float, cfg: TrainConfig, autocast, step: int, cap: float) -> float:
    """One step at `lrm` x the initial learning rates; the loss, or `_Diverged` (the update is then not applied)."""
    frac = min(1.0, (step - 1) / cfg.muon_momentum_warmup_steps) if cfg.muon_momentum_warmup_steps else 1.0
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lrm
            if isinstance(opt, torch.optim.Muon):
                g["momentum"] = cfg.muon_momentum_start + frac * (cfg.muon_momentum - cfg.muon_momentum_start)
    with autocast():
        loss = model(batch[:, :-1], batch[:, 1:])
    loss.backward()
    gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
    value = float(loss.detach())
    if not (math.isfinite(value) and math.isfinite(gnorm)):
        raise _Diverged(f"loss {value}, grad norm {gnorm} at step {step}")
    if cap and value > cap:
        raise _Diverged(f"loss {value:.3f} at step {step} is above {cfg.max_loss_ratio:g} x ln(vocab) = {cap:.3f}")
    for opt in opts:
        opt.step()
    model.zero_grad(set_to_none=True)
    return value


def _model_and_tokenizer(texts, size, init_from: Path | None, tokenizer, seed: int, device, tag: str, log):
    """The checkpoint's model and tokenizer (SFT), or a fresh model seeded with `seed` (the tokenizer given, or
    trained on `texts`)."""
    if init_from is not None:
        if tokenizer is not None:
            raise ValueError("init_from reuses the checkpoint's tokenizer: do not pass `tokenizer` too")
        model, tokenizer = GPT.load(init_from, device), BPETokenizer.load(init_from)
        arch = size.config(model.config.vocab_size) if isinstance(size, ModelSize) else size
        if arch is not None and arch != model.config:
            raise ValueError(f"{init_from} holds {model.config}, not the requested {arch}")
        return model, tokenizer
    if size is None:
        raise ValueError("give a size (name, ModelSize or GPTConfig) or init_from")
    if tokenizer is None:
        t0 = time.perf_counter()
        tokenizer = train_tokenizer(texts, size.vocab_size)
        log(f"{tag} tokenizer: {tokenizer.vocab_size} tokens trained in {time.perf_counter() - t0:.1f} s")
    config = size.config(tokenizer.vocab_size) if isinstance(size, ModelSize) else size
    if config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"config vocab_size {config.vocab_size} != the tokenizer's {tokenizer.vocab_size}")
    torch.manual_seed(seed)
    return GPT(config).to(device), tokenizer


def _size_of(checkpoint: Path) -> ModelSize | None:
    """The ModelSize a checkpoint was trained at (its train.json), for the batch size and token budget of SFT."""
    try:
        body = json.loads((checkpoint / "train.json").read_text())["meta"]["size"]
        return ModelSize(**body) if body else None
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _row(step, tokens, train_loss, val_loss, opts, t_start) -> dict:
    return {"step": step, "tokens": tokens, "train_loss": train_loss, "val_loss": val_loss,
            "lr": opts[-1].param_groups[-1]["lr"], "seconds": round(time.perf_counter() - t_start, 3)}


def _remove_stale_staging(out_dir: Path) -> None:
    """Staging directories of runs that crashed (their process is gone)."""
    for old in out_dir.parent.glob(f".{out_dir.name}.staging-*"):
        try:
            os.kill(int(old.name.rsplit("staging-", 1)[1].split("-")[0]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass
