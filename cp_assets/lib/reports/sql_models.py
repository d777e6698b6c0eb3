"""SQL report models (`dbt_like_sql/*.sql`): discovery, dependencies and runs in the results DuckDB (no Dagster).

One file = one model = one table: `contamination_summary.sql` becomes table (and asset) `contamination_summary`.
A model's leading `--` comment lines are its description. The tables it reads come from `duckdb.get_table_names`
(DuckDB's own parser: CTE names are not tables). In DuckDB 2.0.1 that call also binds part of the query and fails
on `JOIN ... USING (...)` even over existing tables (and on table functions reading missing files), so on error the
table names are read from the parse tree (`json_serialize_sql`, nothing is bound) instead. Each table must be a
report table written by an asset (`report_tables.OWNERS`) or another model; anything else, a model named like an
asset-owned table, or a dependency cycle is a `SqlModelError` naming the file.

`run_model` replaces the model's table in one transaction (`CREATE OR REPLACE TABLE <name> AS <sql>`): a failing
query leaves the previous table. Asset-owned tables a model reads are created empty (their fixed schema) when no
asset has written them yet, so a report over missing inputs is an empty table, not an error. `run_model_report` is
the asset's work: the run and its metadata.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import duckdb

from cp_assets.lib.core import metadata, settings
from cp_assets.lib.reports import report_tables
from cp_assets.lib.reports.results_db import ResultsDB

SQL_DIR = settings.REPO_ROOT / "dbt_like_sql"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SqlModelError(ValueError):
    """A SQL model that cannot be planned or run: unknown table, cycle, bad name, or a failing query."""


@dataclass
class SqlModel:
    name: str
    path: Path
    sql: str
    description: str
    tables: set[str]  # every table the query reads
    upstream_assets: list[str] = field(default_factory=list)  # Python assets owning tables it reads
    upstream_models: list[str] = field(default_factory=list)  # other SQL models it reads

    @property
    def deps(self) -> list[str]:
        """Asset names this model's asset depends on."""
        return sorted(set(self.upstream_assets) | set(self.upstream_models))


@dataclass
class ModelRun:
    name: str
    rows: int
    columns: list[str]
    preview: list[tuple]


def header_comment(sql: str) -> str:
    """The leading `--` comment lines of a file, joined (blank lines between them kept as paragraph breaks)."""
    lines = []
    for line in sql.splitlines():
        s = line.strip()
        if s.startswith("--"):
            lines.append(s[2:].strip())
        elif s:
            break
        elif lines:
            lines.append("")
    return "\n".join(lines).strip()


def _parse_tree_tables(sql: str) -> set[str]:
    """Base tables in DuckDB's parse tree of `sql`, minus CTE names (nothing is bound)."""
    with duckdb.connect() as con:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()[0])
    if tree.get("error"):
        raise SqlModelError(tree.get("error_message", "cannot parse"))
    tables, ctes = set(), set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and "table_name" in node:
                tables.add(node["table_name"])
            for item in (node.get("cte_map") or {}).get("map", []):
                ctes.add(item.get("key"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return tables - ctes


def tables_read(sql: str) -> set[str]:
    """The tables a query reads: `duckdb.get_table_names`, or the parse tree where that call cannot bind."""
    try:
        return set(duckdb.get_table_names(sql))
    except duckdb.ParserException as exc:
        raise SqlModelError(f"cannot parse: {exc}") from exc
    except duckdb.Error:
        return _parse_tree_tables(sql)


def _read(path: Path) -> SqlModel:
    name = path.stem
    if not NAME.match(name):
        raise SqlModelError(f"{path}: the file stem {name!r} is the asset and table name; use [a-z][a-z0-9_]*")
    if name in report_tables.OWNERS:
        raise SqlModelError(f"{path}: {name!r} is a table written by asset {report_tables.OWNERS[name]!r}; "
                            "rename the file")
    sql = path.read_text(encoding="utf-8")
    body = sql.strip().rstrip(";").strip()
    if not body or not re.sub(r"--[^\n]*", "", body).strip():
        raise SqlModelError(f"{path}: no query in the file")
    try:
        tables = tables_read(body)
    except SqlModelError as exc:
        raise SqlModelError(f"{path}: {exc}") from None
    return SqlModel(name=name, path=path, sql=body, description=header_comment(sql), tables=tables)


def discover(directory: Path | str | None = None) -> dict[str, SqlModel]:
    """Every `*.sql` model of `directory` (default `dbt_like_sql/`), dependencies resolved, in run order
    (a model after the models it reads)."""
    directory = Path(directory) if directory else SQL_DIR
    models = {m.name: m for m in (_read(p) for p in sorted(directory.glob("*.sql")))}
    for m in models.values():
        unknown = sorted(t for t in m.tables if t not in report_tables.OWNERS and t not in models)
        if unknown:
            raise SqlModelError(
                f"{m.path}: reads {unknown}, which no asset writes and no SQL model defines; known tables: "
                f"{sorted(report_tables.OWNERS)} and models {sorted(models)}")
        m.upstream_assets = sorted({report_tables.OWNERS[t] for t in m.tables if t in report_tables.OWNERS})
        m.upstream_models = sorted(t for t in m.tables if t in models and t != m.name)
        if m.name in m.tables:
            raise SqlModelError(f"{m.path}: the model reads its own table {m.name!r} (a cycle)")
    return {name: models[name] for name in _topological(models)}


def _topological(models: dict[str, SqlModel]) -> list[str]:
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = path[path.index(name):] + [name]
            raise SqlModelError(f"{models[name].path}: dependency cycle {' -> '.join(cycle)}")
        state[name] = "active"
        for up in models[name].upstream_models:
            visit(up, path + [name])
        state[name] = "done"
        order.append(name)

    for name in models:
        visit(name, [])
    return order


def run_model(db: ResultsDB, model: SqlModel, preview_rows: int = 10) -> ModelRun:
    """`CREATE OR REPLACE TABLE <name> AS <sql>` in one transaction; the row count and the first rows."""
    with db.connect() as con:
        report_tables.ensure(con, *sorted(t for t in model.tables if t in report_tables.DDL))
        con.execute("BEGIN")
        try:
            con.execute(f'CREATE OR REPLACE TABLE "{model.name}" AS\n{model.sql}')
            rows = con.execute(f'SELECT count(*) FROM "{model.name}"').fetchone()[0]
            cur = con.execute(f'SELECT * FROM "{model.name}" LIMIT {int(preview_rows)}')
            columns, preview = [c[0] for c in cur.description], cur.fetchall()
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise SqlModelError(f"{model.path}: {type(exc).__name__}: {exc}") from exc
    return ModelRun(model.name, int(rows), columns, preview)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> metadata.Markdown:
    """A markdown table (floats to `digits` significant digits, long text cut, pipes escaped)."""
    return metadata.table([dict(zip(columns, r)) for r in rows], list(columns), digits)


def run_model_report(db: ResultsDB, model: SqlModel, log: Callable[[str], None] = print) -> dict:
    """A SQL model's asset work: `run_model`, and the metadata (row count, columns, the query, the first rows)."""
    run = run_model(db, model)
    log(f"{model.name}: {run.rows} rows")
    return {"rows": run.rows, "columns": ", ".join(run.columns),
            "sql": metadata.Markdown(f"```sql\n{model.sql}\n```"),
            "preview": markdown_table(run.columns, run.preview) if run.preview else metadata.Markdown("(no rows)")}
