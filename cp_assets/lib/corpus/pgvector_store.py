"""All SQL against Postgres + pgvector: schema, atomic per-split replacement, resumable embedding builds, search.

Tables
  cprox_documents(split, doc_id, ...)      raw_corpus, replaced per split in one transaction
  cprox_chunks(split, chunk_id, ...)       chunks, replaced per split in one transaction
  emb_<model>                              embeddings, PARTITION BY LIST (split), one HNSW (cosine) index per split
  emb_<model>__<split>__build              a split being embedded: committed batch by batch, so a killed run
                                           resumes; published by a detach/rename/attach swap in one transaction
  cprox_partitions(kind, model_slug, split, n_rows, version)   what each published partition holds
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from cp_assets.lib.corpus import embedded_pg
from cp_assets.lib.corpus.chunking import Chunk
from cp_assets.lib.corpus.sources import Document

METRICS = {
    "cosine": "embedding <=> {q}",
    "l2": "embedding <-> {q}",
    "inner_product": "embedding <#> {q}",  # pgvector's negative inner product: smaller is closer
    "l1": "l1_distance(embedding, {q})",
}
SCHEMA_LOCK = 7_310_001  # advisory lock id serializing schema DDL across processes

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
"""


class DatabaseUnavailable(RuntimeError):
    """Postgres cannot be reached; the message says which one (password hidden) and how to start the embedded one."""


class BuildConflict(RuntimeError):
    """Another process is building the same split's embeddings right now."""


@dataclass
class Hit:
    rank: int
    distance: float
    metric: str
    split: str
    doc_id: str
    chunk_id: str
    text: str


READER_IDLE_PING_S = 1.0  # a reader idle longer is pinged before use (a restart may have closed it)


def emb_table(slug: str) -> str:
    return f"emb_{slug}"


def part_table(slug: str, split: str) -> str:
    return f"emb_{slug}__{split}"


def build_table(slug: str, split: str) -> str:
    return f"emb_{slug}__{split}__build"


class PgStore:
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
            register_vector(conn)
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
        """Create tables and the vector extension if missing (idempotent, safe from several processes)."""
        if self._schema_ready:
            return
        with self.connect() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            conn.execute(SCHEMA)
        self._schema_ready = True

    # -- documents and chunks --------------------------------------------------------------------------------------
    def _replace(self, table: str, split: str, columns: Sequence[str], rows: Iterable[tuple], kind: str) -> int:
        n = 0
        with self.session() as conn, conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE split = %s").format(sql.Identifier(table)), (split,))
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))
            with conn.cursor().copy(copy_sql) as copy:
                for row in rows:
                    copy.write_row(row)
                    n += 1
            self._record_partition(conn, kind, "", split, n)
        return n

    def replace_documents(self, split: str, docs: Iterable[Document]) -> int:
        """Replace a split's documents atomically: the split shows its old rows until the new ones commit."""
        cols = ("split", "doc_id", "source", "locator", "byte_offset", "n_chars", "meta", "text")
        rows = ((split, d.doc_id, d.source, d.locator, d.byte_offset, len(d.text), json.dumps(d.meta, default=str),
                 d.text) for d in docs)
        return self._replace("cprox_documents", split, cols, rows, "raw_corpus")

    def replace_chunks(self, split: str, chunks: Iterable[Chunk]) -> int:
        cols = ("split", "chunk_id", "doc_id", "idx", "char_start", "char_end", "n_tokens", "text_hash", "text")
        rows = ((split, c.chunk_id, c.doc_id, c.idx, c.char_start, c.char_end, c.n_tokens, c.text_hash, c.text)
                for c in chunks)
        return self._replace("cprox_chunks", split, cols, rows, "chunks")

    def iter_documents(self, split: str, batch: int = 500) -> Iterator[Document]:
        with self.session() as conn, conn.cursor(name=f"docs_{uuid.uuid4().hex[:8]}") as cur:
            cur.itersize = batch
            cur.execute("SELECT doc_id, split, source, locator, byte_offset, text, meta FROM cprox_documents "
                        "WHERE split = %s ORDER BY doc_id", (split,))
            for doc_id, split_, source, locator, offset, text, meta in cur:
                yield Document(doc_id, split_, source, locator, offset, text, meta)

    def document_texts(self, split: str, doc_ids: Sequence[str]) -> dict[str, str]:
        """doc_id -> text for some documents of a split (snippets of traced spans)."""
        with self.reader() as conn:
            return dict(conn.execute("SELECT doc_id, text FROM cprox_documents WHERE split = %s AND doc_id = ANY(%s)",
                                     (split, list(doc_ids))).fetchall())

    def chunk_rows(self, split: str) -> list[tuple[str, str, str, int]]:
        """(chunk_id, text_hash, text, n_tokens) of a split, in document order."""
        with self.session() as conn:
            return conn.execute("SELECT chunk_id, text_hash, text, n_tokens FROM cprox_chunks WHERE split = %s "
                                "ORDER BY doc_id, idx", (split,)).fetchall()

    COUNT_KINDS = ("raw_corpus", "chunks", "embeddings")

    def count(self, kind: str, split: str, model_slug: str = "") -> int:
        """Rows of a split in one asset's table: `raw_corpus` (documents), `chunks`, or `embeddings` of a model slug."""
        if kind not in self.COUNT_KINDS:
            raise ValueError(f"unknown kind {kind!r}: one of {', '.join(self.COUNT_KINDS)}")
        if kind == "embeddings" and not model_slug:
            raise ValueError("count('embeddings', ...) needs the model slug of the vectors' table")
        table = {"raw_corpus": "cprox_documents", "chunks": "cprox_chunks"}.get(kind) or emb_table(model_slug)
        with self.session() as conn:
            if not self._exists(conn, table):
                return 0
            return conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE split = %s").format(sql.Identifier(table)),
                                (split,)).fetchone()[0]

    def _record_partition(self, conn, kind: str, slug: str, split: str, n: int) -> str:
        version = uuid.uuid4().hex
        conn.execute("INSERT INTO cprox_partitions (kind, model_slug, split, n_rows, version) "
                     "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kind, model_slug, split) DO UPDATE SET "
                     "n_rows = EXCLUDED.n_rows, version = EXCLUDED.version, updated_at = now()",
                     (kind, slug, split, n, version))
        return version

    def partitions(self) -> list[dict]:
        with self.session() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute("SELECT kind, model_slug, split, n_rows, version, updated_at FROM cprox_partitions "
                               "ORDER BY kind, model_slug, split").fetchall()

    def partition_version(self, kind: str, split: str, model_slug: str = "") -> str | None:
        with self.session() as conn:
            row = conn.execute("SELECT version FROM cprox_partitions WHERE kind=%s AND model_slug=%s AND split=%s",
                               (kind, model_slug, split)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _exists(conn, table: str) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]

    # -- embeddings -------------------------------------------------------------------------------------------------
    def ensure_embedding_table(self, slug: str, model: str, dim: int) -> None:
        """The per-model partitioned table; refuses a model whose dimension differs from the stored one."""
        with self.session() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            row = conn.execute("SELECT model, dim FROM cprox_embedding_models WHERE slug = %s", (slug,)).fetchone()
            if row and row[1] != dim:
                raise ValueError(f"table {emb_table(slug)} holds {row[1]}-dim vectors of {row[0]!r}, but the model "
                                 f"{model!r} gives {dim}: drop it with `cprox db reset-embeddings {slug}` first")
            conn.execute("INSERT INTO cprox_embedding_models (slug, model, dim) VALUES (%s, %s, %s) "
                         "ON CONFLICT (slug) DO NOTHING", (slug, model, dim))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (split text NOT NULL, chunk_id text NOT NULL, text_hash text NOT NULL,"
                " embedding vector({d}) NOT NULL, PRIMARY KEY (split, chunk_id)) PARTITION BY LIST (split)"
            ).format(t=sql.Identifier(emb_table(slug)), d=sql.Literal(dim)))
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)")
                         .format(i=sql.Identifier(f"{emb_table(slug)}_hnsw"), t=sql.Identifier(emb_table(slug))))

    @contextmanager
    def build_lock(self, slug: str, split: str) -> Iterator[None]:
        """Held while a split's embeddings are built, so two runs never write the same build table."""
        with self.connect(autocommit=True) as conn:
            got = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (f"emb:{slug}:{split}",)).fetchone()[0]
            if not got:
                raise BuildConflict(f"another run is embedding split {split!r} with model {slug!r} right now")
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"emb:{slug}:{split}",))
                except psycopg.OperationalError:
                    pass  # the connection is gone, and with it its session's lock (do not mask the real error)

    def live_matches_chunks(self, slug: str, split: str) -> bool:
        """True when the published partition holds exactly the current chunks (same ids and text hashes)."""
        with self.session() as conn:
            if not self._exists(conn, part_table(slug, split)):
                return False
            q = sql.SQL("SELECT (SELECT count(*) FROM cprox_chunks WHERE split = %(s)s) = (SELECT count(*) FROM {p})"
                        " AND (SELECT count(*) FROM {p} e JOIN cprox_chunks c ON c.split = %(s)s "
                        "AND c.chunk_id = e.chunk_id AND c.text_hash = e.text_hash) = (SELECT count(*) FROM {p})"
                        ).format(p=sql.Identifier(part_table(slug, split)))
            return bool(conn.execute(q, {"s": split}).fetchone()[0])

    def prepare_build(self, slug: str, split: str, dim: int) -> set[str]:
        """Create or resume the build table; keep rows that still match the chunks, reuse matching published rows.

        Returns the chunk ids already embedded (nothing to do for them)."""
        b, p = sql.Identifier(build_table(slug, split)), sql.Identifier(part_table(slug, split))
        with self.session() as conn, conn.transaction():
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {b} (split text NOT NULL CHECK (split = {s}), chunk_id text NOT NULL, "
                "text_hash text NOT NULL, embedding vector({d}) NOT NULL, PRIMARY KEY (split, chunk_id))"
            ).format(b=b, s=sql.Literal(split), d=sql.Literal(dim)))
            conn.execute(sql.SQL("DELETE FROM {b} e WHERE NOT EXISTS (SELECT 1 FROM cprox_chunks c WHERE "
                                 "c.split = e.split AND c.chunk_id = e.chunk_id AND c.text_hash = e.text_hash)")
                         .format(b=b))
            if self._exists(conn, part_table(slug, split)):
                conn.execute(sql.SQL("INSERT INTO {b} SELECT e.split, e.chunk_id, e.text_hash, e.embedding FROM {p} e "
                                     "JOIN cprox_chunks c ON c.split = e.split AND c.chunk_id = e.chunk_id AND "
                                     "c.text_hash = e.text_hash ON CONFLICT DO NOTHING").format(b=b, p=p))
            rows = conn.execute(sql.SQL("SELECT chunk_id FROM {b}").format(b=b)).fetchall()
        return {r[0] for r in rows}

    def write_build(self, slug: str, split: str, ids: Sequence[str], hashes: Sequence[str], vecs: np.ndarray) -> None:
        """Commit one batch of vectors into the build table (binary COPY)."""
        if not np.isfinite(vecs).all():
            bad = [ids[i] for i in np.where(~np.isfinite(vecs).all(axis=1))[0][:5]]
            raise ValueError(f"the encoder returned non-finite vectors for chunks {bad}")
        copy_sql = sql.SQL("COPY {} (split, chunk_id, text_hash, embedding) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(build_table(slug, split)))
        with self.session() as conn, conn.transaction(), conn.cursor().copy(copy_sql) as copy:
            copy.set_types(["text", "text", "text", "vector"])
            for cid, h, v in zip(ids, hashes, vecs):
                copy.write_row((split, cid, h, v))

    def publish_build(self, slug: str, split: str, expected: int, m: int = 16, ef_construction: int = 64) -> str:
        """Index the build table and swap it in for the split's partition in one transaction."""
        b, p, parent = build_table(slug, split), part_table(slug, split), emb_table(slug)
        with self.session() as conn:
            got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(b))).fetchone()[0]
            if got != expected:
                raise RuntimeError(f"build table {b} has {got} rows, expected {expected}: not published")
            # the HNSW graph needs ~2.5 KB per 384-d row in memory; past maintenance_work_mem it spills (much slower)
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                sql.Literal(f"{min(8192, max(512, expected * 25 // 10240 + 1))}MB")))
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{b}_hnsw")))
            conn.execute(sql.SQL("CREATE INDEX {i} ON {b} USING hnsw (embedding vector_cosine_ops) "
                                 "WITH (m = {m}, ef_construction = {efc})").format(
                i=sql.Identifier(f"{b}_hnsw"), b=sql.Identifier(b), m=sql.Literal(m), efc=sql.Literal(ef_construction)))
            conn.commit()
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(b)))  # else small splits skip the index
            conn.commit()
            with conn.transaction():
                if self._exists(conn, p):
                    conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                        sql.Identifier(parent), sql.Identifier(p)))
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(p)))
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(b), sql.Identifier(p)))
                conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(f"{b}_hnsw"), sql.Identifier(f"{p}_hnsw")))
                conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    sql.Identifier(parent), sql.Identifier(p), sql.Literal(split)))
                return self._record_partition(conn, "embeddings", slug, split, expected)

    def drop_build(self, slug: str, split: str) -> None:
        with self.session() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(build_table(slug, split))))

    def drop_embeddings(self, slug: str) -> None:
        with self.session() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(emb_table(slug))))
            for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                     (f"emb\\_{slug}\\_\\_%",)).fetchall():
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t)))
            conn.execute("DELETE FROM cprox_embedding_models WHERE slug = %s", (slug,))
            conn.execute("DELETE FROM cprox_partitions WHERE kind = 'embeddings' AND model_slug = %s", (slug,))

    def drop_split(self, split: str) -> None:
        """Remove a split everywhere (documents, chunks, every model's vectors and build tables), in one transaction."""
        with self.session() as conn, conn.transaction():
            for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                     (f"emb\\_%\\_\\_{split}%",)).fetchall():
                if t.endswith((f"__{split}", f"__{split}__build")):
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(t)))
            conn.execute("DELETE FROM cprox_chunks WHERE split = %s", (split,))
            conn.execute("DELETE FROM cprox_documents WHERE split = %s", (split,))
            conn.execute("DELETE FROM cprox_partitions WHERE split = %s", (split,))

    def embedding_health(self, slug: str, split: str) -> dict:
        """Row count, vector dimension, and rows with NULL or non-finite components, for asset checks."""
        with self.session() as conn:
            if not self._exists(conn, part_table(slug, split)):
                return {"rows": 0, "dims": [], "bad": 0}
            t = sql.Identifier(part_table(slug, split))
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()[0]
            dims = [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT vector_dims(embedding) FROM {}").format(t))]
            # NaN is not a valid pgvector input, but check anyway: NaN <> NaN, and inf overflows the norm.
            bad = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NULL OR "
                                       "vector_norm(embedding) = 'NaN'::float8 OR "
                                       "vector_norm(embedding) = 'Infinity'::float8").format(t)).fetchone()[0]
        return {"rows": rows, "dims": dims, "bad": bad}

    # -- search -----------------------------------------------------------------------------------------------------
    def search(self, slug: str, queries: np.ndarray, split: str | None = None, k: int = 5, metric: str = "cosine",
               exact: bool = False, ef_search: int = 100) -> list[list[Hit]]:
        """Top-k chunks for each query vector, through SQL (HNSW unless exact), pipelined over one connection."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: choose from {sorted(METRICS)}")
        expr = sql.SQL(METRICS[metric].format(q="%(q)s"))
        where = sql.SQL("WHERE split = %(split)s") if split else sql.SQL("")
        if exact:
            inner = sql.SQL("SELECT split, chunk_id, {e} AS distance FROM {t} {w} ORDER BY distance LIMIT %(k)s")
        else:  # HNSW (cosine) gives candidates; l2/ip rank the same on unit vectors, l1 re-ranks ef_search of them
            inner = sql.SQL("SELECT split, chunk_id, {e} AS distance FROM {t} {w} "
                            "ORDER BY embedding <=> %(q)s LIMIT %(cand)s")
        query = sql.SQL("WITH hits AS ({inner}) SELECT h.split, h.chunk_id, c.doc_id, c.text, h.distance FROM hits h "
                        "JOIN cprox_chunks c USING (split, chunk_id) ORDER BY h.distance LIMIT %(k)s").format(
            inner=inner.format(e=expr, t=sql.Identifier(emb_table(slug)), w=where))
        cand = max(k, ef_search) if metric == "l1" else k
        with self.reader() as conn:
            if not self._exists(conn, emb_table(slug)):
                raise LookupError(f"no embeddings for model {slug!r} yet: materialize the `embeddings` asset first")
            conn.execute("SET enable_indexscan = %s" % ("off" if exact else "on"))
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
            with conn.pipeline():
                curs = [conn.execute(query, {"q": q, "split": split, "k": k, "cand": cand}) for q in queries]
            results = []
            for cur in curs:
                results.append([Hit(r + 1, float(d), metric, s, doc, cid, text)
                                for r, (s, cid, doc, text, d) in enumerate(cur.fetchall())])
        return results

    def load_matrix(self, slug: str, split: str) -> tuple[list[str], np.ndarray]:
        """(chunk ids, float32 matrix) of one published split, in chunk-id order, by binary COPY."""
        ids, vecs = [], []
        q = sql.SQL("COPY (SELECT chunk_id, embedding FROM {} ORDER BY chunk_id) TO STDOUT (FORMAT BINARY)").format(
            sql.Identifier(part_table(slug, split)))
        with self.session() as conn, conn.cursor().copy(q) as copy:
            copy.set_types(["text", "vector"])
            for cid, vec in copy.rows():
                ids.append(cid)
                vecs.append(vec.to_numpy() if hasattr(vec, "to_numpy") else vec)
        return ids, (np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, 0), np.float32))

    def chunk_texts(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
        """(split, chunk_id) -> (doc_id, text)."""
        if not keys:
            return {}
        with self.session() as conn:
            rows = conn.execute("SELECT c.split, c.chunk_id, c.doc_id, c.text FROM cprox_chunks c JOIN "
                                "unnest(%s::text[], %s::text[]) AS k(split, chunk_id) USING (split, chunk_id)",
                                ([s for s, _ in keys], [c for _, c in keys])).fetchall()
        return {(s, c): (d, t) for s, c, d, t in rows}

    def embedded_splits(self, slug: str) -> list[str]:
        with self.session() as conn:
            rows = conn.execute("SELECT split FROM cprox_partitions WHERE kind = 'embeddings' AND model_slug = %s "
                                "ORDER BY split", (slug,)).fetchall()
        return [r[0] for r in rows]
