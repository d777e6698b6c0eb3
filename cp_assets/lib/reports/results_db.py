"""The results DuckDB file (`CPROX_HOME/results.duckdb`): eval samples and rollouts, read by the SQL reports.

Rollouts are keyed by (sample_id, model_id, params_hash) and written as they complete, so a killed run resumes and a
rerun with the same parameters generates nothing. A Rollout round-trips losslessly: columns hold the scalar fields,
lists and timestamps natively, `params` and `metadata` as JSON; rows are turned back into `Rollout` by pydantic.
DuckDB allows one writing process at a time: connections are short and retried while another process holds the lock.

A corrupt or truncated file (DuckDB refuses to open it, or a read fails its block checksum) is never used and never
deleted: the file (and its .wal) is moved aside to `results.duckdb.corrupt-<UTC timestamp>` (+ `.wal`, so
`duckdb results.duckdb.corrupt-...` still finds it for salvage), a fresh empty database is created in its place, and
`ResultsDBCorrupt` is raised once, naming both files and what to re-materialize. Raising rather than carrying on
quietly is deliberate: the file holds results that are not trivially derived (rollouts cost model time), so the
researcher must learn that they are gone from the live database before a report silently covers less; the fresh
file means the next run (a Dagster retry included) just works, and re-materializing eval_samples, rollouts and the
reports fills it again (finished rollouts are regenerated: resumption keys on the database's content).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb

from cp_assets.lib.core import settings
from cp_assets.lib.evals.generation import Rollout

SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_samples (
    eval_set TEXT NOT NULL, sample_id TEXT NOT NULL, row_idx INTEGER NOT NULL, prompt TEXT NOT NULL,
    request_prompt TEXT NOT NULL, reference TEXT, metadata JSON, loaded_at TIMESTAMPTZ DEFAULT now(),
    PRIMARY KEY (sample_id));
CREATE TABLE IF NOT EXISTS rollouts (
    sample_id TEXT NOT NULL, eval_set TEXT, model_id TEXT NOT NULL, backend TEXT NOT NULL, prompt TEXT NOT NULL,
    system_prompt TEXT, rendered_prompt TEXT, completion TEXT NOT NULL, prompt_token_ids BIGINT[],
    completion_token_ids BIGINT[], logprobs DOUBLE[], params JSON NOT NULL, params_hash TEXT NOT NULL,
    finish_reason TEXT NOT NULL, latency_s DOUBLE NOT NULL, started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL, correct BOOLEAN, metadata JSON,
    PRIMARY KEY (sample_id, model_id, params_hash));
"""
ROLLOUT_COLUMNS = list(Rollout.model_fields)
CORRUPTION_SIGNS = ("is not a valid duckdb database file", "corrupt database file:",
                    "could not read enough bytes from file")
log = logging.getLogger(__name__)


class ResultsDBCorrupt(RuntimeError):
    """The results database was corrupt: moved aside (`moved_to`) and replaced by a fresh one."""

    def __init__(self, path: Path, moved_to: Path | None, cause: BaseException):
        self.path, self.moved_to = path, moved_to
        where = (f"moved aside to {moved_to} (nothing deleted: try `duckdb {moved_to}` to salvage tables)"
                 if moved_to else "already moved aside by another process")
        super().__init__(
            f"the results database {path} is corrupt or truncated ({_short(cause)}); it was {where} and a fresh, "
            f"empty database now stands at {path}. Re-materialize eval_samples, rollouts and the reports (and "
            f"cluster_names, tiny model results) to fill it again")


def is_corruption(exc: BaseException) -> bool:
    """Whether a DuckDB error says the file itself is damaged: DuckDB's own wording, in the error types it uses for
    I/O and commits (never a parser, binder, conversion or constraint error, which might quote a user's text)."""
    return (type(exc) in (duckdb.Error, duckdb.IOException, duckdb.FatalException, duckdb.InternalException,
                      duckdb.TransactionException)
            and any(s in str(exc).lower() for s in CORRUPTION_SIGNS))


def _short(exc: BaseException, n: int = 300) -> str:
    s = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return s if len(s) <= n else s[:n] + "..."
JSON_COLUMNS = {"params", "metadata"}


def rollout_row(r: Rollout) -> tuple:
    d = r.model_dump(mode="python")
    return tuple(json.dumps(r.model_dump(mode="json")[c]) if c in JSON_COLUMNS else d[c] for c in ROLLOUT_COLUMNS)


def row_rollout(row: dict[str, Any]) -> Rollout:
    d = {c: (json.loads(row[c]) if c in JSON_COLUMNS and isinstance(row[c], str) else row[c]) for c in ROLLOUT_COLUMNS}
    return Rollout.model_validate(d)


class ResultsDB:
    def __init__(self, path: Path | str | None = None, lock_timeout_s: float = 120.0):
        self.path = Path(path) if path else settings.home() / "results.duckdb"
        self.lock_timeout_s = lock_timeout_s
        self._schema_ready = False

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits while another process holds the file's write lock. A damaged file is
        moved aside and replaced (see the module docstring): `ResultsDBCorrupt`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline, delay = time.monotonic() + self.lock_timeout_s, 0.05
        while True:
            opened = _identity(self.path)
            try:
                conn = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.Error as exc:
                if is_corruption(exc):
                    self._recover(exc, opened)
                if not isinstance(exc, duckdb.IOException) or "lock" not in str(exc).lower() \
                        or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.path}: cannot open the results database: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            if not self._schema_ready and not read_only:
                conn.execute(SCHEMA)
                self._schema_ready = True
            yield conn
        except duckdb.Error as exc:
            if not is_corruption(exc):
                raise
            conn.close()
            self._recover(exc, opened)
        finally:
            conn.close()

    def _recover(self, exc: BaseException, opened: tuple | None) -> None:
        """Move the damaged file (+ .wal) aside, create a fresh database, raise `ResultsDBCorrupt`. Under a file
        lock; a file already replaced since `opened` (another process recovered first) is left alone."""
        moved = None
        with open(self.path.with_name(f"{self.path.name}.recover.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if opened is not None and _identity(self.path) == opened:
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
                n = 1
                while moved.exists():
                    n += 1
                    moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
                os.rename(self.path, moved)
                wal = self.path.with_name(self.path.name + ".wal")
                if wal.exists():
                    os.rename(wal, moved.with_name(moved.name + ".wal"))
                log.error("results database %s is corrupt (%s): moved aside to %s; starting a fresh one",
                          self.path, _short(exc), moved)
            self._schema_ready = False
            with duckdb.connect(str(self.path)) as conn:
                conn.execute(SCHEMA)
            self._schema_ready = True
        raise ResultsDBCorrupt(self.path, moved, exc) from exc

    # -- eval samples ---------------------------------------------------------------------------------------------
    def replace_samples(self, eval_set: str, rows: Sequence[dict[str, Any]]) -> int:
        """Replace one eval set's samples in one transaction (rows: sample_id, row_idx, prompt, request_prompt,
        reference, metadata)."""
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                conn.execute("DELETE FROM eval_samples WHERE eval_set = ?", [eval_set])
                conn.executemany(
                    "INSERT INTO eval_samples (eval_set, sample_id, row_idx, prompt, request_prompt, reference, "
                    "metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(eval_set, r["sample_id"], r["row_idx"], r["prompt"], r["request_prompt"], r.get("reference"),
                      json.dumps(r.get("metadata") or {})) for r in rows])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(rows)

    def samples(self, eval_set: str, limit: int | None = None) -> list[dict[str, Any]]:
        self._ensure()
        with self.connect(read_only=True) as conn:
            cur = conn.execute("SELECT * FROM eval_samples WHERE eval_set = ? ORDER BY row_idx" +
                               (f" LIMIT {int(limit)}" if limit else ""), [eval_set])
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row)) | {"metadata": json.loads(row[cols.index("metadata")] or "{}")}
                    for row in cur.fetchall()]

    # -- rollouts -------------------------------------------------------------------------------------------------
    def done_sample_ids(self, model_id: str, params_hash: str, eval_set: str | None = None) -> set[str]:
        self._ensure()
        with self.connect(read_only=True) as conn:
            q = "SELECT sample_id FROM rollouts WHERE model_id = ? AND params_hash = ?"
            args = [model_id, params_hash]
            if eval_set is not None:
                q, args = q + " AND eval_set = ?", args + [eval_set]
            return {r[0] for r in conn.execute(q, args).fetchall()}

    def write_rollouts(self, rollouts: Iterable[Rollout]) -> int:
        """Insert (or replace, same key) a batch of finished rollouts in one transaction."""
        rows = [rollout_row(r) for r in rollouts]
        if not rows:
            return 0
        cols = ", ".join(ROLLOUT_COLUMNS)
        with self.connect() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO rollouts ({cols}) VALUES ({', '.join('?' * len(cols.split(',')))})",
                             rows)
        return len(rows)

    def rollouts(self, eval_set: str | None = None, model_id: str | None = None,
                 params_hash: str | None = None) -> list[Rollout]:
        self._ensure()
        where, args = [], []
        for col, val in (("eval_set", eval_set), ("model_id", model_id), ("params_hash", params_hash)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        q = f"SELECT {', '.join(ROLLOUT_COLUMNS)} FROM rollouts" + (f" WHERE {' AND '.join(where)}" if where else "")
        with self.connect(read_only=True) as conn:
            cur = conn.execute(q + " ORDER BY eval_set, sample_id, model_id", args)
            return [row_rollout(dict(zip(ROLLOUT_COLUMNS, row))) for row in cur.fetchall()]

    def export_rollouts(self, path: Path | str, **filters: str) -> Path:
        """Rollouts to Parquet (zstd); `read_parquet_rollouts` reads them back into `Rollout` objects."""
        path = Path(path)
        where = " AND ".join(f"{k} = ?" for k in filters)
        with self.connect(read_only=True) as conn:
            conn.execute(f"COPY (SELECT {', '.join(ROLLOUT_COLUMNS)} FROM rollouts"
                         + (f" WHERE {where}" if where else "") + f") TO '{str(path).replace(chr(39), chr(39) * 2)}' (FORMAT parquet, COMPRESSION zstd)",
                         list(filters.values()))
        return path

    def _ensure(self) -> None:
        if not self._schema_ready:
            with self.connect():
                pass


def _identity(path: Path) -> tuple | None:
    """(device, inode) of the file, None when there is none: tells a replaced file from the one opened (the damaged
    file is renamed, never deleted, so its inode cannot be reused by the fresh one)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def read_parquet_rollouts(path: Path | str) -> list[Rollout]:
    with duckdb.connect() as conn:
        cur = conn.execute("SELECT * FROM read_parquet(?)", [str(path)])
        cols = [c[0] for c in cur.description]
        return [row_rollout(dict(zip(cols, row))) for row in cur.fetchall()]
