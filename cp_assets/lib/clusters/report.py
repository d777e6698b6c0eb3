"""Glue between cluster trees, their names and the results DuckDB (no dagster): the rows of `cluster_names`,
`annotations` and `question_clusters`, the node dicts the plots take, and per-cluster error rates.

A node's `path` is its ancestors' names joined with " > ", root excluded ("word problems > percentages"). A unit
(an answer, a sentence, a question) belongs to its nearest leaf and to that leaf's top-level cluster (`top_id`,
the child of the root on its path), where the counts and rates of the reports are made.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cp_assets.lib.clusters.annotations import annotate_vectors, pieces
from cp_assets.lib.core.stats import wilson
from cp_assets.lib.clusters.tree import Tree
from cp_assets.lib.reports import report_tables

NAME_COLUMNS = ["tree", "embed_model", "node_id", "path", "name", "description", "keyword_name", "source",
                "naming_model", "member_hash", "error"]


def node_path(tree: Tree, names: Mapping[str, str], node_id: str) -> str:
    ids = tree.path(node_id)
    return " > ".join(names.get(i, i) for i in (ids[1:] or ids))


def top_id(tree: Tree, node_id: str) -> str:
    ids = tree.path(node_id)
    return ids[1] if len(ids) > 1 else ids[0]


def name_rows(tree_name: str, embed_model: str, tree: Tree, names: Mapping[str, Any]) -> list[tuple]:
    """Rows of `cluster_names` from `cluster_names.NodeName`s."""
    plain = {i: n.name for i, n in names.items()}
    return [(tree_name, embed_model, i, node_path(tree, plain, i), n.name, n.description, n.keyword_name, n.source,
             n.model_id, n.member_hash, n.error) for i, n in sorted(names.items())]


def save_names(db, tree_name: str, embed_model: str, rows: list[tuple]) -> int:
    with db.connect() as con:
        return report_tables.replace_rows(con, "cluster_names", {"tree": tree_name, "embed_model": embed_model},
                                          NAME_COLUMNS, rows)


def load_names(db, tree_name: str, embed_model: str) -> dict[str, dict]:
    """node_id -> {name, description, keyword_name, source}; empty when the tree has not been named yet."""
    with db.connect(read_only=True) as con:
        report_tables.ensure_readable(con, "cluster_names")
        cur = con.execute("SELECT node_id, name, description, keyword_name, source FROM cluster_names "
                          "WHERE tree = ? AND embed_model = ?", [tree_name, embed_model])
        return {r[0]: {"name": r[1], "description": r[2], "keyword_name": r[3], "source": r[4]}
                for r in cur.fetchall()}


def plot_nodes(tree: Tree, names: Mapping[str, dict], rates: Mapping[str, tuple[int, int]] | None = None
               ) -> list[dict]:
    """Node dicts for `cluster_plots` (rates: node id -> (errors, graded), shown as colour)."""
    out = []
    for i, n in tree.nodes.items():
        d = {"node_id": i, "parent_id": n.parent_id, "size": n.size, "name": names.get(i, {}).get("name", i),
             "description": names.get(i, {}).get("description")}
        if rates and rates.get(i, (0, 0))[1]:
            k, m = rates[i]
            d |= {"value": k / m, "n": m}
        out.append(d)
    return out


ANNOTATION_COLUMNS = ["model_id", "tree", "embed_model", "eval_set", "sample_id", "params_hash", "unit", "idx",
                      "char_start", "char_end", "text", "leaf_id", "top_id", "path", "distance", "correct"]


def annotation_rows(tree_name: str, embed_model: str, tree: Tree, names: Mapping[str, dict], rollouts: Sequence,
                    encode: Callable[[list[str]], np.ndarray], min_words: int = 3) -> list[tuple]:
    """Rows of `annotations`: each rollout's whole answer (unit 'answer', idx 0) and each of its sentences
    (unit 'sentence', idx 0..) with nearest leaf, top-level cluster, named path and cosine distance to the leaf."""
    plain = {i: v["name"] for i, v in names.items()}
    answers = [r.completion for r in rollouts]
    units: list[tuple[Any, str, int, int, int, str]] = []
    for r, text in zip(rollouts, answers):
        body = text.strip()
        if not body:
            continue
        start = text.index(body)
        units.append((r, "answer", 0, start, start + len(body), body))
        units += [(r, "sentence", i, a, b, t) for i, (a, b, t) in enumerate(pieces(text, min_words))]
    if not units:
        return []
    vecs = encode([u[5] for u in units])
    rows = []
    for (r, unit, idx, a, b, text), (leaf, path, dists) in zip(units, annotate_vectors(tree, vecs)):
        rows.append((r.model_id, tree_name, embed_model, r.eval_set, r.sample_id, r.params_hash, unit, idx, a, b,
                     text, leaf, top_id(tree, leaf), node_path(tree, plain, leaf), dists[-1], r.correct))
    return rows


def error_rates(rows: Sequence[tuple], columns: Sequence[str] = ANNOTATION_COLUMNS) -> dict[str, tuple[int, int]]:
    """Top-level cluster id -> (wrong, graded) over the answer-level annotation rows."""
    c = {k: i for i, k in enumerate(columns)}
    out: dict[str, list[int]] = {}
    for r in rows:
        if r[c["unit"]] == "answer" and r[c["correct"]] is not None:
            k = out.setdefault(r[c["top_id"]], [0, 0])
            k[0] += not r[c["correct"]]
            k[1] += 1
    return {t: (a, b) for t, (a, b) in out.items()}


def rate_table(tree: Tree, names: Mapping[str, dict], rates: Mapping[str, tuple[int, int]]) -> str:
    lines = ["| cluster | graded answers | error rate | 95% interval |", "|---|---|---|---|"]
    for i, (k, n) in sorted(rates.items(), key=lambda kv: -kv[1][1]):
        lo, hi = wilson(k, n)
        lines.append(f"| {names.get(i, {}).get('name', i)} | {n} | {k / n:.2f} | {lo:.2f}-{hi:.2f} |")
    return "\n".join(lines)


def question_rows(tree_name: str, embed_model: str, tree: Tree, names: Mapping[str, dict],
                  samples: Sequence[Mapping], vectors: np.ndarray) -> list[tuple]:
    """Rows of `question_clusters`: each eval question's nearest leaf (whole question)."""
    plain = {i: v["name"] for i, v in names.items()}
    return [(tree_name, embed_model, s["eval_set"], s["sample_id"], leaf, top_id(tree, leaf),
             node_path(tree, plain, leaf), dists[-1])
            for s, (leaf, _, dists) in zip(samples, annotate_vectors(tree, vectors))]
