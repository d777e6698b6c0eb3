"""Scale benchmark of the exact index (issue 15): this project's suffix-array index next to infini-gram 2.6.0 at 10M,
100M and 1B tokens of seeded Markov text (`markov_corpus.py`: English-like, not repeats).

Per size, printed and written to WORKDIR/scale.json, with a PNG of cost against size:
- build: seconds (tokenizing included), tokens/s, peak RSS of the build process, bytes per token on disk;
- count p50: `count` of 1,000 spans of 1-12 tokens drawn from the corpus (so most occur);
- trace p50/p95: `trace` of 20 texts of 512 tokens (10 corpus passages, 10 of GSM8K questions), text in, maximal
  spans with exact counts and locations out;
- GSM8K contamination: `ngram_evidence` of all 1,319 GSM8K test questions (13-gram overlap, Llama-2 token share, rare
  share), the n-gram half of the `contamination` asset.
infini-gram runs on the same token ids (`infini_gram_peer.py`) up to --peer-max tokens: its own build (Rust suffix
array), `count` on the same spans, `attribute` (its OLMoTrace span search) on the same 512-token texts; and each
size checks that both engines give the same count for every sampled span.

Each corpus shard (`--shard-tokens`, 125M by default) is one index shard built in its own process, one after the
other, as the `ngram_index` asset builds a split's shards; the split is read as one index.

    .venv/bin/python benchmarks/scale.py --sizes 10M,100M,1B [--peer-max 100M] [--workdir /tmp/cprox_scale]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

import markov_corpus  # noqa: E402


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_shard(parquet: str, manifest: str) -> None:
    """Child process: one corpus shard into one index shard; prints its figures as JSON."""
    import pyarrow.parquet as pq

    from cp_assets.lib.corpus.exact.ngram_index import NgramIndex

    def docs():
        for rb in pq.ParquetFile(parquet).iter_batches(batch_size=2000, columns=["id", "text"]):
            yield from zip(rb.column(0).to_pylist(), rb.column(1).to_pylist())

    index = NgramIndex(Path(manifest))
    t0 = time.perf_counter()
    stats = index.update(docs, log=lambda m: None)
    info = index.stats()
    print(json.dumps({"seconds": time.perf_counter() - t0, "tokens": info["n_tokens"], "bytes": info["bytes"],
                      "segments": info["segments"], "peak_rss_gb": rss_gb(), "rebuilt": stats.rebuilt}))


def build_ours(corpus: Path, home: Path, log) -> dict:
    parts = sorted(corpus.glob("part-*.parquet"))
    figures = {"seconds": 0.0, "tokens": 0, "bytes": 0, "segments": 0, "peak_rss_gb": 0.0}
    for k, part in enumerate(parts):
        manifest = home / "ngrams" / "scale" / f"{k:05d}.json"
        out = subprocess.run([sys.executable, __file__, "--build-shard", str(part), str(manifest)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        got = json.loads(out)
        for key in ("seconds", "tokens", "bytes", "segments"):
            figures[key] += got[key]
        figures["peak_rss_gb"] = max(figures["peak_rss_gb"], got["peak_rss_gb"])
        log(f"  shard {k}: {got['tokens']:,} tokens in {got['seconds']:.0f}s, peak RSS {got['peak_rss_gb']:.2f} GB")
    figures["tokens_per_s"] = figures["tokens"] / figures["seconds"]
    figures["bytes_per_token"] = figures["bytes"] / figures["tokens"]
    return figures


def tokenizer_rate(corpus: Path) -> float:
    import pyarrow.parquet as pq

    from cp_assets.lib.corpus.exact.ngram_index import tokenize

    texts = next(pq.ParquetFile(sorted(corpus.glob("part-*.parquet"))[0]).iter_batches(
        batch_size=3000, columns=["text"])).column(0).to_pylist()
    t0 = time.perf_counter()
    n = sum(len(t) for t in tokenize("all-minilm-l6-v2", texts, parallel=True))
    return n / (time.perf_counter() - t0)


def sample_spans(index, rng: np.random.Generator, n: int = 1000) -> list[np.ndarray]:
    """n spans of 1-12 tokens cut from the corpus at random (cut at a document boundary)."""
    out = []
    while len(out) < n:
        seg = index.segments[int(rng.integers(0, len(index.segments)))]
        a = int(rng.integers(0, len(seg.tok) - 12))
        ids = np.asarray(seg.tok[a:a + int(rng.integers(1, 13))], dtype=np.int64)
        ids = ids[:np.argmax(ids == 0xFFFF)] if (ids == 0xFFFF).any() else ids
        if len(ids):
            out.append(ids)
    return out


def texts_512(corpus: Path, gsm: list[str], rng: np.random.Generator) -> list[str]:
    import pyarrow.parquet as pq

    from cp_assets.lib.corpus.exact.ngram_index import tokenize

    docs = next(pq.ParquetFile(sorted(corpus.glob("part-*.parquet"))[0]).iter_batches(
        batch_size=500, columns=["text"])).column(0).to_pylist()
    long_docs = [d for d in docs if len(d) > 4000][:10]
    novel = [" ".join(gsm[i:i + 12]) for i in range(0, 240, 24)]
    out = []
    for text in long_docs + novel:
        tk = tokenize("all-minilm-l6-v2", [text])[0]
        out.append(text[:tk.offsets[min(511, len(tk) - 1), 1]])
    return out


def timed(fn, items) -> list[float]:
    out = []
    for x in items:
        t0 = time.perf_counter()
        fn(x)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure_ours(index, spans, texts, gsm) -> dict:
    from cp_assets.lib.corpus.exact.ngram_search import count
    from cp_assets.lib.reports.contamination import ngram_evidence
    from cp_assets.lib.reports.trace import trace

    segs = index.segments
    trace(index, texts[0])  # warm: compile cache, page cache of the first touch
    counts = timed(lambda q: count(segs, q), spans)
    traces = timed(lambda t: trace(index, t, min_tokens=8, max_docs=5), texts)
    t0 = time.perf_counter()
    ev = ngram_evidence(index, gsm)
    contamination = time.perf_counter() - t0
    return {"count_p50_ms": p(counts, 50), "trace_p50_ms": p(traces, 50), "trace_p95_ms": p(traces, 95),
            "trace_corpus_p50_ms": p(traces[:len(traces) // 2], 50),
            "trace_novel_p50_ms": p(traces[len(traces) // 2:], 50),
            "gsm8k_contamination_s": contamination, "gsm8k_with_13gram": sum(e.ngram_overlap > 0 for e in ev)}


def measure_peer(index, home: Path, spans, texts, log) -> dict:
    from cp_assets.lib.corpus.exact import infini_gram_peer
    from cp_assets.lib.corpus.exact.ngram_index import tokenize
    from cp_assets.lib.corpus.exact.ngram_search import count

    peer_dir = home / "infini_gram"
    shutil.rmtree(peer_dir, ignore_errors=True)
    t0 = time.perf_counter()
    for k, shard in enumerate(index.shards.values() if hasattr(index, "shards") else [index]):
        infini_gram_peer.export(shard, peer_dir / f"{k:05d}")
    export_s = time.perf_counter() - t0
    built = [infini_gram_peer.build(d, mem_gb=4, cpus=2, timeout_s=3600) for d in sorted(peer_dir.iterdir()) if d.is_dir()
             and not d.name.endswith(".empty")]
    dirs = [str(d) for d in sorted(peer_dir.iterdir()) if d.is_dir() and not d.name.endswith(".empty")]
    from infini_gram.engine import InfiniGramEngine

    eng = InfiniGramEngine(index_dir=dirs, eos_token_id=0, token_dtype="u16")
    tokens = sum((Path(d) / "tokenized.0").stat().st_size // 2 for d in dirs)
    size = sum(f.stat().st_size for d in dirs for f in Path(d).glob("*.0"))
    counts = timed(lambda q: infini_gram_peer.count(eng, q), spans)
    ids = [tokenize("all-minilm-l6-v2", [t])[0].ids.tolist() for t in texts]
    attrs = timed(lambda q: eng.attribute(input_ids=q, delim_ids=[], min_len=8, max_cnt=10_000_000,
                                          enforce_bow=False), ids)
    segs = index.segments
    mismatches = sum(count(segs, q) != infini_gram_peer.count(eng, q) for q in spans)
    log(f"  infini-gram: built in {sum(b['seconds'] for b in built):.0f}s (+{export_s:.0f}s export), "
        f"count mismatches vs ours: {mismatches}/{len(spans)}")
    return {"build_s": sum(b["seconds"] for b in built), "tokens_per_s": tokens / sum(b["seconds"] for b in built),
            "peak_rss_gb": max(b["peak_rss_gb"] for b in built), "bytes_per_token": size / tokens,
            "count_p50_ms": p(counts, 50), "attribute_p50_ms": p(attrs, 50), "attribute_p95_ms": p(attrs, 95),
            "count_mismatches": mismatches, "spans_checked": len(spans)}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    sizes = [r["tokens"] for r in results]
    panels = [("build s", "build_s", "build_s"), ("peak RSS GB", "peak_rss_gb", "peak_rss_gb"),
              ("bytes / token", "bytes_per_token", "bytes_per_token"), ("trace p50 ms (512 tok)", "trace_p50_ms",
                                                                        "attribute_p50_ms")]
    for ax, (title, ours_key, peer_key) in zip(axes, panels):
        ax.plot(sizes, [r["ours"][ours_key] for r in results], "o-", label="cprox suffix array")
        peer = [(r["tokens"], r["peer"][peer_key]) for r in results if r.get("peer")]
        if peer:
            ax.plot(*zip(*peer), "s--", label="infini-gram 2.6.0" + (" attribute" if peer_key.startswith("attr")
                                                                     else ""))
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("tokens")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_size(n_tokens: int, args, log) -> dict:
    from cp_assets.lib.core import settings

    corpus = args.workdir / f"corpus-{n_tokens}"
    if not (corpus / "done").exists():
        shutil.rmtree(corpus, ignore_errors=True)
        gen = markov_corpus.generate(corpus, n_tokens, seed=0, shard_tokens=args.shard_tokens, log=lambda m: None)
        (corpus / "done").write_text(json.dumps(gen))
        log(f"  corpus: {gen['documents']:,} documents in {gen['files']} shards, generated in {gen['seconds']:.0f}s")
    home = args.workdir / f"home-{n_tokens}"
    shutil.rmtree(home, ignore_errors=True)
    ours = build_ours(corpus, home, log)
    from cp_assets.lib.corpus.exact.ngram_split import open_index

    index = open_index("scale", home)
    rng = np.random.default_rng(0)
    spans = sample_spans(index, rng)
    gsm = [json.loads(x)["question"] for x in gzip.open(settings.data_dir() / "gsm8k" / "test.jsonl.gz", "rt")]
    texts = texts_512(corpus, gsm, rng)
    ours |= measure_ours(index, spans, texts, gsm)
    ours["build_s"] = ours["seconds"]
    ours["build_vs_tokenizer"] = ours["tokens_per_s"] / tokenizer_rate(corpus)
    result = {"tokens": ours["tokens"], "shards": len(list(corpus.glob("part-*.parquet"))), "ours": ours}
    if n_tokens <= args.peer_max:
        try:
            result["peer"] = measure_peer(index, home, spans, texts, log)
        except Exception as exc:  # noqa: BLE001 (a failed peer build is a figure too)
            log(f"  infini-gram failed at this size: {type(exc).__name__}: {str(exc)[-500:]}")
            result["peer_error"] = f"{type(exc).__name__}: {str(exc)[-500:]}"
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10M,100M,1B")
    ap.add_argument("--peer-max", type=markov_corpus.parse_count, default=markov_corpus.parse_count("100M"))
    ap.add_argument("--shard-tokens", type=markov_corpus.parse_count, default=markov_corpus.parse_count("125M"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/cprox_scale"))
    ap.add_argument("--keep", action="store_true", help="keep the indexes (corpora are always kept)")
    ap.add_argument("--build-shard", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_shard:
        build_shard(*args.build_shard)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    log(f"{time.strftime('%Y-%m-%d %H:%M')} {os.uname().nodename}: {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"load {os.getloadavg()[0]:.2f}")
    results = []
    for size in args.sizes.split(","):
        log(f"== {size} tokens")
        r = run_size(markov_corpus.parse_count(size), args, log)
        results.append(r)
        o = r["ours"]
        log(f"  ours: build {o['build_s']:.0f}s ({o['tokens_per_s']:,.0f} tokens/s, {o['build_vs_tokenizer']:.2f}x "
            f"the tokenizer alone), peak RSS {o['peak_rss_gb']:.2f} GB, {o['bytes_per_token']:.2f} bytes/token, "
            f"count p50 {o['count_p50_ms']:.3f} ms, trace p50 {o['trace_p50_ms']:.0f} ms / p95 "
            f"{o['trace_p95_ms']:.0f} ms (corpus {o['trace_corpus_p50_ms']:.0f}, novel {o['trace_novel_p50_ms']:.0f}),"
            f" GSM8K contamination {o['gsm8k_contamination_s']:.1f}s ({o['gsm8k_with_13gram']} with a 13-gram)")
        if r.get("peer"):
            q = r["peer"]
            log(f"  infini-gram: build {q['build_s']:.0f}s ({q['tokens_per_s']:,.0f} tokens/s, ids given), peak RSS "
                f"{q['peak_rss_gb']:.2f} GB, {q['bytes_per_token']:.2f} bytes/token, count p50 "
                f"{q['count_p50_ms']:.3f} ms, attribute p50 {q['attribute_p50_ms']:.0f} ms / p95 "
                f"{q['attribute_p95_ms']:.0f} ms; count mismatches {q['count_mismatches']}/{q['spans_checked']}")
        (args.workdir / "scale.json").write_text(json.dumps(results, indent=1))
        plot(results, args.workdir / "scale.png")
    log(f"results: {args.workdir / 'scale.json'}, plot: {args.workdir / 'scale.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
