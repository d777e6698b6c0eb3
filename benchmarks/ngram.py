"""n-gram index benchmark: build rate (tokens/s) and trace latency on a synthetic split of ~100M tokens.

The split is synthesized from the bundled data (../shared/data, less the eval sets' test files) by repeating and
shuffling it: each document is a
run of 10-60 consecutive sentences starting at a random sentence of the pooled texts, so, as in web data, passages
recur verbatim across documents. Documents are regenerated from their index (seeded), so snippets need no storage.

Figures, with baselines measured in the same run:
- build: tokens/s of the whole update (hash pass, tokenize, suffix sort, pack, write) vs the tokenizer alone;
- trace: latency of `trace` for 512-token texts (a corpus passage, a mixed text, a novel text), snippets included,
  vs scanning the corpus text once for the same passage (Aho-Corasick, what an index-free check costs);
- contamination: `ngram_evidence` for the 1,319 GSM8K test questions in one lookup.

    python benchmarks/ngram.py [--tokens 100_000_000] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cleanup, private_home  # noqa: E402

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n+")


EVAL_FILES = ("gsm8k/test", "math500/", "math_test_5000/")  # held out: the "novel" text and the contamination run


def sentence_pool(data_dir: Path) -> list[str]:
    texts = []
    for path in sorted(data_dir.rglob("*.gz")):
        if any(e in str(path.relative_to(data_dir)) for e in EVAL_FILES):
            continue
        with gzip.open(path, "rt", errors="replace") as fh:
            if path.name.endswith(".jsonl.gz"):
                for line in fh:
                    texts.append(" ".join(v for v in json.loads(line).values() if isinstance(v, str)))
            else:
                texts.append(fh.read())
    return [s.strip() for t in texts for s in SENTENCE.split(t) if len(s.split()) >= 3]


class Synthetic:
    def __init__(self, pool: list[str], seed: int = 0):
        self.pool, self.seed = pool, seed

    def doc(self, i: int) -> str:
        rng = random.Random(self.seed * 1_000_003 + i)
        start = rng.randrange(len(self.pool))
        return " ".join(self.pool[start:start + rng.randint(10, 60)])

    def docs(self, target_chars: int):
        total, i = 0, 0
        while total < target_chars:
            text = self.doc(i)
            total += len(text)
            yield f"syn{i}", text
            i += 1


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_ngram(tokens: int, home: Path) -> dict:
    import ahocorasick_rs

    from cp_assets.lib.core import settings
    from cp_assets.lib.reports.contamination import ngram_evidence, normalize
    from cp_assets.lib.corpus.exact.ngram_index import NgramIndex, tokenize
    from cp_assets.lib.reports.trace import trace

    pool = sentence_pool(settings.data_dir())
    syn = Synthetic(pool)
    sample = [syn.doc(i) for i in range(300)]
    t0 = time.perf_counter()
    n_sample = sum(len(t) for t in tokenize("all-minilm-l6-v2", sample, parallel=True))
    tok_rate = n_sample / (time.perf_counter() - t0)
    chars_per_token = sum(map(len, sample)) / n_sample
    print(f"pool: {len(pool):,} sentences; {chars_per_token:.2f} chars/token; tokenizer alone (both cores) {tok_rate:,.0f} tokens/s")

    index = NgramIndex(home / "ngrams" / "synthetic" / "00000.json")
    last = [time.perf_counter()]

    def log(msg: str) -> None:
        if time.perf_counter() - last[0] > 30:
            print(" ", msg, flush=True)
            last[0] = time.perf_counter()

    stats = index.update(lambda: syn.docs(int(tokens * chars_per_token)), log=log)
    info = index.stats()
    size_gb = info["bytes"] / 2**30
    print(f"build: {info['n_docs']:,} docs, {info['n_tokens']:,} tokens ({info['bytes_per_token']:.2f} bytes/token) in "
          f"{stats.seconds:.0f}s = {stats.tokens_per_s:,.0f} tokens/s ({stats.tokens_per_s / tok_rate:.2f}x the "
          f"tokenizer alone); file {size_gb:.2f} GB; peak RSS {rss_gb():.1f} GB", flush=True)

    docs_by_id = {}

    def doc_text(ids):
        return {d: docs_by_id.setdefault(d, syn.doc(int(d[3:]))) for d in ids}

    gsm = [json.loads(x)["question"] for x in gzip.open(settings.data_dir() / "gsm8k" / "test.jsonl.gz", "rt")]
    novel = " ".join(gsm[:40])
    corpus_passage = " ".join(pool[5000:5200])
    mixed = " ".join(x for pair in zip(pool[9000:9100], gsm[100:200]) for x in pair)
    texts = {}
    for name, text in (("corpus passage", corpus_passage), ("mixed", mixed), ("novel", novel)):
        tk = tokenize(index.tokenizer, [text])[0]
        texts[name] = text[:tk.offsets[min(511, len(tk) - 1), 1]]  # 512 tokens
    figures = {"tokens": info["n_tokens"], "build_tokens_per_s": round(stats.tokens_per_s),
               "build_vs_tokenizer": round(stats.tokens_per_s / tok_rate, 3), "index_gb": round(size_gb, 2)}
    for name, text in texts.items():
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            spans = trace(index, text, min_tokens=8, max_docs=5, doc_text=doc_text)
            runs.append(time.perf_counter() - t0)
        p50 = statistics.median(runs)
        top = max(spans, key=lambda s: s.n_tokens, default=None)
        print(f"trace 512 tokens, {name}: p50 {p50 * 1000:.0f} ms (max {max(runs) * 1000:.0f}); {len(spans)} spans, "
              f"longest {top.n_tokens if top else 0} tokens x {top.count if top else 0}; "
              f"counts {sum(s.count for s in spans):,}", flush=True)
        figures[f"trace_ms_{name.replace(' ', '_')}"] = round(p50 * 1000)

    # baseline: without an index, finding one passage means reading the whole split once
    probe = normalize(texts["corpus passage"])[:200]
    ac, t0, found = ahocorasick_rs.AhoCorasick([probe]), time.perf_counter(), 0
    for _, text in syn.docs(int(tokens * chars_per_token)):
        found += bool(ac.find_matches_as_indexes(normalize(text)))
    scan = time.perf_counter() - t0
    print(f"baseline: one index-free scan of the split for one passage {scan:.0f}s ({found} docs hold it): trace is "
          f"{scan / (figures['trace_ms_corpus_passage'] / 1000):,.0f}x faster", flush=True)
    figures["scan_s"] = round(scan, 1)

    t0 = time.perf_counter()
    ev = ngram_evidence(index, gsm)
    secs = time.perf_counter() - t0
    print(f"contamination: 1,319 GSM8K questions in {secs:.1f}s; {sum(e.ngram_overlap > 0 for e in ev)} share a "
          f"13-gram with the split", flush=True)
    figures["gsm8k_evidence_s"] = round(secs, 2)
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=100_000_000)
    p.add_argument("--keep", action="store_true", help="keep the index (and CPROX_HOME) afterwards")
    args = p.parse_args()
    home = private_home("cprox_bench_ngram_")
    try:
        print(json.dumps(bench_ngram(args.tokens, home)))
    finally:
        cleanup(home, keep=args.keep)


if __name__ == "__main__":
    main()
