"""Cluster trees in Postgres (the store of record) and in the results DuckDB (for reports).

Postgres tables (created on first use; `vector` without a dimension, since dimensions vary by model):
  cprox_cluster_trees(tree, embed_slug, version, seed, params, warnings, n_chunks, n_nodes, n_leaves, created_at)
  cprox_cluster_nodes(tree, embed_slug, node_id, parent_id, depth, size, quality, split_counts, member_hash,
                      stop_reason, centroid, version)            one row per node; stop_reason is NULL for inner nodes
  cprox_cluster_members(tree, embed_slug, chunk_split, chunk_id, leaf_id, row_idx)   one row per chunk
A tree is replaced per (tree, embed_slug) in one transaction (delete, binary COPY, a new `cprox_partitions` version
under kind "cluster_tree", split = the tree name): a crash mid-save leaves the previous tree whole.

Results DuckDB (`report_tables`): `cluster_nodes` and `cluster_members`, replaced per (tree, embed_model) together.
"""

from __future__ import annotations

import json

import numpy as np
from psycopg import sql
from psycopg.types.json import Jsonb

from cp_assets.lib.clusters.tree import Node, Tree, nearest_centroids
from cp_assets.lib.corpus.pgvector_store import SCHEMA_LOCK, PgStore, part_table
from cp_assets.lib.reports import report_tables

SCHEMA = """
CREATE TABLE IF NOT EXISTS cprox_cluster_trees (
    tree text NOT NULL, embed_slug text NOT NULL, version text NOT NULL, seed bigint NOT NULL, params jsonb NOT NULL,
    warnings jsonb NOT NULL, n_chunks bigint NOT NULL, n_nodes integer NOT NULL, n_leaves integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tree, embed_slug));
CREATE TABLE IF NOT EXISTS cprox_cluster_nodes (
    tree text NOT NULL, embed_slug text NOT NULL, node_id text NOT NULL, parent_id text, depth integer NOT NULL,
    size integer NOT NULL, quality double precision, split_counts jsonb NOT NULL, member_hash text NOT NULL,
    stop_reason text, centroid vector NOT NULL, version text NOT NULL, PRIMARY KEY (tree, embed_slug, node_id));
CREATE TABLE IF NOT EXISTS cprox_cluster_members (
    tree text NOT NULL, embed_slug text NOT NULL, chunk_split text NOT NULL, chunk_id text NOT NULL,
    leaf_id text NOT NULL, row_idx integer NOT NULL, PRIMARY KEY (tree, embed_slug, chunk_split, chunk_id));
"""
NODE_COLUMNS = ("tree", "embed_slug", "node_id", "parent_id", "depth", "size", "quality", "split_counts",
                "member_hash", "stop_reason", "centroid", "version")
NODE_TYPES = ("text", "text", "text", "text", "int4", "int4", "float8", "jsonb", "text", "text", "vector", "text")
MEMBER_COLUMNS = ("tree", "embed_slug", "chunk_split", "chunk_id", "leaf_id", "row_idx")
_ready: set[str] = set()  # DSNs whose cluster tables exist


def ensure_schema(store: PgStore) -> None:
    if store.dsn() in _ready:
        return
    store.ensure_schema()
    with store.connect() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)
    _ready.add(store.dsn())


def _path_key(node_id: str) -> tuple[int, ...]:
    return tuple(int(p) for p in node_id.split("."))


# -- vectors --------------------------------------------------------------------------------------------------------
def load_vectors(store: PgStore, slug: str, splits: str | list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """(vectors float32 n x dim, chunk ids, chunk splits) of one published split, a list of them, or "all" (every
    embedded split, sorted), in (split, chunk_id) order, by binary COPY straight into one preallocated matrix (no
    per-split copies to concatenate), from one snapshot."""
    names = store.embedded_splits(slug) if splits == "all" else [splits] if isinstance(splits, str) else list(splits)
    if not names:
        raise LookupError(f"no embedded splits for model {slug!r}: materialize the `embeddings` asset first")
    ids: list[str] = []
    split_of: list[str] = []
    with store.session() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        row = conn.execute("SELECT dim FROM cprox_embedding_models WHERE slug = %s", (slug,)).fetchone()
        counts = []
        for s in names:
            if row is None or not store._exists(conn, part_table(slug, s)):
                raise LookupError(f"split {s!r} has no embeddings for model {slug!r}: materialize `embeddings` first")
            counts.append(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(part_table(slug, s)))).fetchone()[0])
        out = np.empty((sum(counts), row[0]), np.float32)
        i = 0
        for s in names:
            q = sql.SQL("COPY (SELECT chunk_id, embedding FROM {} ORDER BY chunk_id) TO STDOUT (FORMAT BINARY)").format(
                sql.Identifier(part_table(slug, s)))
            with conn.cursor().copy(q) as copy:
                copy.set_types(["text", "bytea"])  # the raw vector: int16 dim, int16 unused, dim big-endian float4
                for cid, raw in copy.rows():
                    out[i] = np.frombuffer(raw, ">f4", offset=4)
                    ids.append(cid)
                    i += 1
            split_of.extend([s] * (len(ids) - len(split_of)))
    return out, ids, split_of


# -- Postgres -------------------------------------------------------------------------------------------------------
def save_tree(store: PgStore, tree_name: str, embed_slug: str, tree: Tree) -> str:
    """Replace the stored (tree_name, embed_slug) tree with `tree` in one transaction; returns the new version."""
    ensure_schema(store)
    leaf_ids = np.asarray(tree.leaf_ids, dtype=object)
    with store.session() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cluster:{embed_slug}:{tree_name}",))
        for t in ("cprox_cluster_members", "cprox_cluster_nodes", "cprox_cluster_trees"):
            conn.execute(sql.SQL("DELETE FROM {} WHERE tree = %s AND embed_slug = %s").format(sql.Identifier(t)),
                         (tree_name, embed_slug))
        version = store._record_partition(conn, "cluster_tree", embed_slug, tree_name, len(tree.chunk_ids))
        cur = conn.cursor()
        with cur.copy(sql.SQL("COPY cprox_cluster_nodes ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.SQL(", ").join(map(sql.Identifier, NODE_COLUMNS)))) as copy:
            copy.set_types(list(NODE_TYPES))
            for n in tree.nodes.values():
                copy.write_row((tree_name, embed_slug, n.node_id, n.parent_id, n.depth, n.size, n.quality,
                                Jsonb(n.split_counts), n.member_hash, n.stop_reason,
                                np.asarray(n.centroid, np.float32), version))
        with cur.copy(sql.SQL("COPY cprox_cluster_members ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.SQL(", ").join(map(sql.Identifier, MEMBER_COLUMNS)))) as copy:
            copy.set_types(["text", "text", "text", "text", "text", "int4"])
            for i, (s, c, leaf) in enumerate(zip(tree.chunk_splits, tree.chunk_ids, leaf_ids[tree.leaf_of])):
                copy.write_row((tree_name, embed_slug, s, c, leaf, i))
        conn.execute("INSERT INTO cprox_cluster_trees (tree, embed_slug, version, seed, params, warnings, n_chunks, "
                     "n_nodes, n_leaves) VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)",
                     (tree_name, embed_slug, version, tree.seed, json.dumps(tree.params), json.dumps(tree.warnings),
                      len(tree.chunk_ids), len(tree.nodes), len(tree.leaf_ids)))
    return version


def _node(row) -> Node:
    node_id, parent_id, depth, size, quality, counts, member_hash, stop_reason, centroid = row
    return Node(node_id, parent_id, depth, size, np.asarray(centroid.to_numpy(), np.float32), quality,
                dict(counts), member_hash, [], stop_reason)


def load_tree(store: PgStore, tree_name: str, embed_slug: str) -> Tree | None:
    """The stored tree (nodes breadth first, chunks in the order they were clustered), or None if there is none."""
    ensure_schema(store)
    key = (tree_name, embed_slug)
    with store.session() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        meta = conn.execute("SELECT seed, params, warnings FROM cprox_cluster_trees WHERE tree = %s AND "
                            "embed_slug = %s", key).fetchone()
        if meta is None:
            return None
        rows = conn.execute("SELECT node_id, parent_id, depth, size, quality, split_counts, member_hash, stop_reason, "
                            "centroid FROM cprox_cluster_nodes WHERE tree = %s AND embed_slug = %s", key).fetchall()
        nodes = {n.node_id: n for n in sorted(map(_node, rows), key=lambda n: (n.depth, _path_key(n.node_id)))}
        for n in nodes.values():
            if n.parent_id is not None:
                nodes[n.parent_id].children.append(n.node_id)
        leaf_ids = [i for i, n in nodes.items() if n.is_leaf]
        leaf_index = {leaf: j for j, leaf in enumerate(leaf_ids)}
        ids, splits, leaf_of = [], [], []
        q = sql.SQL("COPY (SELECT chunk_split, chunk_id, leaf_id FROM cprox_cluster_members WHERE tree = {} AND "
                    "embed_slug = {} ORDER BY row_idx) TO STDOUT (FORMAT BINARY)").format(*map(sql.Literal, key))
        with conn.cursor().copy(q) as copy:
            copy.set_types(["text", "text", "text"])
            for s, c, leaf in copy.rows():
                splits.append(s)
                ids.append(c)
                leaf_of.append(leaf_index[leaf])
    return Tree(nodes, ids, splits, np.asarray(leaf_of, np.int32), leaf_ids, meta[0], meta[1], list(meta[2]))


def nearest_leaves(source: Tree | PgStore, vectors: np.ndarray, k: int = 1, *, tree: str | None = None,
                   embed_slug: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(leaf ids, cosine distances), each (n, k), nearest first: query vectors against the leaf centroids of a Tree,
    or of the tree stored under (tree, embed_slug) (only its leaf centroids are read)."""
    if isinstance(source, Tree):
        return source.nearest_leaves(vectors, k)
    ensure_schema(source)
    with source.session() as conn:
        rows = conn.execute("SELECT node_id, centroid FROM cprox_cluster_nodes WHERE tree = %s AND embed_slug = %s "
                            "AND stop_reason IS NOT NULL", (tree, embed_slug)).fetchall()
    if not rows:
        raise LookupError(f"no cluster tree {tree!r} for model {embed_slug!r}: materialize `cluster_tree` first")
    rows.sort(key=lambda r: (r[0].count("."), _path_key(r[0])))
    return nearest_centroids([r[0] for r in rows], np.stack([r[1].to_numpy() for r in rows]), vectors, k)


# -- results DuckDB -------------------------------------------------------------------------------------------------
def export_to_duckdb(tree_obj: Tree, con, *, tree: str, embed_model: str) -> dict[str, int]:
    """Replace the (tree, embed_model) rows of `cluster_nodes` and `cluster_members` in one transaction."""
    nodes = [(tree, embed_model, n.node_id, n.parent_id, n.depth, n.size, n.quality, json.dumps(n.split_counts),
              n.member_hash, n.stop_reason, n.is_leaf) for n in tree_obj.nodes.values()]
    leaf_ids = np.asarray(tree_obj.leaf_ids, dtype=object)[tree_obj.leaf_of]
    members = list(zip([tree] * len(leaf_ids), [embed_model] * len(leaf_ids), tree_obj.chunk_splits,
                       tree_obj.chunk_ids, leaf_ids.tolist()))
    return report_tables.replace_tables(con, {"tree": tree, "embed_model": embed_model}, {
        "cluster_nodes": (["tree", "embed_model", "node_id", "parent_id", "depth", "size", "quality", "split_counts",
                           "member_hash", "stop_reason", "is_leaf"], nodes),
        "cluster_members": (["tree", "embed_model", "split", "chunk_id", "leaf_id"], members)})


def covers_every_chunk(store: PgStore, tree_name: str, embed_slug: str, all_splits: str = "all") -> tuple[bool, dict]:
    """The `cluster_tree` check: every embedded chunk of the tree's split(s) sits in exactly one leaf."""
    with store.session() as conn:
        members, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (chunk_split, chunk_id)) FROM cprox_cluster_members "
            "WHERE tree = %s AND embed_slug = %s", (tree_name, embed_slug)).fetchone()
    splits = [p["split"] for p in store.partitions() if p["kind"] == "embeddings" and p["model_slug"] == embed_slug
              and (tree_name == all_splits or p["split"] == tree_name)]
    embedded = sum(store.count("embeddings", s, embed_slug) for s in splits)
    return members == distinct == embedded, {"members": members, "distinct": distinct, "embedded": embedded}
