"""Embedding precision: float32 against bfloat16 autocast for the project's encoder, on real chunks.

The default `CPROX_EMBED_PRECISION=auto` runs MiniLM under bfloat16 autocast where the hardware multiplies bfloat16
natively; this script prints what that costs and buys, in one run on the same texts:
- speed: chunks/s at fp32 and bf16 (batch 32, the embeddings asset's setting);
- agreement: cosine between each chunk's fp32 and bf16 vectors (min, p1, median);
- what the reports see: for GSM8K test questions as queries, the overlap of the top-10 neighbours (fp32 vs bf16
  corpus and queries) and the largest change of the nearest-neighbour cosine distance (the contamination flag's
  `nn_distance`).

Texts: the chunks (the project's chunker, 128 tokens) of GSM8K train conversations and the FineWeb-Edu sample.

    .venv/bin/python benchmarks/precision.py [--docs 2000] [--queries 300]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time

import _common  # first: sets HF_HUB_OFFLINE before the model loads
import numpy as np

MODEL = "all-MiniLM-L6-v2"


def _rows(path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="GSM8K train conversations (plus the 150 FineWeb pages)")
    ap.add_argument("--queries", type=int, default=300, help="GSM8K test questions used as queries")
    args = ap.parse_args()

    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus import encoder
    from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_documents
    from cp_assets.lib.corpus.sources import Document

    data = settings.data_dir()
    train = _rows(data / "gsm8k" / "train.jsonl.gz")[:args.docs]
    web = _rows(data / "fineweb_edu_sample" / "fineweb_edu_sample10bt_150.jsonl.gz")
    docs = [Document(f"train{i}", "bench", "gsm8k", str(i), 0, f"User: {r['question']}\nAssistant: {r['answer']}")
            for i, r in enumerate(train)]
    docs += [Document(f"web{i}", "bench", "fineweb", str(i), 0, r["text"]) for i, r in enumerate(web)]
    texts = [c.text for c in chunk_documents(docs, encoder.load_tokenizer(MODEL), ChunkConfig())]
    queries = [r["question"] for r in _rows(data / "gsm8k" / "test.jsonl.gz")[:args.queries]]

    vecs, rates = {}, {}
    for precision in ("fp32", "bf16"):
        encoder.encode(MODEL, texts[:64], precision=precision)  # warm up
        t0 = time.perf_counter()
        vecs[precision] = encoder.encode(MODEL, texts, batch_size=32, precision=precision)
        rates[precision] = len(texts) / (time.perf_counter() - t0)
    cos = (vecs["fp32"] * vecs["bf16"]).sum(axis=1)

    q = {p: encoder.encode(MODEL, queries, precision=p) for p in ("fp32", "bf16")}
    sims = {p: q[p] @ vecs[p].T for p in ("fp32", "bf16")}
    top = {p: np.argsort(-sims[p], axis=1)[:, :10] for p in sims}
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top["fp32"], top["bf16"])])
    same_first = np.mean(top["fp32"][:, 0] == top["bf16"][:, 0])
    nn_shift = np.abs((1 - sims["fp32"].max(axis=1)) - (1 - sims["bf16"].max(axis=1)))

    for line in _common.machine_lines({"bf16 native on this CPU": str(encoder.cpu_has_bf16())}):
        print(line)
    print(f"{len(texts)} chunks ({len(train)} GSM8K train conversations + {len(web)} FineWeb-Edu pages), "
          f"{len(queries)} GSM8K test queries")
    print(f"fp32: {rates['fp32']:.1f} chunks/s   bf16 autocast: {rates['bf16']:.1f} chunks/s   "
          f"speed-up {rates['bf16'] / rates['fp32']:.2f}x")
    print(f"cosine(fp32, bf16) per chunk: min {cos.min():.6f}  p1 {np.percentile(cos, 1):.6f}  "
          f"median {np.median(cos):.6f}")
    print(f"top-10 neighbour overlap {overlap:.4f}; same nearest neighbour {same_first:.4f}; "
          f"nn cosine distance change: max {nn_shift.max():.2e}, median {np.median(nn_shift):.2e}")


if __name__ == "__main__":
    main()
