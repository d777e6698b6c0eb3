"""Ingest benchmark: raw SentenceTransformer.encode vs. the `embeddings` asset's path (embed_split into pgvector).

Takes N chunks of a real split (the registry's sources, chunked with the project's chunker and the model's own
tokenizer), stores them as the chunks of a private split `bench` in a private embedded Postgres, then measures over
exactly those chunks, in the order embed_split reads them:

  (a) baseline  SentenceTransformer.encode(texts, batch_size, normalize_embeddings=True, convert_to_numpy=True), on
                the object cp_assets.lib.corpus.encoder.load_model returns, at the pipeline's precision (bf16
                autocast where CPROX_EMBED_PRECISION resolves to it; `--baseline-precision fp32` for plain fp32);
  (b) pipeline  cp_assets.lib.corpus.embeddings.embed_split(store, "bench", model), what the `embeddings` asset calls: read
                the chunk rows, encode in `commit_every` slices, binary-COPY each slice into the build table, build
                the HNSW index (publish_build) and swap the partition in. Wall-clock of the whole call.

Fairness on a shared machine: other processes' load swings by 3x within minutes here, so timing (a) and (b) one
after the other (minutes apart) compares loads, not code. The two are interleaved instead: embed_split reports each
committed slice through its `log` callback, and there the benchmark encodes the same slice with the raw model (a),
timed; the time spent in the callback is subtracted from the pipeline's. Both see the same load, slice by slice
(~10-30 s). (a) then runs in the same `commit_every` slices as (b); sentence-transformers sorts by length within a
call, so the printed padding model says what slicing alone costs (about nothing at 512). `--one-call` also times (a)
as one call over all N, for reference (not interleaved). The model is warmed first (both instances, see below),
the embeddings table is dropped before every pipeline pass, and `--repeats` runs more passes. CPU time (this
process + its Postgres) is reported next to wall-clock.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/ingest.py --n 3000
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time

import _common as C


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="chunks to embed (default 3000)")
    ap.add_argument("--split", default="pretrain", help="registry split whose sources are chunked (default pretrain)")
    ap.add_argument("--sample", choices=("random", "first"), default="random",
                    help="random: a seeded sample over the whole split (default); first: the first N chunks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="default: CPROX_EMBED_MODEL or all-MiniLM-L6-v2")
    ap.add_argument("--max-tokens", type=int, default=128, help="chunker max_tokens (the `chunks` asset default)")
    ap.add_argument("--overlap", type=int, default=16, help="chunker overlap (the `chunks` asset default)")
    ap.add_argument("--batch-size", type=int, default=32, help="encode batch size (SentenceEncoder default 32)")
    ap.add_argument("--commit-every", type=int, default=512, help="embed_split commit_every (SentenceEncoder default)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved passes (default 1)")
    ap.add_argument("--baseline-precision", choices=("pipeline", "fp32"), default="pipeline",
                    help="the raw encode's precision: the pipeline's (CPROX_EMBED_PRECISION resolved for the device: "
                         "bf16 autocast where the CPU or GPU has it; the fair comparison, default) or plain fp32")
    ap.add_argument("--one-call", action="store_true",
                    help="also time (a) as a single encode call over all N chunks (reference, not interleaved)")
    ap.add_argument("--keep", action="store_true", help="keep the private CPROX_HOME (default: delete it)")
    args = ap.parse_args()
    if args.repeats < 1 or args.n < 1:
        ap.error("--n and --repeats must be at least 1")

    return C.run_in_private_home("cprox_bench_ingest_", run, args)


def run(args, home) -> int:
    import numpy as np
    import torch

    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_documents
    from cp_assets.lib.corpus.embeddings import embed_split
    from cp_assets.lib.corpus.encoder import (encode, load_model, load_tokenizer, model_precision, model_slug,
                                              precision_context, resolve_model)
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.sources import read_split

    model_name = args.model or settings.embed_model()
    slug, split = model_slug(model_name), "bench"
    print("== ingest benchmark: raw SentenceTransformer.encode vs embed_split -> pgvector ==")

    with C.Timer() as t:
        model = load_model(model_name)
        tokenizer = load_tokenizer(model_name)
    pipeline_precision = model_precision(model_name)
    baseline_precision = pipeline_precision if args.baseline_precision == "pipeline" else "fp32"
    print(f"model      {model_name} ({resolve_model(model_name)}), loaded in {t.s:.1f}s, "
          f"max_seq_length {model.max_seq_length}, device {model.device}")
    print(f"precision  pipeline {pipeline_precision} (CPROX_EMBED_PRECISION resolved for {model.device.type}), "
          f"baseline {baseline_precision}")

    def raw_encode(batch_texts):
        """(a): SentenceTransformer.encode itself, at the baseline's precision."""
        with precision_context(model.device.type, baseline_precision):
            return model.encode(batch_texts, batch_size=args.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)

    # -- the chunks -------------------------------------------------------------------------------------------------
    with C.Timer() as t:
        reg = load_registry()
        docs = list(read_split(reg, args.split))
        chunks = list(chunk_documents(docs, tokenizer, ChunkConfig(args.max_tokens, args.overlap)))
    print(f"corpus     split {args.split!r} of {reg.file}: {len(docs):,} documents -> {len(chunks):,} chunks "
          f"(max_tokens {args.max_tokens}, overlap {args.overlap}) in {t.s:.1f}s")
    n = min(args.n, len(chunks))
    if n < args.n:
        print(f"           only {len(chunks):,} chunks: using all of them")
    picked = random.Random(args.seed).sample(chunks, n) if args.sample == "random" else chunks[:n]

    store = PgStore(home=home)
    with C.Timer() as t:
        store.ensure_schema()
    store.replace_chunks(split, picked)
    rows = store.chunk_rows(split)  # exactly what embed_split reads, in its order
    texts = [r[2] for r in rows]
    tokens = sum(r[3] for r in rows)
    lens = sorted(r[3] for r in rows)
    print(f"sample     {n:,} chunks ({args.sample}, seed {args.seed}), {tokens:,} tokens "
          f"(chunker count, without [CLS]/[SEP]), tokens/chunk mean {tokens / n:.1f}, "
          f"median {C.median(lens):.0f}, max {lens[-1]}")
    for line in C.machine_lines({
        "torch": f"{torch.__version__}, {torch.get_num_threads()} intra-op threads",
        "database": f"{C.pg_versions(store)} (private CPROX_HOME {home}, started in {t.s:.1f}s)",
        "settings": f"batch_size {args.batch_size}, commit_every {args.commit_every}, normalized float32",
    }):
        print(line)

    # -- a load-independent work model: tokens run through the model, padding included ----------------------------
    # sentence-transformers sorts each encode() call's texts by character length (longest first) and pads every
    # batch to its longest member; embed_split calls encode() once per commit_every slice, so it sorts per slice.
    ntok = np.array([len(x) for x in tokenizer(texts, truncation=True, max_length=model.max_seq_length,
                                                verbose=False)["input_ids"]])
    clen = np.array([len(x) for x in texts])

    def padded(idx: np.ndarray) -> int:
        order = idx[np.argsort(-clen[idx], kind="stable")]
        return int(sum(ntok[order[i:i + args.batch_size]].max() * len(order[i:i + args.batch_size])
                       for i in range(0, len(order), args.batch_size)))

    one = padded(np.arange(n))
    per_slice = sum(padded(np.arange(s, min(s + args.commit_every, n))) for s in range(0, n, args.commit_every))
    print(f"work model tokens incl. [CLS]/[SEP] {int(ntok.sum()):,}; with padding: one call {one:,} "
          f"({ntok.sum() / one:.1%} useful), {args.commit_every}-chunk slices {per_slice:,} "
          f"({ntok.sum() / per_slice:.1%} useful): slicing alone predicts a ratio of {one / per_slice:.3f}")

    # -- warm-up ----------------------------------------------------------------------------------------------------
    # embed_split encodes through encoder.encode -> load_model(name, device); load_model(name) resolves to the same
    # cache entry, so both paths share one model instance (printed below). Warm both.
    with C.Timer() as t:
        raw_encode(texts[:4 * args.batch_size])
    with C.Timer() as t2:
        encode(model_name, texts[:4 * args.batch_size], batch_size=args.batch_size)
    same = load_model(model_name) is load_model(model_name, None)
    print(f"warm-up    {4 * args.batch_size} chunks in {t.s:.1f}s (baseline model), {t2.s:.1f}s (encoder.encode's "
          f"model: {'the same object' if same else 'a SECOND instance, loaded by this call'})\n")

    progress = re.compile(r"embedded (\d+)/(\d+) chunks")

    def interleaved_pass() -> dict:
        """One embed_split run; after each committed slice, the raw model encodes the same slice (timed apart)."""
        store.drop_embeddings(slug)  # a fresh build every time: nothing reused
        st = {"done": 0, "cb_wall": 0.0, "cb_cpu": 0.0, "a_wall": 0.0, "a_cpu": 0.0, "vecs": [], "pairs": [],
              "mark": 0.0, "cb_last": 0.0}

        def on_log(msg: str) -> None:
            m = progress.search(msg)
            if not m:
                return
            t0, c0 = time.perf_counter(), C.cpu_seconds(home)
            pipe_slice = t0 - st["mark"]  # pipeline time since the previous callback: encode + COPY of this slice
            hi = int(m.group(1))
            with C.Timer(home) as ta:
                st["vecs"].append(raw_encode(texts[st["done"]:hi]))
            st["pairs"].append((hi - st["done"], ta.s, pipe_slice))
            st["done"] = hi
            st["a_wall"] += ta.s
            st["a_cpu"] += ta.cpu
            st["mark"] = time.perf_counter()
            st["cb_last"] = st["mark"] - t0
            st["cb_wall"] += st["cb_last"]
            st["cb_cpu"] += C.cpu_seconds(home) - c0

        with C.Timer(home) as tt:
            st["mark"] = time.perf_counter()
            figures = embed_split(store, split, model_name, batch_size=args.batch_size,
                                  commit_every=args.commit_every, log=on_log)
        if figures.get("embedded") != n or figures.get("status") != "built" or st["done"] != n:
            raise RuntimeError(f"embed_split did not embed all {n} chunks (or progress was not parsed): {figures}")
        # embed_split's encode_seconds includes the callbacks (they run inside the encode generator, before the next
        # slice), except the last one (after the last slice): take them out
        figures["encode_seconds"] = figures["encode_seconds"] - (st["cb_wall"] - st["cb_last"])
        return st | {"b_wall": tt.s - st["cb_wall"], "b_cpu": tt.cpu - st["cb_cpu"], "figures": figures}

    passes = []
    for r in range(args.repeats):
        st = interleaved_pass()
        passes.append(st)
        ratios = [a / b for _, a, b in st["pairs"]]
        print(f"pass {r + 1}  (a) baseline {st['a_wall']:6.1f}s wall {n / st['a_wall']:5.1f} chunks/s | "
              f"(b) pipeline {st['b_wall']:6.1f}s wall {n / st['b_wall']:5.1f} chunks/s | ratio {st['a_wall'] / st['b_wall']:.3f} "
              f"(CPU {st['a_cpu'] / st['b_cpu']:.3f})   loadavg {C.loadavg()}")
        print("        per slice (chunks: a s / b s = ratio): " + ", ".join(
            f"{c}: {a:.1f}/{b:.1f}={a / b:.2f}" for c, a, b in st["pairs"]) +
            f"; median slice ratio {C.median(ratios):.3f}")
    one = None
    if args.one_call:
        with C.Timer(home) as one:
            raw_encode(texts)
        print(f"one call  (a) over all {n:,} chunks at once: {one.s:.1f}s wall, {n / one.s:.1f} chunks/s "
              f"(not interleaved: compare with care)   loadavg {C.loadavg()}")

    # -- correctness: the stored vectors are the baseline's ----------------------------------------------------------
    ids, mat = store.load_matrix(slug, split)
    base = np.concatenate(passes[-1]["vecs"]).astype(np.float32)
    pos = {r[0]: i for i, r in enumerate(rows)}
    diff = float(np.abs(mat - base[[pos[c] for c in ids]]).max()) if len(ids) == n else float("nan")
    print(f"\ncheck      {len(ids):,} vectors stored; max |pipeline - baseline| = {diff:.2e}")

    # -- summary: medians over passes -----------------------------------------------------------------------------
    def med(key):
        return C.median([st[key] for st in passes])

    b, p, bc, pc = med("a_wall"), med("b_wall"), med("a_cpu"), med("b_cpu")
    figs = [st["figures"] for st in passes]
    enc, wr, ix = (C.median([f[k] for f in figs]) for k in ("encode_seconds", "write_seconds", "index_seconds"))
    other = p - enc - wr - ix
    slice_ratio = C.median([a / bb for st in passes for _, a, bb in st["pairs"]])

    def line(label, wall, cpu=None, ref=True):
        return [label, f"{wall:.2f}" if wall < 10 else f"{wall:.1f}", f"{n / wall:.1f}" if ref else "",
                f"{tokens / wall:,.0f}" if ref else "", f"{b / wall:.3f}" if ref else "",
                f"{cpu:.1f}" if cpu is not None else "", f"{n / cpu:.1f}" if cpu is not None else "",
                f"{bc / cpu:.3f}" if cpu is not None else ""]

    rows_out = [
        line("(a) baseline: SentenceTransformer.encode", b, bc),
        line("(b) pipeline: embed_split -> pgvector, end to end", p, pc),
        line("    of which encode (commit_every slices)", enc),
        line("    of which COPY writes", wr, ref=False),
        line("    of which HNSW index + publish", ix, ref=False),
        line("    of which the rest (rows, table, lock, prepare)", other, ref=False),
    ]
    if one is not None:
        rows_out.append(line("(ref) (a) as one call over all N, not interleaved", one.s, one.cpu))
    print(f"\nN = {n:,} chunks, {tokens:,} tokens; median of {args.repeats} interleaved pass(es); CPU = this process "
          f"(all threads) + its Postgres\n")
    print(C.table(["path", "wall s", "chunks/s", "tokens/s", "vs (a)", "CPU s", "chunks/CPU-s", "vs (a) CPU"],
                  rows_out))
    print(f"\nratio (b)/(a) = {b / p:.3f} by wall-clock, {bc / pc:.3f} by CPU time, {slice_ratio:.3f} median per slice "
          f"(target >= 0.9: {'MET' if b / p >= 0.9 else 'NOT MET'})")
    print("embed_split's own figures (last pass; encode_seconds without the benchmark's callback): " +
          ", ".join(f"{k}={round(v, 2) if isinstance(v, float) else v}" for k, v in figs[-1].items()
                    if k not in ("model", "table", "version", "seconds", "chunks_per_s", "tokens_per_s")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
