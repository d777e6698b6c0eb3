"""`cprox explain`: one text's provenance in one answer (cp_assets/lib/provenance/explain.py).

  cprox explain "TEXT" | - | --rollout MODEL/SAMPLE_ID | --queries FILE  [--split S ...] [--tree all] [--json]
      verbatim spans (OLMoTrace rules) with their documents ranked by BM25, nearest chunks per split with their
      percentile, each sentence's cluster path, the contamination row of an eval question, the membership scores of a
      rollout's answer, and seen_score. --queries: one JSON line per line of FILE (one text per line).
  cprox serve [--host 127.0.0.1] [--port 8765]       the same as a web page (cp_assets/lib/provenance/web.py)
"""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

err = Console(stderr=True)
out = Console()


def _explainer(args):
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.provenance.explain import Explainer
    from cp_assets.lib.reports.results_db import ResultsDB

    return Explainer.open(PgStore(url=settings.database_url()), ResultsDB(), splits=args.split, tree=args.tree,
                          log=lambda m: err.print(f"[dim]{m}"))


def _show(r: dict) -> None:
    shown = Text(r["text"])
    for s in r["spans"]:
        shown.stylize("bold yellow", s["char_start"], s["char_end"])
    verdict = "seen" if r["seen"] else "not seen"
    out.rule(f"seen_score {r['seen_score']:.2f} ({verdict} at >= {r['threshold']}); {len(r['spans'])} verbatim span(s)")
    out.print(shown)
    if r["spans"]:
        t = Table(title="verbatim spans (documents by BM25 relevance to the text)")
        for col in ("split", "tokens", "count", "span", "best document"):
            t.add_column(col, overflow="fold")
        for s in r["spans"]:
            d = s["docs"][0] if s["docs"] else None
            t.add_row(s["split"], str(s["n_tokens"]), str(s["count"]), s["text"][:100],
                      f"{d['doc_id']}: {(d['snippet'] or '')[:160]}" if d else "")
        out.print(t)
    t = Table(title="nearest chunks per split (cosine distance, percentile in the split)")
    for col in ("split", "distance", "percentile", "document", "chunk"):
        t.add_column(col, overflow="fold")
    for split, hits in r["neighbours"].items():
        for h in hits[:1]:
            t.add_row(split, f"{h['distance']:.3f}", "-" if h["percentile"] is None else f"{h['percentile']:.1f}",
                      h["doc_id"], h["text"][:140])
    out.print(t)
    if r["clusters"]:
        for c in r["clusters"][:8]:
            out.print(f"[cyan]{r['cluster_tree']}[/cyan] {c['path']}  [dim](distance {c['distance']:.2f}: "
                      f"{c['sentence'][:60]})")
    for c in r["contamination"]:
        out.print(f"contamination in {c['split']}: flagged {c['flagged']} ({c['flag_reason'] or 'no evidence'}), "
                  f"13-gram overlap {c['ngram_overlap']:.2f}, nn distance {c['nn_distance']}")
    if r["membership"]:
        m = r["membership"]
        out.print(f"membership under {m['model_id']}: loss {m['loss']:.3f}, Min-K% 20 {m['min_k_20']:.3f} "
                  f"({m['n_tokens']} tokens)")
    out.print(f"[dim]{r['seconds']:.2f} s")


def cmd_explain(args) -> int:
    from cp_assets.lib.provenance.explain import ExplainError, check_text, rollout_text

    try:
        if args.queries:
            with open(args.queries, encoding="utf-8") as fh:
                texts = [line.rstrip("\n") for line in fh if line.strip()]
            if not texts:
                raise ExplainError(f"{args.queries}: no non-empty line to explain")
            for i, t in enumerate(texts):
                try:
                    check_text(t)
                except ExplainError as exc:
                    raise ExplainError(f"{args.queries}, line {i + 1}: {exc}") from None
            ex = _explainer(args)
            from tqdm import tqdm

            with tqdm(total=len(texts), unit="text", file=sys.stderr, disable=args.quiet) as bar:
                for start in range(0, len(texts), args.batch):
                    part = texts[start:start + args.batch]
                    for r in ex.explain_many(part):
                        print(json.dumps(r, ensure_ascii=False, default=str))
                    bar.update(len(part))
            return 0
        membership = source = None
        if args.rollout:
            from cp_assets.lib.reports.results_db import ResultsDB

            text, source, membership = rollout_text(ResultsDB(), args.rollout)
        else:
            if args.text is None:
                raise ExplainError("give a TEXT, '-' for stdin, --rollout MODEL/SAMPLE_ID or --queries FILE")
            text = sys.stdin.read() if args.text == "-" else args.text
        check_text(text)
        r = _explainer(args).explain(text, membership=membership, sources=source)
    except ExplainError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    if args.json:
        print(json.dumps(r, indent=1, ensure_ascii=False, default=str))
    else:
        _show(r)
    return 0


def add_parsers(sub) -> None:
    e = sub.add_parser("explain", help="one text's provenance: spans, neighbours, cluster path, contamination, "
                                       "membership, seen_score")
    e.add_argument("text", nargs="?", help='the text ("-": stdin)')
    e.add_argument("--rollout", help="explain a stored rollout's answer: MODEL/SAMPLE_ID")
    e.add_argument("--queries", help="a file with one text per line: one JSON line out per text")
    e.add_argument("--split", action="append", help="repeatable; default: every split with an index and embeddings")
    e.add_argument("--tree", default="all", help="the cluster tree of the sentence paths (default all)")
    e.add_argument("--batch", type=int, default=64, help="--queries: texts explained together")
    e.add_argument("--quiet", action="store_true", help="--queries: no progress bar")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_explain)


def cmd_serve(args) -> int:
    import uvicorn

    from cp_assets.lib.provenance.explain import ExplainError
    from cp_assets.lib.provenance.web import create_app, loopback_warning

    warning = loopback_warning(args.host)
    if warning:
        err.print(f"[bold red]{warning}")
    try:
        app = create_app(_explainer(args))
    except ExplainError as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 2
    err.print(f"explorer at http://{args.host}:{args.port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="the provenance explorer: a web page on 127.0.0.1 (no authentication)")
    s.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1; anything else is warned about")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--split", action="append", help="repeatable; default: every split with an index and embeddings")
    s.add_argument("--tree", default="all", help="the cluster tree of the sentence paths (default all)")
    s.set_defaults(fn=cmd_serve)
