"""`cprox sql`: a read-only query against the results DuckDB (eval samples, rollouts, proximity reports).

  cprox sql "SELECT * FROM contamination_summary" [--json] [--limit N] [--db PATH]
      prints a table (default: the first 100 rows) or one JSON object per row (--json: every row unless --limit)

The file (`CPROX_RESULTS_DB`, default `CPROX_HOME/results.duckdb`) is opened read-only: statements that write
fail with a message saying so. Bad SQL or a refused write exits with status 2.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

from cp_assets.lib import settings

err = Console(stderr=True)
out = Console()
TABLE_LIMIT = 100


def results_path(arg: str | None = None) -> Path:
    value = arg or os.environ.get("CPROX_RESULTS_DB")
    return Path(value).expanduser() if value else settings.home() / "results.duckdb"


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def cmd_sql(args) -> int:
    from cp_assets.lib.results_db import ResultsDB

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
        table = Table(title=f"{path}", title_justify="left")
        for c in columns:
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(*("" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v)) for v in r))
        out.print(table)
    if truncated:
        err.print(f"[dim]first {limit} rows shown; --limit N for more, --limit 0 for all[/dim]")
    return 0


def add_parsers(sub) -> None:
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
