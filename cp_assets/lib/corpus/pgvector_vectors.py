"""Embedding tables in pgvector, one leaf per split and shard: resumable builds, atomic publication, health, search.

    emb_<model>                      PARTITION BY LIST (split)
      emb_<model>__<split>           PARTITION BY LIST (shard)
        emb_<model>__<split>__<shard>        a leaf with its own HNSW (cosine) index
      emb_<model>__<split>__<shard>__build   a shard being embedded: committed batch by batch, so a killed run
                                             resumes; published by a detach/rename/attach swap in one transaction

Each shard's index is built by the step that embeds it, so shards index in parallel across workers. A query on a
split (or on every split) runs one ordered scan per leaf and Postgres merges them (Merge Append), so the split's top
k is exactly the best k of the per-shard top k. A database from before shards (one leaf per split, no `shard`
column) is converted on first use: its vectors move to `emb_<model>__legacy` and are reused, not re-embedded, by the
next build of each shard whose chunks they match. Used through `PgStore`, which mixes this class in.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Collection, Iterator, Sequence

import numpy as np
import psycopg
from psycopg import sql

SINGLE_SHARD = "00000"  # the shard of a split that is not cut (and of rows written before shards existed)
SCHEMA_LOCK = 7_310_001  # advisory lock id serializing schema DDL across processes
MAX_IDENT = 63  # Postgres truncates longer identifiers silently
METRICS = {
    "cosine": "embedding <=> {q}",
    "l2": "embedding <-> {q}",
    "inner_product": "embedding <#> {q}",  # pgvector's negative inner product: smaller is closer
    "l1": "l1_distance(embedding, {q})",
}


def ident(name: str) -> str:
    """`name`, or its first characters and a hash of the rest when it is longer than Postgres keeps."""
    if len(name) <= MAX_IDENT:
        return name
    return f"{name[:MAX_IDENT - 10]}_{hashlib.sha1(name.encode()).hexdigest()[:9]}"


def emb_table(slug: str) -> str:
    return ident(f"emb_{slug}")


def part_table(slug: str, split: str) -> str:
    """The split's table: every shard of it (partitioned by shard)."""
    return ident(f"emb_{slug}__{split}")


def shard_table(slug: str, split: str, shard: str) -> str:
    return ident(f"emb_{slug}__{split}__{shard}")


def build_table(slug: str, split: str, shard: str) -> str:
    return ident(f"emb_{slug}__{split}__{shard}__build")


def legacy_table(slug: str) -> str:
    return ident(f"emb_{slug}__legacy")


class BuildConflict(RuntimeError):
    """Another process is building the same shard's embeddings right now."""


@dataclass
class Hit:
    rank: int
    distance: float
    metric: str
    split: str
    doc_id: str
    chunk_id: str
    text: str
    embed_share: float | None = None  # the hit's split: vectors / chunks (below 1 under `embed_sample`)


class VectorTables:
    """The embedding half of `PgStore` (needs its `session`, `reader`, `connect`, `_exists` and
    `_record_partition`)."""

    def ensure_embedding_table(self, slug: str, model: str, dim: int) -> None:
        """The per-model partitioned table; refuses a model whose dimension differs from the stored one; converts a
        table from before shards (its vectors kept in `emb_<model>__legacy` for reuse)."""
        with self.session() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            row = conn.execute("SELECT model, dim FROM cprox_embedding_models WHERE slug = %s", (slug,)).fetchone()
            if row and row[1] != dim:
                raise ValueError(f"table {emb_table(slug)} holds {row[1]}-dim vectors of {row[0]!r}, but the model "
                                 f"{model!r} gives {dim}: drop it with `cprox db reset-embeddings {slug}` first")
            if self._exists(conn, emb_table(slug)) and not self._has_column(conn, emb_table(slug), "shard"):
                self._convert_legacy(conn, slug)
            conn.execute("INSERT INTO cprox_embedding_models (slug, model, dim) VALUES (%s, %s, %s) "
                         "ON CONFLICT (slug) DO NOTHING", (slug, model, dim))
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (split text NOT NULL, shard text NOT NULL, chunk_id text NOT NULL, "
                "text_hash text NOT NULL, embedding vector({d}) NOT NULL, PRIMARY KEY (split, shard, chunk_id)) "
                "PARTITION BY LIST (split)").format(t=sql.Identifier(emb_table(slug)), d=sql.Literal(dim)))
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)")
                         .format(i=sql.Identifier(f"{emb_table(slug)}_hnsw"), t=sql.Identifier(emb_table(slug))))

    @staticmethod
    def _has_column(conn, table: str, column: str) -> bool:
        return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND "
                            "attname = %s AND NOT attisdropped)", (table, column)).fetchone()[0]

    def _convert_legacy(self, conn, slug: str) -> None:
        legacy = sql.Identifier(legacy_table(slug))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {l} AS SELECT split, chunk_id, text_hash, embedding FROM {t}")
                     .format(l=legacy, t=sql.Identifier(emb_table(slug))))
        conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(emb_table(slug))))
        for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                 (f"emb\\_{slug}\\_\\_%\\_\\_build",)).fetchall():
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(t)))
        conn.execute("DELETE FROM cprox_partitions WHERE kind = 'embeddings' AND model_slug = %s", (slug,))

    def _ensure_split_table(self, conn, slug: str, split: str) -> None:
        p = part_table(slug, split)
        if self._exists(conn, p):
            return
        conn.execute(sql.SQL("CREATE TABLE {p} PARTITION OF {t} FOR VALUES IN ({s}) PARTITION BY LIST (shard)")
                     .format(p=sql.Identifier(p), t=sql.Identifier(emb_table(slug)), s=sql.Literal(split)))

    @contextmanager
    def build_lock(self, slug: str, split: str, shard: str = SINGLE_SHARD) -> Iterator[None]:
        """Held while a shard's embeddings are built, so two runs never write the same build table."""
        key = f"emb:{slug}:{split}:{shard}"
        with self.connect(autocommit=True) as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
                raise BuildConflict(f"another run is embedding split {split!r} shard {shard} with model {slug!r} "
                                    "right now")
            try:
                yield
            finally:
                try:
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))
                except psycopg.OperationalError:
                    pass  # the connection is gone, and with it its session's lock (do not mask the real error)

    def live_matches_chunks(self, slug: str, split: str, shard: str = SINGLE_SHARD,
                            chunk_ids: Collection[str] | None = None) -> bool:
        """True when the published shard holds exactly its current chunks (same ids and text hashes); with
        `chunk_ids` (an `embed_sample` draw), exactly those of its chunks."""
        with self.session() as conn:
            if not self._exists(conn, shard_table(slug, split, shard)):
                return False
            q = sql.SQL("SELECT (SELECT count(*) FROM cprox_chunks c WHERE split = %(s)s AND shard = %(h)s AND {i}) = "
                        "(SELECT count(*) FROM {p}) AND (SELECT count(*) FROM {p} e JOIN cprox_chunks c ON "
                        "c.split = %(s)s AND c.shard = %(h)s AND c.chunk_id = e.chunk_id AND c.text_hash = e.text_hash"
                        " AND {i}) = (SELECT count(*) FROM {p})").format(
                p=sql.Identifier(shard_table(slug, split, shard)), i=_chosen("c"))
            return bool(conn.execute(q, {"s": split, "h": shard, "ids": _ids(chunk_ids)}).fetchone()[0])

    def prepare_build(self, slug: str, split: str, dim: int, shard: str = SINGLE_SHARD,
                      chunk_ids: Collection[str] | None = None) -> set[str]:
        """Create or resume the shard's build table; keep rows that still match its chunks (with `chunk_ids`, an
        `embed_sample` draw: only those chunks); reuse matching vectors from the published split (any shard: a chunk
        may have moved) and from a legacy table.

        Returns the chunk ids already embedded (nothing to do for them)."""
        b = sql.Identifier(build_table(slug, split, shard))
        args = {"s": split, "h": shard, "ids": _ids(chunk_ids)}
        with self.session() as conn, conn.transaction():
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {b} (split text NOT NULL CHECK (split = {s}), shard text NOT NULL CHECK "
                "(shard = {h}), chunk_id text NOT NULL, text_hash text NOT NULL, embedding vector({d}) NOT NULL, "
                "PRIMARY KEY (split, shard, chunk_id))"
            ).format(b=b, s=sql.Literal(split), h=sql.Literal(shard), d=sql.Literal(dim)))
            conn.execute(sql.SQL("DELETE FROM {b} e WHERE NOT EXISTS (SELECT 1 FROM cprox_chunks c WHERE "
                                 "c.split = e.split AND c.shard = e.shard AND c.chunk_id = e.chunk_id AND "
                                 "c.text_hash = e.text_hash) OR NOT {i}").format(b=b, i=_chosen("e")), args)
            for source in (part_table(slug, split), legacy_table(slug)):
                if self._exists(conn, source):
                    conn.execute(sql.SQL(
                        "INSERT INTO {b} SELECT c.split, c.shard, c.chunk_id, c.text_hash, e.embedding FROM {p} e "
                        "JOIN cprox_chunks c ON c.split = e.split AND c.chunk_id = e.chunk_id AND "
                        "c.text_hash = e.text_hash WHERE c.split = %(s)s AND c.shard = %(h)s AND {i} "
                        "ON CONFLICT DO NOTHING").format(b=b, p=sql.Identifier(source), i=_chosen("c")), args)
            rows = conn.execute(sql.SQL("SELECT chunk_id FROM {b}").format(b=b)).fetchall()
        return {r[0] for r in rows}

    def chunk_sources(self, split: str, shard: str | None = None) -> dict[str, str | None]:
        """chunk_id -> the source of its document (None: no such document), of a split or one shard
        (`embed_sample` rates are per source)."""
        shard_cond = sql.SQL("") if shard is None else sql.SQL(" AND c.shard = %(h)s")
        with self.session() as conn:
            return dict(conn.execute(sql.SQL(
                "SELECT c.chunk_id, d.source FROM cprox_chunks c LEFT JOIN cprox_documents d ON d.split = c.split AND "
                "d.doc_id = c.doc_id WHERE c.split = %(s)s{}").format(shard_cond), {"s": split, "h": shard}).fetchall())

    def write_build(self, slug: str, split: str, ids: Sequence[str], hashes: Sequence[str], vecs: np.ndarray,
                    shard: str = SINGLE_SHARD) -> None:
        """Commit one batch of vectors into the shard's build table (binary COPY)."""
        if not np.isfinite(vecs).all():
            bad = [ids[i] for i in np.where(~np.isfinite(vecs).all(axis=1))[0][:5]]
            raise ValueError(f"the encoder returned non-finite vectors for chunks {bad}")
        copy_sql = sql.SQL("COPY {} (split, shard, chunk_id, text_hash, embedding) FROM STDIN (FORMAT BINARY)"
                           ).format(sql.Identifier(build_table(slug, split, shard)))
        with self.session() as conn, conn.transaction(), conn.cursor().copy(copy_sql) as copy:
            copy.set_types(["text", "text", "text", "text", "vector"])
            for cid, h, v in zip(ids, hashes, vecs):
                copy.write_row((split, shard, cid, h, v))

    def publish_build(self, slug: str, split: str, expected: int, shard: str = SINGLE_SHARD, m: int = 16,
                      ef_construction: int = 64) -> str:
        """Index the shard's build table and swap it in for the shard's leaf in one transaction."""
        b, leaf, parent = build_table(slug, split, shard), shard_table(slug, split, shard), part_table(slug, split)
        with self.session() as conn:
            got = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(b))).fetchone()[0]
            if got != expected:
                raise RuntimeError(f"build table {b} has {got} rows, expected {expected}: not published")
            # the HNSW graph needs ~2.5 KB per 384-d row in memory; past maintenance_work_mem it spills (much slower)
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(
                sql.Literal(f"{min(8192, max(512, expected * 25 // 10240 + 1))}MB")))
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(ident(f"{b}_hnsw"))))
            conn.execute(sql.SQL("CREATE INDEX {i} ON {b} USING hnsw (embedding vector_cosine_ops) "
                                 "WITH (m = {m}, ef_construction = {efc})").format(
                i=sql.Identifier(ident(f"{b}_hnsw")), b=sql.Identifier(b), m=sql.Literal(m),
                efc=sql.Literal(ef_construction)))
            conn.commit()
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(b)))  # else small shards skip the index
            conn.commit()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                self._ensure_split_table(conn, slug, split)
                if self._exists(conn, leaf):
                    conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(
                        sql.Identifier(parent), sql.Identifier(leaf)))
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(leaf)))
                conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(b), sql.Identifier(leaf)))
                conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(ident(f"{b}_hnsw")), sql.Identifier(ident(f"{leaf}_hnsw"))))
                conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    sql.Identifier(parent), sql.Identifier(leaf), sql.Literal(shard)))
                return self._record_partition(conn, "embeddings", slug, split, expected, shard)

    def drop_build(self, slug: str, split: str, shard: str = SINGLE_SHARD) -> None:
        with self.session() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(build_table(slug, split, shard))))

    def drop_vectors(self, slug: str, split: str, shard: str) -> None:
        """One model's vectors of one shard (an empty shard's, or a retired one's) and its partition record."""
        with self.session() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for t in (shard_table(slug, split, shard), build_table(slug, split, shard)):
                if self._exists(conn, t):
                    conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(t)))
            conn.execute("DELETE FROM cprox_partitions WHERE kind = 'embeddings' AND model_slug = %s AND split = %s "
                         "AND shard = %s", (slug, split, shard))

    def drop_embeddings(self, slug: str) -> None:
        with self.session() as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(emb_table(slug))))
            for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                     (f"emb\\_{slug}\\_\\_%",)).fetchall():
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t)))
            conn.execute("DELETE FROM cprox_embedding_models WHERE slug = %s", (slug,))
            conn.execute("DELETE FROM cprox_partitions WHERE kind = 'embeddings' AND model_slug = %s", (slug,))

    def _drop_vector_tables(self, conn, split: str, shard: str | None) -> None:
        """Every model's vectors (and build tables) of a split, or of one shard of it."""
        for (slug,) in conn.execute("SELECT slug FROM cprox_embedding_models").fetchall():
            tables = ([part_table(slug, split)] if shard is None else [shard_table(slug, split, shard)])
            for t in tables:
                if self._exists(conn, t):
                    conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(sql.Identifier(t)))
            like = f"emb\\_{slug}\\_\\_{split}\\_\\_" + ("%" if shard is None else shard) + "\\_\\_build"
            for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (like,)).fetchall():
                conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(t)))

    def embedding_health(self, slug: str, split: str, shard: str | None = None,
                         chunk_ids: Collection[str] | None = None) -> dict:
        """Row count, vector dimension, and rows with NULL or non-finite components, of a split or one shard; with
        `chunk_ids`, also `matched`: how many distinct ones of them hold a vector."""
        table = part_table(slug, split) if shard is None else shard_table(slug, split, shard)
        with self.session() as conn:
            if not self._exists(conn, table):
                return {"rows": 0, "dims": [], "bad": 0} | ({} if chunk_ids is None else {"matched": 0})
            t = sql.Identifier(table)
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()[0]
            dims = [r[0] for r in conn.execute(sql.SQL("SELECT DISTINCT vector_dims(embedding) FROM {}").format(t))]
            # NaN is not a valid pgvector input, but check anyway: NaN <> NaN, and inf overflows the norm.
            bad = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE embedding IS NULL OR "
                                       "vector_norm(embedding) = 'NaN'::float8 OR "
                                       "vector_norm(embedding) = 'Infinity'::float8").format(t)).fetchone()[0]
            if chunk_ids is None:
                return {"rows": rows, "dims": dims, "bad": bad}
            matched = conn.execute(sql.SQL("SELECT count(DISTINCT chunk_id) FROM {} WHERE chunk_id = ANY(%s::text[])")
                                   .format(t), (list(chunk_ids),)).fetchone()[0]
        return {"rows": rows, "dims": dims, "bad": bad, "matched": matched}

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

    def embedded_splits(self, slug: str) -> list[str]:
        with self.reader() as conn:
            rows = conn.execute("SELECT DISTINCT split FROM cprox_partitions WHERE kind = 'embeddings' AND "
                                "model_slug = %s ORDER BY split", (slug,)).fetchall()
        return [r[0] for r in rows]


def _ids(chunk_ids: Collection[str] | None) -> list[str] | None:
    return None if chunk_ids is None else list(chunk_ids)


def _chosen(alias: str) -> sql.Composable:
    """`alias`'s chunk is one of `%(ids)s` (every chunk when the parameter is NULL: no `embed_sample` draw)."""
    return sql.SQL("(%(ids)s::text[] IS NULL OR {a}.chunk_id = ANY(%(ids)s::text[]))").format(a=sql.Identifier(alias))
