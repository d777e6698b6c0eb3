"""Speed of the provenance explorer on a warm `Explainer` (issue 17 item 6): one 512-token answer, 1,000 texts through
`--queries`, and the web page's answer.

Reads an existing CPROX_HOME (default .cprox) whose splits are embedded and indexed (the demo corpus after
`make demo` or `make lab`'s `cprox materialize`); writes nothing there except the reference distances the
neighbours' percentiles need (cached, as `eval_proximity` caches them).
  1. opens the Explainer (cold: indexes, BM25 over the chunks, the cluster tree) and explains one text to warm up;
  2. explain of 512-token answers: GSM8K test solutions joined until 512 tokens of the index tokenizer, `--answers`
     of them, one at a time: median and max seconds;
  3. `--queries`-style batches: the first 1,000 GSM8K test questions, explained 64 at a time: seconds in all;
  4. the page: the same app `cprox serve` runs (uvicorn on a loopback port), POST /api/explain of `--answers` other
     512-token answers (the Explainer keeps candidate sentences' vectors: not the ones of step 2) from a client: median and max seconds per answer, and GET / (the page itself).
Targets (the issue's): 512-token answer <= 1 s, 1,000 texts <= 60 s, the page <= 1.5 s.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/explain_speed.py [--home .cprox] [--answers 10] [--queries 1000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path

from cp_assets.lib.core import settings


def answers_of(n_tokens: int, count: int, data_dir: Path, tokenizer) -> list[str]:
    """`count` texts of about `n_tokens` tokens: GSM8K test solutions (calculator notes removed) joined."""
    import re

    rows = [json.loads(x) for x in gzip.open(data_dir / "gsm8k" / "test.jsonl.gz", "rt")]
    out, cur = [], []
    for r in rows:
        cur.append(re.sub(r"<<[^>]*>>", "", r["answer"]).replace("####", "The answer is"))
        text = "\n".join(cur)
        if len(tokenizer.encode(text).ids) >= n_tokens:
            ids = tokenizer.encode(text)
            out.append(text[:max(end for _, end in ids.offsets[:n_tokens])])  # a token may carry offsets (0, 0)
            cur = []
            if len(out) == count:
                break
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=str(settings.home()))
    ap.add_argument("--answers", type=int, default=10)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    os.environ["CPROX_HOME"] = str(Path(args.home).resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from benchmarks._common import machine_lines
    from cp_assets.lib.corpus.exact.ngram_index import DEFAULT_TOKENIZER, load_tokenizer
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.provenance.explain import Explainer
    from cp_assets.lib.reports.results_db import ResultsDB

    print("\n".join(machine_lines()))
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; home {settings.home()}")
    t0 = time.perf_counter()
    ex = Explainer.open(PgStore(url=settings.database_url()), ResultsDB(), log=lambda m: print(f"  {m}"))
    ex.explain("Warm-up: a sentence to load the models.")
    print(f"cold open + first explain: {time.perf_counter() - t0:.1f} s (splits {ex.splits}, tree "
          f"{'yes' if ex.tree is not None else 'none'})")

    tok = load_tokenizer(DEFAULT_TOKENIZER)
    both = answers_of(512, 2 * args.answers, settings.data_dir(), tok)
    answers, page_answers = both[:args.answers], both[args.answers:]  # the page gets answers the cache has not seen
    secs = []
    for a in answers:
        t = time.perf_counter()
        ex.explain(a)
        secs.append(time.perf_counter() - t)
    print(f"explain of a 512-token answer (n={len(secs)}): median {statistics.median(secs):.2f} s, max "
          f"{max(secs):.2f} s (target <= 1 s)")

    questions = [json.loads(x)["question"] for x in gzip.open(settings.data_dir() / "gsm8k" / "test.jsonl.gz", "rt")]
    questions = questions[:args.queries]
    t = time.perf_counter()
    for lo in range(0, len(questions), 64):
        ex.explain_many(questions[lo:lo + 64])
    total = time.perf_counter() - t
    print(f"--queries over {len(questions)} texts (GSM8K test questions, 64 a batch): {total:.1f} s "
          f"({total / len(questions) * 1000:.0f} ms a text; target <= 60 s)")

    import uvicorn

    import socket

    from cp_assets.lib.provenance.web import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(ex), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    urllib.request.urlopen(base + "/", timeout=30).read()
    page = time.perf_counter() - t
    secs = []
    for a in page_answers:
        req = urllib.request.Request(base + "/api/explain", data=json.dumps({"text": a}).encode(),
                                     headers={"Content-Type": "application/json"})
        t = time.perf_counter()
        urllib.request.urlopen(req, timeout=60).read()
        secs.append(time.perf_counter() - t)
    server.should_exit = True
    print(f"the page: GET / {page * 1000:.0f} ms; POST /api/explain of a 512-token answer (n={len(secs)}): median "
          f"{statistics.median(secs):.2f} s, max {max(secs):.2f} s (target <= 1.5 s)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
