"""All SQL against Postgres + pgvector: schema, atomic per-shard replacement, the partition registry, search.

Tables
  cprox_documents(split, shard, doc_id, ...)   raw_corpus, replaced per shard in one transaction
  cprox_chunks(split, shard, chunk_id, ...)    chunks, replaced per shard in one transaction
  emb_<model>...                               embeddings, a leaf per split and shard (`pgvector_vectors.py`)
  cprox_partitions(kind, model_slug, split, shard, n_rows, version)   what each published shard holds

A split that is not cut into shards is the one shard `00000`; every read of a split (`iter_documents`, `chunk_rows`,
`count`, `search`, `load_matrix`) reads all of its published shards. Document ids and chunk ids stay unique within a
split across shards (primary keys), so a document read by two shards is an error, not a duplicate.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from cp_assets.lib.corpus import embedded_pg
from cp_assets.lib.corpus.chunking import Chunk
from cp_assets.lib.corpus.pgvector_vectors import (METRICS, SCHEMA_LOCK, SINGLE_SHARD, BuildConflict, Hit,
                                                   VectorTables, build_table, emb_table, part_table, shard_table)
from cp_assets.lib.corpus.sources import Document

__all__ = ["BuildConflict", "DatabaseUnavailable", "Hit", "METRICS", "PgStore", "SCHEMA_LOCK", "SINGLE_SHARD",
           "build_table", "emb_table", "part_table", "shard_table"]

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS cprox_documents (
    split text NOT NULL, doc_id text NOT NULL, source text NOT NULL, locator text NOT NULL,
    byte_offset bigint NOT NULL, n_chars integer NOT NULL, meta jsonb NOT NULL, text text NOT NULL,
    PRIMARY KEY (split, doc_id));
CREATE TABLE IF NOT EXISTS cprox_chunks (
    split text NOT NULL, chunk_id text NOT NULL, doc_id text NOT NULL, idx integer NOT NULL,
    char_start integer NOT NULL, char_end integer NOT NULL, n_tokens integer NOT NULL,
    text_hash text NOT NULL, text text NOT NULL,
    PRIMARY KEY (split, chunk_id));
CREATE TABLE IF NOT EXISTS cprox_embedding_models (
    slug text PRIMARY KEY, model text NOT NULL, dim integer NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS cprox_partitions (
    kind text NOT NULL, model_slug text NOT NULL DEFAULT '', split text NOT NULL, n_rows bigint NOT NULL,
    version text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, model_slug, split));
-- shards (a database from before them: every row is shard 00000)
ALTER TABLE cprox_documents ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT '00000';
ALTER TABLE cprox_chunks ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT '00000';
ALTER TABLE cprox_partitions ADD COLUMN IF NOT EXISTS shard text NOT NULL DEFAULT '00000';
CREATE INDEX IF NOT EXISTS cprox_documents_shard ON cprox_documents (split, shard);
CREATE INDEX IF NOT EXISTS cprox_chunks_shard ON cprox_chunks (split, shard);
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = 'cprox_partitions'::regclass AND i.indisprimary AND a.attname = 'shard') THEN
    ALTER TABLE cprox_partitions DROP CONSTRAINT cprox_partitions_pkey;
    ALTER TABLE cprox_partitions ADD PRIMARY KEY (kind, model_slug, split, shard);
  END IF;
END $$;
"""
SCHEMA_MARKER = "cprox schema " + hashlib.sha256(SCHEMA.encode()).hexdigest()[:16]


class DatabaseUnavailable(RuntimeError):
    """Postgres cannot be reached; the message says which one (password hidden) and how to start the embedded one."""


READER_IDLE_PING_S = 1.0  # a reader idle longer is pinged before use (a restart may have closed it)


class PgStore(VectorTables):
    """One Postgres database. `url=None` means the embedded pgserver under `home` (started on first use)."""

    def __init__(self, url: str | None = None, home: Path | None = None):
        self.url, self.home = url, home
        self._resolved: str | None = None
        self._schema_ready = False
        self._reader: psycopg.Connection | None = None  # kept open for searches (a connect costs ~10 ms)
        self._reader_lock = threading.Lock()
        self._reader_used = 0.0  # monotonic time of the reader's last use

    # -- connections --------------------------------------------------------------------------------------------
    def dsn(self) -> str:
        """The connection URL; for the embedded server, (re)started when it is not running."""
        if self._resolved is None:
            if self.url:
                self._resolved = self.url
            else:
                try:
                    self._resolved = embedded_pg.start(self.home)
                except (subprocess.SubprocessError, OSError, AssertionError) as exc:
                    raise DatabaseUnavailable(
                        f"cannot start the embedded Postgres at {embedded_pg.pgdata(self.home)}: {exc} (its log: "
                        f"{embedded_pg.pgdata(self.home) / 'log'}). To fix: {embedded_pg.START_HINT}") from exc
        return self._resolved

    def describe(self) -> str:
        return embedded_pg.redact(self.url) if self.url else f"embedded pgserver at {embedded_pg.pgdata(self.home)}"

    def _unavailable(self, what: str, exc: Exception) -> DatabaseUnavailable:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        again = "" if self.url else "; a stopped embedded server is started again by the next connection (a retry)"
        return DatabaseUnavailable(f"{what} Postgres ({self.describe()}): {first}. To fix: {embedded_pg.START_HINT}"
                                   f"{again}")

    def connect(self, autocommit: bool = False) -> psycopg.Connection:
        """A new connection; `DatabaseUnavailable` when the server cannot be reached. A stopped embedded server is
        not restarted by the call that finds it gone (that call fails), but by the next one (a retry)."""
        try:
            conn = psycopg.connect(self.dsn(), autocommit=autocommit, connect_timeout=10)
        except psycopg.OperationalError as exc:
            if not self.url:
                self._resolved = None  # the next connect starts the embedded server again
            raise self._unavailable("cannot connect to", exc) from exc
        if self._schema_ready:
            try:
                register_vector(conn)  # a query: the server can go away between the connect and it
            except psycopg.OperationalError as exc:
                conn.close()
                if not self.url:
                    self._resolved = None
                raise self._unavailable("lost the connection to", exc) from exc
        return conn

    @contextmanager
    def _lost_is_unavailable(self, conn: psycopg.Connection) -> Iterator[None]:
        """A connection lost mid-use (the server stopped, restarted or crashed) raises `DatabaseUnavailable`."""
        try:
            yield
        except psycopg.OperationalError as exc:
            if not conn.broken:
                raise  # e.g. a statement timeout: the connection itself is fine
            if not self.url:
                self._resolved = None
            raise self._unavailable("lost the connection to", exc) from exc

    @staticmethod
    def _alive(conn: psycopg.Connection) -> bool:
        """An idle connection does not notice a server restart until its next statement: ask."""
        if conn.closed:
            return False
        try:
            conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            conn.close()
            return False

    @contextmanager
    def reader(self) -> Iterator[psycopg.Connection]:
        """The store's long-lived autocommit connection for reads, one user at a time; reopened when broken (also
        after a server restart)."""
        self.ensure_schema()
        with self._reader_lock:
            idle = time.monotonic() - self._reader_used > READER_IDLE_PING_S  # busy loops skip the ping
            if self._reader is None or self._reader.closed or (idle and not self._alive(self._reader)):
                self._reader = self.connect(autocommit=True)
            self._reader_used = time.monotonic()
            try:
                with self._lost_is_unavailable(self._reader):
                    yield self._reader
            except (psycopg.OperationalError, DatabaseUnavailable):
                self._reader.close()
                raise

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection]:
        self.ensure_schema()
        with self.connect() as conn, self._lost_is_unavailable(conn):
            yield conn

    def ensure_schema(self) -> None:
        """Create tables and the vector extension if missing (idempotent, safe from several processes).

        A database already at this SCHEMA (its marker comment on cprox_partitions) is only read, never altered: the
        DDL's ALTER TABLEs take exclusive locks, and a step process running them while another process is inside a
        shard's replace transaction and reading documents on a second connection deadlocked (unseen by Postgres's
        detector, the wait closing through the client)."""
        if self._schema_ready:
            return
        with self.connect() as conn:
            current = conn.execute("SELECT obj_description(to_regclass('cprox_partitions'), 'pg_class')").fetchone()
            if current[0] != SCHEMA_MARKER:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)
                conn.execute(f"COMMENT ON TABLE cprox_partitions IS '{SCHEMA_MARKER}'")
        self._schema_ready = True

    # -- documents and chunks --------------------------------------------------------------------------------------
    def _replace(self, table: str, split: str, shard: str, columns: Sequence[str], rows: Iterable[tuple],
                 kind: str) -> int:
        n = 0
        with self.session() as conn, conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE split = %s AND shard = %s").format(sql.Identifier(table)),
                         (split, shard))
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, ("split", "shard", *columns))))
            try:
                with conn.cursor().copy(copy_sql) as copy:
                    for row in rows:
                        copy.write_row((split, shard, *row))
                        n += 1
            except psycopg.errors.UniqueViolation as exc:
                raise ValueError(f"split {split!r} shard {shard}: {exc.diag.message_detail or exc} is already in "
                                 "another shard of the split (a source read twice, or shards planned differently "
                                 "since it was written: re-materialize the split's shards)") from exc
            self._record_partition(conn, kind, "", split, n, shard)
        return n

    def replace_documents(self, split: str, docs: Iterable[Document], shard: str = SINGLE_SHARD) -> int:
        """Replace a shard's documents atomically: the shard shows its old rows until the new ones commit."""
        cols = ("doc_id", "source", "locator", "byte_offset", "n_chars", "meta", "text")
        rows = ((d.doc_id, d.source, d.locator, d.byte_offset, len(d.text), json.dumps(d.meta, default=str), d.text)
                for d in docs)
        return self._replace("cprox_documents", split, shard, cols, rows, "raw_corpus")

    def replace_chunks(self, split: str, chunks: Iterable[Chunk], shard: str = SINGLE_SHARD) -> int:
        cols = ("chunk_id", "doc_id", "idx", "char_start", "char_end", "n_tokens", "text_hash", "text")
        rows = ((c.chunk_id, c.doc_id, c.idx, c.char_start, c.char_end, c.n_tokens, c.text_hash, c.text)
                for c in chunks)
        return self._replace("cprox_chunks", split, shard, cols, rows, "chunks")

    @staticmethod
    def _where(split: str, shard: str | None) -> tuple[sql.Composable, tuple]:
        if shard is None:
            return sql.SQL("split = %s"), (split,)
        return sql.SQL("split = %s AND shard = %s"), (split, shard)

    def iter_documents(self, split: str, batch: int = 500, shard: str | None = None) -> Iterator[Document]:
        """The documents of a split (every published shard) or of one shard, by id."""
        where, args = self._where(split, shard)
        with self.session() as conn, conn.cursor(name=f"docs_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = batch
            cur.execute(sql.SQL("SELECT doc_id, split, source, locator, byte_offset, text, meta FROM cprox_documents "
                                "WHERE {} ORDER BY doc_id").format(where), args)
            for doc_id, split_, source, locator, offset, text, meta in cur:
                yield Document(doc_id, split_, source, locator, offset, text, meta)

    def document_texts(self, split: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """doc_id -> text for some documents of a split (snippets of traced spans)."""
        with self.reader() as conn:
            return dict(conn.execute("SELECT doc_id, text FROM cprox_documents WHERE split = %s AND doc_id = ANY(%s)",
                                     (split, list(doc_ids))).fetchall())

    def chunk_rows(self, split: str, shard: str | None = None) -> list[tuple[str, str, str, int]]:
        """(chunk_id, text_hash, text, n_tokens) of a split (every shard) or of one shard, in document order."""
        where, args = self._where(split, shard)
        with self.session() as conn:
            return conn.execute(sql.SQL("SELECT chunk_id, text_hash, text, n_tokens FROM cprox_chunks WHERE {} "
                                        "ORDER BY doc_id, idx").format(where), args).fetchall()

    COUNT_KINDS = ("raw_corpus", "chunks", "embeddings")

    def count(self, kind: str, split: str, model_slug: str = "", shard: str | None = None) -> int:
        """Rows of a split (or one shard) in one asset's table: `raw_corpus` (documents), `chunks`, or `embeddings`
        of a model slug."""
        if kind not in self.COUNT_KINDS:
            raise ValueError(f"unknown kind {kind!r}: one of {', '.join(self.COUNT_KINDS)}")
        if kind == "embeddings" and not model_slug:
            raise ValueError("count('embeddings', ...) needs the model slug of the vectors' table")
        table = {"raw_corpus": "cprox_documents", "chunks": "cprox_chunks"}.get(kind) or emb_table(model_slug)
        where, args = self._where(split, shard)
        with self.session() as conn:
            if not self._exists(conn, table):
                return 0
            return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(table), where),
                                args).fetchone()[0]

    def is_empty_shard(self, split: str, shard: str) -> bool:
        """The shard was read (`raw_corpus` recorded it) and holds no documents: a number past the split's plan."""
        return self.count("raw_corpus", split, shard=shard) == 0 and \
            self.partition_version("raw_corpus", split, shard=shard) is not None

    def _record_partition(self, conn, kind: str, slug: str, split: str, n: int, shard: str = SINGLE_SHARD) -> str:
        version = uuid.uuid4().hex
        conn.execute("INSERT INTO cprox_partitions (kind, model_slug, split, shard, n_rows, version) "
                     "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (kind, model_slug, split, shard) DO UPDATE SET "
                     "n_rows = EXCLUDED.n_rows, version = EXCLUDED.version, updated_at = now()",
                     (kind, slug, split, shard, n, version))
        return version

    def shard_partitions(self) -> list[dict]:
        """One row per published shard: kind, model_slug, split, shard, n_rows, version, updated_at."""
        with self.session() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute("SELECT kind, model_slug, split, shard, n_rows, version, updated_at FROM "
                               "cprox_partitions ORDER BY kind, model_slug, split, shard").fetchall()

    def partitions(self) -> list[dict]:
        """One row per published split: its shards' rows summed, a version combining theirs, the shard count."""
        out: dict[tuple, dict] = {}
        for row in self.shard_partitions():
            key = (row["kind"], row["model_slug"], row["split"])
            agg = out.setdefault(key, {"kind": key[0], "model_slug": key[1], "split": key[2], "n_rows": 0,
                                       "shards": 0, "updated_at": row["updated_at"], "_versions": []})
            agg["n_rows"] += row["n_rows"]
            agg["shards"] += 1
            agg["updated_at"] = max(agg["updated_at"], row["updated_at"])
            agg["_versions"].append(f"{row['shard']}={row['version']}")
        for agg in out.values():
            agg["version"] = _combined(agg.pop("_versions"))
        return list(out.values())

    def partition_version(self, kind: str, split: str, model_slug: str = "", shard: str | None = None) -> str | None:
        """The version of one published shard, or of the split (every shard's, combined); None when unpublished."""
        where, args = self._where(split, shard)
        with self.reader() as conn:
            rows = conn.execute(sql.SQL("SELECT shard, version FROM cprox_partitions WHERE kind = %s AND "
                                        "model_slug = %s AND {} ORDER BY shard").format(where),
                                (kind, model_slug, *args)).fetchall()
        if not rows:
            return None
        return rows[0][1] if shard is not None else _combined([f"{h}={v}" for h, v in rows])

    def drop_split(self, split: str) -> None:
        """Remove a split everywhere (documents, chunks, every model's vectors and build tables), in one transaction."""
        self._drop(split, None)

    def drop_shard(self, split: str, shard: str) -> None:
        """Remove one shard of a split everywhere (a shard the plan no longer has), in one transaction."""
        self._drop(split, shard)

    def _drop(self, split: str, shard: str | None) -> None:
        where, args = self._where(split, shard)
        with self.session() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            self._drop_vector_tables(conn, split, shard)
            for table in ("cprox_chunks", "cprox_documents", "cprox_partitions"):
                conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(table), where), args)

    @staticmethod
    def _exists(conn, table: str) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]

    def chunk_texts(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """(split, chunk_id) -> (doc_id, text)."""
        if not keys:
            return {}
        with self.reader() as conn:
            rows = conn.execute("SELECT c.split, c.chunk_id, c.doc_id, c.text FROM cprox_chunks c JOIN "
                                "unnest(%s::text[], %s::text[]) AS k(split, chunk_id) USING (split, chunk_id)",
                                ([s for s, _ in keys], [c for _, c in keys])).fetchall()
        return {(s, c): (d, t) for s, c, d, t in rows}


def _combined(versions: list[str]) -> str:
    """One version for a split from its shards' `shard=version` strings (sorted): a single shard keeps its own."""
    versions = sorted(versions)
    if len(versions) == 1:
        return versions[0].split("=", 1)[1]
    return hashlib.sha256("\n".join(versions).encode()).hexdigest()[:32]
