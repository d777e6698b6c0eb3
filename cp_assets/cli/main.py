"""`cprox`: the command line of corpus-proximity.

  cprox search "TEXT" [--split S] [--k 5] [--metric cosine] [--exact] [--json] [--queries FILE]
  cprox materialize [--split S ...] [--shard K ...] [--workers N]     every shard (DAGSTER_HOME); N runs at a time
  cprox shards plan|sync [--split S] [--prune]            how splits are cut into shards; sync their partitions
  cprox summary [--json]                                  documents, chunks, tokens, embeddings per split
  cprox splits [--json]                                   the corpus registry
  cprox db start|stop|status|url                          the embedded Postgres + pgvector
  cprox rollout --model ID "PROMPT" [--stream] [--json]   one generation (see `cprox rollout -h`)
  cprox models [--json]                                   the models registry
  cprox trace "TEXT" [--split S] [--min-tokens 8] [--json] verbatim spans of a text in a split (exact counts, docs)
  cprox sql "SELECT ..." [--json]                         query the results DuckDB (read-only)
  cprox annotate "TEXT" [--tree all] [--json]             each sentence's cluster path in a cluster tree
  cprox explain "TEXT"|-|--rollout M/ID|--queries F [--json] one text's provenance: spans, neighbours, clusters,
                                                          contamination, membership, seen_score
  cprox serve [--host 127.0.0.1] [--port 8765]           the provenance explorer, a web page (no authentication)
  cprox train [--run muon-s0 ...] [--no-sft]              train the memorization lab's models (training.yaml)
  cprox memorization [--model ID ...]                     verbatim recall, extraction, membership, comparisons
  cprox backfill ASSET ... --all|--partitions K,K [--wait] a Dagster backfill, run by the daemon (as from the UI)
"""

import argparse
import json
import os
import sys

from rich.console import Console

from cp_assets.cli.tables import show
from cp_assets.lib.core import settings
from cp_assets.lib.corpus import embedded_pg

err = Console(stderr=True)
out = Console()


def _store():
    from cp_assets.lib.corpus.pgvector_store import PgStore

    return PgStore(url=settings.database_url())


# -- search -----------------------------------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from cp_assets.lib.corpus.search import hits_json, search

    store = _store()
    opts = dict(split=args.split, k=args.k, metric=args.metric, exact=args.exact, ef_search=args.ef_search,
                engine=args.engine, model=args.model)
    if args.queries:
        with open(args.queries, encoding="utf-8") as fh:
            queries = [line.rstrip("\n") for line in fh if line.strip()]
        from tqdm import tqdm

        batch = 512
        with tqdm(total=len(queries), unit="query", file=sys.stderr, disable=args.quiet) as bar:
            for start in range(0, len(queries), batch):
                part = queries[start:start + batch]
                for q, hits in zip(part, search(store, part, **opts)):
                    print(json.dumps({"query": q, "results": hits_json(hits)}, ensure_ascii=False))
                bar.update(len(part))
        return 0
    if not args.text:
        err.print("[red]give a TEXT to search for, or --queries FILE[/red]")
        return 2
    with err.status("encoding and searching...", spinner="dots") if not args.json else _null():
        hits = search(store, [args.text], **opts)[0]
    if args.json:
        print(json.dumps(hits_json(hits), ensure_ascii=False, indent=1))
        return 0
    sampled = sorted({f"{h.split} {h.embed_share:.0%}" for h in hits if (h.embed_share or 1) < 1})
    show(["rank", "distance", "split", "chunk_id", "text"],
         [[str(h.rank), f"{h.distance:.4f}", h.split, h.chunk_id, h.text[:300].replace("\n", " ")] for h in hits],
         f"nearest chunks ({args.metric}{', exact' if args.exact else ''})"
         + (f"; embedded share of chunks: {', '.join(sampled)} (embed_sample: distances are upper bounds)"
            if sampled else ""))
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- summary -------------------------------------------------------------------------------------------------------------
def cmd_summary(args) -> int:
    from cp_assets.lib.corpus.encoder import model_slug

    store = _store()
    slug = model_slug(settings.embed_model())
    parts = store.partitions()
    by = {(p["kind"], p["split"]): p for p in parts if p["model_slug"] in ("", slug)}
    splits = sorted({p["split"] for p in parts})
    rows = [{"split": s, "documents": by.get(("raw_corpus", s), {}).get("n_rows", 0),
             "chunks": by.get(("chunks", s), {}).get("n_rows", 0),
             "embeddings": by.get(("embeddings", s), {}).get("n_rows", 0),
             "embedded_at": str(by.get(("embeddings", s), {}).get("updated_at", ""))[:19]} for s in splits]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    cols = ["split", "documents", "chunks", "embeddings", "embedded_at"]
    show(cols, [[str(r[c]) for c in cols] for r in rows],
         f"corpus-proximity: {store.describe()}, model {settings.embed_model()}")
    return 0


def cmd_splits(args) -> int:
    from cp_assets.lib.corpus.registry import load_registry

    reg = load_registry()
    data = {name: {"description": s.description, "sources": [src.model_dump(exclude_none=True, exclude_defaults=True)
                                                             for src in s.sources]} for name, s in reg.splits.items()}
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    show(["split", "sources", "description"],
         [[name, ", ".join(src.label() for src in s.sources), s.description] for name, s in reg.splits.items()],
         f"{reg.file} (data dir {reg.data_dir})")
    return 0


# -- database ------------------------------------------------------------------------------------------------------------
def cmd_db(args) -> int:
    if args.action == "start":
        if settings.database_url():
            err.print(f"CPROX_DATABASE_URL is set ({embedded_pg.redact(settings.database_url())}): not starting the "
                      "embedded server")
            return 0
        embedded_pg.start()
        _store().ensure_schema()
        out.print(f"embedded Postgres + pgvector running at {embedded_pg.pgdata()} (Unix socket only)")
    elif args.action == "stop":
        out.print("stopped" if embedded_pg.stop() else "not running")
    elif args.action == "url":
        print(settings.database_url() or embedded_pg.start())
    else:
        store = _store()
        with store.connect() as conn:
            version = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
            vec = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        out.print(f"{store.describe()}: {version}, pgvector {vec[0] if vec else 'not installed'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cprox", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="nearest corpus chunks of a text")
    s.add_argument("text", nargs="?")
    s.add_argument("--split", help="one split (default: all embedded splits)")
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--metric", default="cosine", choices=["cosine", "l2", "inner_product", "l1"])
    s.add_argument("--exact", action="store_true", help="exact scan instead of the HNSW index")
    s.add_argument("--ef-search", type=int, default=100, help="HNSW candidate list size (recall vs speed)")
    s.add_argument("--engine", default="auto", choices=["auto", "pgvector", "memory"])
    s.add_argument("--model", default=None, help="embedding model (default CPROX_EMBED_MODEL or all-MiniLM-L6-v2)")
    s.add_argument("--queries", help="file with one query per line; prints one JSON line per query")
    s.add_argument("--json", action="store_true")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(fn=cmd_search)

    for name, fn, text in (("summary", cmd_summary, "counts per split"), ("splits", cmd_splits, "the registry")):
        x = sub.add_parser(name, help=text)
        x.add_argument("--json", action="store_true")
        x.set_defaults(fn=fn)

    d = sub.add_parser("db", help="the embedded Postgres + pgvector")
    d.add_argument("action", choices=["start", "stop", "status", "url"])
    d.set_defaults(fn=cmd_db)

    from cp_assets.cli import backfill as cli_backfill
    from cp_assets.cli import clusters as cli_clusters
    from cp_assets.cli import corpus as cli_corpus
    from cp_assets.cli import explain as cli_explain
    from cp_assets.cli import memorization as cli_memorization
    from cp_assets.cli import models as cli_models
    from cp_assets.cli import reports as cli_reports
    from cp_assets.cli import tour as cli_tour
    from cp_assets.cli import trace as cli_trace

    cli_corpus.add_parsers(sub)
    cli_models.add_parsers(sub)
    cli_trace.add_parsers(sub)
    cli_explain.add_parsers(sub)
    cli_explain.add_serve_parser(sub)
    cli_reports.add_parsers(sub)
    cli_clusters.add_parsers(sub)
    cli_memorization.add_parsers(sub)
    cli_backfill.add_parsers(sub)
    cli_tour.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from cp_assets.lib.corpus.pgvector_store import DatabaseUnavailable
    from cp_assets.lib.corpus.registry import RegistryError
    from cp_assets.lib.corpus.sources import BadRecord
    from cp_assets.lib.evals.generation import GenerationError
    from cp_assets.lib.reports.results_db import ResultsDBCorrupt

    try:
        return args.fn(args)
    except (DatabaseUnavailable, RegistryError, BadRecord, GenerationError, LookupError, ValueError,
            FileNotFoundError, ResultsDBCorrupt) as exc:
        err.print(f"[red]error:[/red] {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
