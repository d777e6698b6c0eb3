"""Why does `contamination` flag eval items a split was built to exclude? Near-duplicates, measured apart.

The lab's `sft` split holds 2,500 Hendrycks MATH test problems with MATH-500's 500 removed by exact problem text,
yet `contamination` flags some MATH-500 items against it. This script compares every item of an eval set with every
document of a split by rapidfuzz's `fuzz.ratio` on the question text alone (a measure none of the detectors uses),
and prints, for the flagged and the unflagged items apart, how close the closest document comes: if the flagged ones
have near-duplicates (the same problem with other numbers or wording) and the unflagged ones do not, the flags are
near-duplicates, not leaks of the excluded text.

Reads a materialized home (the `contamination` rows and `eval_samples` in its results DuckDB, the split's documents
in its Postgres); run after `make lab`:

    .venv/bin/python benchmarks/near_duplicates.py --home .cprox [--eval math500 --split sft --field problem]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

from cp_assets.lib.core import settings


NEAR = 70  # a near-duplicate: the contamination acceptance test's cut-off (fixed 2026-11-25), not chosen here


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=str(settings.home()), help="a CPROX_HOME with the lab materialized")
    ap.add_argument("--eval", default="math500", help="eval set (evals.yaml)")
    ap.add_argument("--split", default="sft", help="corpus split")
    ap.add_argument("--field", default="problem", help="the eval file's field holding the question")
    ap.add_argument("--doc-pattern", default=r"^Problem: (.*?)\nSolution:",
                    help="regex whose group 1 is a document's question part (whole text when it does not match)")
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--unexplained", type=int, default=0, metavar="N",
                    help="also count the flagged items without a near-duplicate (ratio < 70) that hold an Asymptote "
                         "diagram, and list N of them: evidence, rare share, longest verbatim span, the question")
    args = ap.parse_args()
    os.environ["CPROX_HOME"] = str(Path(args.home).resolve())

    from rapidfuzz import fuzz, process

    from benchmarks._common import machine_lines, table
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.evals.eval_registry import load_evals
    from cp_assets.lib.reports.results_db import ResultsDB

    print("\n".join(machine_lines()))
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; home {settings.home()}")
    spec = load_evals().get(args.eval)
    with gzip.open(settings.data_dir() / spec.path, "rt") as f:
        questions = [json.loads(line)[args.field] for line in f]
    with ResultsDB().connect(read_only=True) as con:
        rows = con.execute("SELECT s.sample_id, s.row_idx, c.flagged, c.flag_reason, c.rare_share, c.longest_span "
                           "FROM eval_samples s "
                           "JOIN contamination c USING (eval_set, sample_id) WHERE s.eval_set = ? AND c.split = ? "
                           "ORDER BY s.row_idx", [args.eval, args.split]).fetchall()
    if not rows:
        raise SystemExit(f"no contamination rows for {args.eval} x {args.split} under {settings.home()}: "
                         "materialize the reports first (make lab)")
    pattern = re.compile(args.doc_pattern, re.S)
    docs = [(d.doc_id, (m.group(1) if (m := pattern.search(d.text)) else d.text))
            for d in PgStore(url=settings.database_url()).iter_documents(args.split)]
    texts = [questions[idx] for _, idx, *_ in rows]
    t0 = time.perf_counter()
    scores = process.cdist(texts, [t for _, t in docs], scorer=fuzz.ratio, workers=-1)
    best = scores.argmax(axis=1)
    print(f"{len(rows)} {args.eval} items x {len(docs):,} `{args.split}` documents, rapidfuzz fuzz.ratio on the "
          f"question text, in {time.perf_counter() - t0:.1f} s\n")

    groups = {"flagged": [i for i, r in enumerate(rows) if r[2]], "not flagged": [i for i, r in enumerate(rows)
                                                                                  if not r[2]]}
    summary = []
    for name, idx in groups.items():
        b = [float(scores[i, best[i]]) for i in idx]
        if b:
            summary.append([name, len(b), sum(x >= 100 for x in b), sum(x >= 90 for x in b),
                            sum(x >= NEAR for x in b), f"{statistics.median(b):.1f}"])
    print(table(["items", "n", "exact (100)", ">= 90", f">= {NEAR}", "median best"], summary))
    reasons: dict[str, list[float]] = {}
    for i in groups["flagged"]:
        reasons.setdefault(rows[i][3] or "", []).append(float(scores[i, best[i]]))
    print("\nflagged, by the evidence that fired: " + "; ".join(
        f"{r}: n {len(v)}, >= {NEAR}: {sum(x >= NEAR for x in v)}, median best {statistics.median(v):.1f}"
        for r, v in sorted(reasons.items(), key=lambda kv: -len(kv[1]))))
    for i in sorted(groups["flagged"], key=lambda i: -scores[i, best[i]])[:args.examples]:
        print(f"\n{rows[i][0]} (ratio {scores[i, best[i]]:.0f} to {docs[best[i]][0]}):\n  item: {texts[i][:160]!r}\n"
              f"  doc:  {docs[best[i]][1][:160]!r}")
    unexplained = [i for i in groups["flagged"] if scores[i, best[i]] < NEAR]
    if args.unexplained:
        print(f"\nflagged without a near-duplicate: {len(unexplained)} (showing {min(args.unexplained, len(unexplained))})")
        asy = sum("[asy]" in texts[i] for i in unexplained)
        print(f"of these, {asy} hold an Asymptote diagram ([asy] code, which problems share verbatim); of all "
              f"{len(texts)} items, {sum('[asy]' in t for t in texts)}")
        listed = [[rows[i][0], rows[i][3] or "", f"{rows[i][4] or 0:.3f}", rows[i][5], f"{scores[i, best[i]]:.0f}",
                   repr(texts[i][:70])] for i in unexplained[:args.unexplained]]
        print(table(["item", "evidence", "rare share", "longest span", "best ratio", "question"], listed,
                    align="llrrrl"))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
