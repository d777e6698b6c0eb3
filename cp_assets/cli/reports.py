"""`cprox sql`: a read-only query against the results DuckDB (eval samples, rollouts, proximity reports).

  cprox sql "SELECT * FROM contamination_summary" [--json] [--limit N] [--db PATH]
      prints a table (default: the first 100 rows) or one JSON object per row (--json: every row unless --limit)
  cprox reports [--eval SET ...] [--split S ...] [--model ID ...]
      materialize the proximity reports in-process: eval_proximity + contamination per eval set x split,
      rollout_proximity + rollout_traces per model x split, then difficulty_report and the SQL models

The file (`CPROX_RESULTS_DB`, default `CPROX_HOME/results.duckdb`) is opened read-only: statements that write
fail with a message saying so. Bad SQL or a refused write exits with status 2.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import duckdb
from rich.console import Console

from cp_assets.cli.tables import show, yes_no
from cp_assets.lib.core import settings

err = Console(stderr=True)
TABLE_LIMIT = 100


def results_path(arg: str | None = None) -> Path:
    return Path(arg).expanduser() if arg else settings.results_db()


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_sql(args) -> int:
    from cp_assets.lib.reports.results_db import ResultsDB

    path = results_path(args.db)
    if not path.exists():
        err.print(f"[red]error:[/red] no results database at {path} (materialize eval_samples, rollouts or the "
                  "reports first, or point CPROX_RESULTS_DB / --db at the file)")
        return 1
    limit = args.limit if args.limit is not None else (0 if args.json else TABLE_LIMIT)
    db = ResultsDB(path, lock_timeout_s=30)
    try:
        with db.connect(read_only=True) as con:
            cur = con.execute(args.query)
            columns = [d[0] for d in cur.description] if cur.description else []
            rows = cur.fetchmany(limit + 1) if limit > 0 and columns else (cur.fetchall() if columns else [])
    except duckdb.Error as exc:
        text = str(exc)
        if "read-only" in text or "read only" in text:
            err.print(f"[red]error:[/red] {path} is opened read-only: `cprox sql` only reads (the assets write "
                      f"it). DuckDB says: {text}")
        else:
            err.print(f"[red]error in the SQL:[/red] {type(exc).__name__}: {text}")
        return 2
    truncated = limit > 0 and len(rows) > limit
    rows = rows[:limit] if limit > 0 else rows
    if args.json:
        for r in rows:
            print(json.dumps({c: _json_value(v) for c, v in zip(columns, r)}, default=str, ensure_ascii=False))
    else:
        show(columns, [["" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in r]
                       for r in rows], str(path))
    if truncated:
        err.print(f"[dim]first {limit} rows shown; --limit N for more, --limit 0 for all[/dim]")
    return 0


def _stored(query: str) -> list[str]:
    path = results_path()
    if not path.exists():
        return []
    from cp_assets.lib.reports.results_db import ResultsDB

    with ResultsDB(path).connect(read_only=True) as con:
        try:
            return [r[0] for r in con.execute(query).fetchall()]
        except duckdb.CatalogException:
            return []


def cmd_reports(args) -> int:
    import dagster as dg

    from cp_assets.cli.common import add_models, instance, materialize
    from cp_assets.definitions import defs
    from cp_assets.lib.corpus.registry import load_registry

    inst = instance()
    graph = defs.resolve_asset_graph()
    splits = args.split or load_registry().names()
    eval_sets = args.eval or _stored("SELECT DISTINCT eval_set FROM eval_samples ORDER BY 1")
    models = args.model or _stored("SELECT DISTINCT model_id FROM rollouts ORDER BY 1")
    add_models(inst, models)
    table, failed = [], False

    def run(selection: list[str], key, label: str, figures) -> None:
        nonlocal failed
        res = materialize(inst, selection, key, args.log_level)
        failed |= not res.ok
        table.append([label, ", ".join(selection), yes_no(res.ok), figures(res.metadata) if res.ok else "",
                      f"{res.seconds:.1f}"])

    have_samples = set(_stored("SELECT DISTINCT eval_set FROM eval_samples"))
    for eval_set in eval_sets:
        if eval_set not in have_samples:
            run(["eval_samples"], eval_set, eval_set, lambda md: f"{md.get('eval_samples', {}).get('samples')} samples")
        for split in splits:
            run(["eval_proximity", "contamination"], dg.MultiPartitionKey({"eval_set": eval_set, "split": split}),
                f"{eval_set} x {split}", lambda md: "flagged {}/{}; median percentile {}".format(
                    md.get("contamination", {}).get("flagged"), md.get("contamination", {}).get("items"),
                    (md.get("eval_proximity", {}).get("percentile") or {}).get("p50", "?")))
    for model in models:
        for split in splits:
            run(["rollout_proximity", "rollout_traces"], dg.MultiPartitionKey({"model": model, "split": split}),
                f"{model} x {split}", lambda md: "{} rollouts; {} with verbatim spans".format(
                    md.get("rollout_traces", {}).get("rollouts"), md.get("rollout_traces", {}).get("rollouts_with_spans")))
    unpartitioned = [k.to_user_string() for k in graph.get_all_asset_keys()
                     if graph.get(k).group_name == "reports" and graph.get(k).partitions_def is None]
    run(sorted(unpartitioned), None, "all", lambda md: ", ".join(
        f"{a}: {m['rows']} rows" for a, m in md.items() if "rows" in m))
    show(["partition", "assets", "ok", "figures", "seconds"], table, "reports", stderr=True)
    return 1 if failed else 0


def add_parsers(sub) -> None:
    r = sub.add_parser("reports", help="materialize the proximity reports in-process (eval x split, model x split)")
    r.add_argument("--eval", action="append", help="repeatable; default: eval sets with samples in the results DB")
    r.add_argument("--split", action="append", help="repeatable; default: every split in the registry")
    r.add_argument("--model", action="append", help="repeatable; default: models with rollouts in the results DB")
    r.add_argument("--log-level", default="WARNING")
    r.set_defaults(fn=cmd_reports)

    q = sub.add_parser("sql", help="read-only SQL over the results DuckDB (samples, rollouts, reports)")
    q.add_argument("query", help='e.g. "SELECT * FROM contamination_summary"')
    q.add_argument("--json", action="store_true", help="one JSON object per row")
    q.add_argument("--limit", type=int, default=None,
                   help=f"at most N rows (default {TABLE_LIMIT} for the table, all for --json; 0: all)")
    q.add_argument("--db", default=None, help="the DuckDB file (default CPROX_RESULTS_DB or CPROX_HOME/results.duckdb)")
    q.set_defaults(fn=cmd_sql)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cprox", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add_parsers(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
