"""How fast this machine is right now: a 20-60 s probe to print next to any wall-clock figure (`make test`, `make demo`,
`make lab`). On a shared 2-core VM the same encode ran 2.4x slower in the afternoon than in the morning (2026-12-03,
1,024 GSM8K conversations, batch 32: 44.8 chunks/s at 13:12, 18.8 at 14:30), so a duration means little without the
speed it was measured at.

Prints the CPU model, cores, load average, and three rates: MiniLM (the project's encoder) on 512 GSM8K train
conversations (batch 32, the embeddings asset's setting; ~160 tokens each, truncated at 256) in fp32 and in bf16
autocast (CPROX_EMBED_PRECISION; the fp32 rate is the one to compare with older figures), and a float32 matmul
(GFLOP/s, torch's threads).

    .venv/bin/python benchmarks/machine.py [--texts 512]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time

import _common  # first: sets HF_HUB_OFFLINE before the model loads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=512)
    args = ap.parse_args()

    import torch

    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus import encoder

    with gzip.open(settings.data_dir() / "gsm8k" / "train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(args.texts), fh)]
    texts = [f"User: {r['question']}\nAssistant: {r['answer']}" for r in rows]
    rates = {}
    for precision in ("fp32", "bf16"):  # fp32: the rate every figure before 2026-12-03 17:00 was measured against
        encoder.encode("all-MiniLM-L6-v2", texts[:32], precision=precision)  # load and warm up
        t0 = time.perf_counter()
        encoder.encode("all-MiniLM-L6-v2", texts, batch_size=32, precision=precision)
        rates[precision] = len(texts) / (time.perf_counter() - t0)

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    gflops = reps * 2 * 1024 ** 3 / (time.perf_counter() - t0) / 1e9

    for line in _common.machine_lines({"torch threads": str(torch.get_num_threads())}):
        print(line)
    print(f"MiniLM encode: {rates['fp32']:.1f} chunks/s fp32, {rates['bf16']:.1f} bf16 autocast "
          f"({len(texts)} GSM8K conversations, batch 32; the default precision here: "
          f"{encoder.resolve_precision(None, 'cpu')})")
    print(f"float32 matmul 1024^2: {gflops:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
