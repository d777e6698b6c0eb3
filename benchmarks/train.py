"""Training benchmark: tokens/s of the tiny GPT (cp_assets/lib/tinygpt/train.py) with AdamW and with Muon, and the time of the
default comparison (2 optimizers x 3 seeds, a base run each plus an SFT run from it).

Data, the same for every run: pretraining texts = the 150 FineWeb-Edu documents, the 8 Shakespeare plays, the 59
inaugural addresses and the Pride and Prejudice chapters (shuffled with seed 0; 15 held out for the val loss), one
BPE of the size's vocabulary trained on them once and shared by every run; SFT texts = GSM8K train conversations
(`User: {question}\\nAssistant: {answer}`, the first 3,000; 200 held out).

By default it trains seed 0 of each optimizer (base, then SFT from that base) at the default `cpu` size and projects
the full comparison from those timings; `--full` runs all of it (2 x `--seeds` x (base + SFT), ~8-10 min on 2 cores)
and prints the val losses per seed. tokens/s counts training steps only (forward, backward, optimizer); `wall s` is
the whole run (tokenizing, evaluations every 64 steps and at the 6 checkpoints, writing checkpoints). Other processes
on a shared machine skew the figures: each row prints the 1-minute load average. With CUDA, `--gpu-steps` steps of
the `gpu` size (12 x 768, seq 1024, bf16 autocast) per optimizer are timed too.

    .venv/bin/python benchmarks/train.py [--full] [--seeds 3] [--threads 0] [--png curves.png]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import _common as C

OPTIMIZERS = ("adamw", "muon")


def read_jsonl(data: Path, rel: str) -> list[dict]:
    with gzip.open(data / rel, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_texts(data: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    docs = [r["text"] for r in read_jsonl(data, "fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz")]
    docs += [r["text"] for r in read_jsonl(data, "public_domain_texts/shakespeare_8_plays.jsonl.gz")]
    docs += [r["text"] for r in read_jsonl(data, "public_domain_texts/us_inaugural_addresses.jsonl.gz")]
    with gzip.open(data / "public_domain_texts/austen_pride_and_prejudice.txt.gz", "rt", encoding="utf-8") as f:
        docs += [c for c in re.split(r"\n(?=Chapter \d+)", f.read()) if c.strip()]
    random.Random(0).shuffle(docs)
    sft = [f"User: {r['question']}\nAssistant: {r['answer']}" for r in read_jsonl(data, "gsm8k/train.jsonl.gz")[:3000]]
    return docs[15:], docs[:15], sft[200:], sft[:200]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="run the whole comparison (2 optimizers x seeds x base+SFT)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per optimizer in the comparison (default 3)")
    ap.add_argument("--tokens", type=int, default=0, help="base token budget (default: the cpu size's, 524,288)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's own, one per core)")
    ap.add_argument("--gpu-steps", type=int, default=30, help="timed steps of the gpu size per optimizer (CUDA only)")
    ap.add_argument("--gpu-size-on-cpu", type=int, default=0, metavar="STEPS",
                    help="instead of the cpu size: STEPS steps of the gpu size's model (12 x 768, seq 1024, vocab "
                         "16,384) per optimizer on this CPU, 2 sequences a step, fp32 (where no GPU is lent)")
    ap.add_argument("--png", default="", help="write the loss curves of the runs to this PNG")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (checkpoints)")
    args = ap.parse_args()

    import torch

    from cp_assets.lib.core import settings
    from cp_assets.lib.tinygpt.model import train_tokenizer
    from cp_assets.lib.tinygpt.plots import loss_curves_png
    from cp_assets.lib.tinygpt.train import SIZES, TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    C.install_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="cprox_bench_train_"))
    try:
        train_texts, val_texts, sft_train, sft_val = load_texts(settings.data_dir())
        if args.gpu_size_on_cpu:
            gpu_size_on_cpu(args.gpu_size_on_cpu, train_texts, val_texts, tmp)
            return 0
        size = SIZES["cpu"]
        print("\n".join(C.machine_lines({"torch": f"{torch.__version__}, {torch.get_num_threads()} threads"})))
        with C.Timer() as t_tok:
            tok = train_tokenizer(train_texts, size.vocab_size)
        n_tok = sum(len(ids) for ids in tok.encode_batch(train_texts))
        print(f"data       {len(train_texts)} docs ({sum(map(len, train_texts)):,} chars, {n_tok:,} tokens) train, "
              f"{len(val_texts)} val; SFT {len(sft_train):,} GSM8K conversations, {len(sft_val)} val; BPE "
              f"{tok.vocab_size} tokens trained in {t_tok.s:.1f} s")
        print(f"size cpu   {size}\n")

        seeds = range(args.seeds) if args.full else range(1)
        rows, results = [], {}
        totals = {opt: {"base": [], "sft": []} for opt in OPTIMIZERS}
        t_all = time.perf_counter()
        for seed in seeds:
            for opt in OPTIMIZERS:
                cfg = TrainConfig(optimizer=opt, seed=seed, total_tokens=args.tokens or None)
                base = train(train_texts, val_texts, "cpu", cfg, tmp / f"{opt}-s{seed}", tokenizer=tok,
                             log=lambda _: None)
                sft = train(sft_train, sft_val, None, TrainConfig.sft(opt, seed), tmp / f"{opt}-s{seed}-sft",
                            init_from=base.out_dir, log=lambda _: None)
                for kind, r in (("base", base), ("sft", sft)):
                    totals[opt][kind].append(r)
                    results[f"{opt} s{seed}{' sft' if kind == 'sft' else ''}"] = r
                    first_val = r.curve[0]["val_loss"]
                    rows.append([opt, seed, kind, f"{r.n_params:,}", r.steps, f"{r.tokens:,}", f"{r.tokens_per_s:,.0f}",
                                 f"{r.seconds:.1f}", f"{first_val:.3f}", f"{r.final_val_loss:.3f}",
                                 f"{r.final_train_loss:.3f}", f"{os.getloadavg()[0]:.2f}"])
                    print(f"  {opt} seed {seed} {kind}: val {first_val:.3f} -> {r.final_val_loss:.3f}, "
                          f"{r.tokens_per_s:,.0f} tok/s, {r.seconds:.1f} s", flush=True)
        actual = time.perf_counter() - t_all
        print()
        print(C.table(["optimizer", "seed", "run", "params", "steps", "tokens", "tok/s", "wall s", "val@0",
                       "val end", "train end", "load1"], rows))

        print("\nper optimizer (mean over seeds; SFT val loss is on held-out GSM8K)")
        summary = []
        for opt in OPTIMIZERS:
            b, s = totals[opt]["base"], totals[opt]["sft"]
            summary.append([opt, len(b), f"{statistics.mean(r.tokens_per_s for r in b):,.0f}",
                            f"{statistics.mean(r.seconds for r in b):.1f}", _mean_sd([r.final_val_loss for r in b]),
                            f"{statistics.mean(r.tokens_per_s for r in s):,.0f}",
                            f"{statistics.mean(r.seconds for r in s):.1f}", _mean_sd([r.final_val_loss for r in s])])
        print(C.table(["optimizer", "seeds", "base tok/s", "base s", "base val", "SFT tok/s", "SFT s", "SFT val"],
                      summary))

        per_seed = sum(statistics.mean(r.seconds for r in totals[o][k]) for o in OPTIMIZERS for k in ("base", "sft"))
        full_n = args.seeds
        if args.full:
            print(f"\nfull comparison (2 optimizers x {full_n} seeds x base + SFT): actual {actual:.0f} s "
                  f"({actual / 60:.1f} min), + tokenizer {t_tok.s:.1f} s")
        else:
            print(f"\nfull comparison (2 optimizers x {full_n} seeds x base + SFT): projected "
                  f"{per_seed * full_n:.0f} s ({per_seed * full_n / 60:.1f} min) from this seed's runs "
                  f"({per_seed:.0f} s), + tokenizer {t_tok.s:.1f} s once; --full runs it")

        if args.png:
            print(f"loss curves: {loss_curves_png(results, args.png)}")
        gpu_section(args, train_texts, val_texts, tmp)
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _gpu_size_runs(steps: int, batch_size: int, device: str, tok, train_texts, val_texts, tmp: Path) -> list:
    """(optimizer, TrainResult) of the `gpu` size for `steps` steps of `batch_size` sequences per optimizer, with a
    validation at step 0 and at the end (no checkpoints)."""
    from cp_assets.lib.tinygpt.train import SIZES, TrainConfig, train

    size = SIZES["gpu"]
    out = []
    for opt in OPTIMIZERS:
        cfg = TrainConfig(optimizer=opt, batch_size=batch_size, total_tokens=steps * batch_size * size.seq_len,
                          eval_every=10**9, n_checkpoints=0, eval_tokens=8 * size.seq_len, device=device)
        out.append((opt, train(train_texts, val_texts, "gpu", cfg, tmp / f"gpu-{device}-{opt}", tokenizer=tok,
                               log=lambda _: None)))
    return out


def _run_row(opt: str, r) -> list:
    return [opt, f"{r.n_params:,}", r.steps, f"{r.tokens:,}", f"{r.tokens_per_s:,.0f}", f"{r.seconds:.1f}"]


def gpu_section(args, train_texts, val_texts, tmp: Path) -> None:
    import torch

    from cp_assets.lib.tinygpt.model import train_tokenizer
    from cp_assets.lib.tinygpt.train import SIZES

    if not torch.cuda.is_available():
        print("\ngpu size: skipped (no CUDA on this machine)")
        return
    size = SIZES["gpu"]
    tok = train_tokenizer(train_texts, size.vocab_size)
    rows = [_run_row(opt, r) + [f"{r.final_val_loss:.3f}", f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"]
            for opt, r in _gpu_size_runs(args.gpu_steps, size.batch_size, "cuda", tok, train_texts, val_texts, tmp)]
    print(f"\ngpu size {size} on {torch.cuda.get_device_name()}, bf16 autocast")
    print(C.table(["optimizer", "params", "steps", "tokens", "tok/s", "wall s", "val end", "peak GiB"], rows))


def gpu_size_on_cpu(steps: int, train_texts, val_texts, tmp: Path) -> None:
    """The `gpu` size's model and both optimizers, run for `steps` steps on the CPU at 2 sequences a step (the size's
    batch is 32): that the architecture builds, both optimizers step it and the loss falls, and at what speed; not
    the size's budget (100M tokens), which needs a GPU."""
    import resource

    import torch

    from cp_assets.lib.tinygpt.model import train_tokenizer
    from cp_assets.lib.tinygpt.train import SIZES

    size = SIZES["gpu"]
    print("\n".join(C.machine_lines({"torch": f"{torch.__version__}, {torch.get_num_threads()} threads"})))
    with C.Timer() as t_tok:
        tok = train_tokenizer(train_texts, size.vocab_size)
    print(f"size gpu   {size}; BPE {tok.vocab_size} tokens trained in {t_tok.s:.1f} s; on the CPU: {steps} steps "
          f"of 2 x {size.seq_len} tokens per optimizer, fp32, validation on the first {8 * size.seq_len:,} held-out "
          f"tokens at step 0 and at the end\n")
    rows = []
    for opt, r in _gpu_size_runs(steps, 2, "cpu", tok, train_texts, val_texts, tmp):
        vals = [row["val_loss"] for row in r.curve if row.get("val_loss") is not None]
        rows.append(_run_row(opt, r) + [f"{vals[0]:.3f}", f"{vals[-1]:.3f}", C.loadavg()])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(C.table(["optimizer", "params", "steps", "tokens", "tok/s", "wall s", "val step 0", "val end", "load"],
                  rows))
    print(f"peak RSS of this process {peak:.1f} GiB")


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


if __name__ == "__main__":
    raise SystemExit(main())
