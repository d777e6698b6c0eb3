"""Does a cluster's name say which cluster it is? Name quality measured by retrieval among siblings (no dagster).

A node's name and description ("name. description"), embedded with the tree's model, is compared by cosine with the
centroids of the node and its siblings (the choice a reader of the path makes at that step): the name is right when
its own node's centroid is the nearest, and its `margin` is the cosine to its own centroid minus the best sibling's.
Accuracy is reported per depth for the keyword names and for the LLM names (`cluster_names` metadata); an LLM name
whose margin is below its node's keyword name's margin is replaced by the keyword name (`replace_worse`), with the
reason kept in `NodeName.error`. Nodes without siblings (the root, an only child) are not scored.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping

import numpy as np

from cp_assets.lib.clusters.keywords import KeywordName
from cp_assets.lib.clusters.naming import NodeName
from cp_assets.lib.clusters.tree import Tree


def _groups(tree: Tree) -> list[list[str]]:
    return [list(n.children) for n in tree.nodes.values() if len(n.children) >= 2]


def margins(tree: Tree, texts: Mapping[str, str], encode: Callable[[list[str]], np.ndarray]) -> dict[str, float]:
    """node id -> cosine(its text, its centroid) - max cosine(its text, a sibling's centroid), for every node that
    has siblings and a text."""
    nodes = [n for g in _groups(tree) for n in g if texts.get(n)]
    if not nodes:
        return {}
    vecs = dict(zip(nodes, encode([texts[n] for n in nodes])))
    out = {}
    for group in _groups(tree):
        cents = np.stack([tree.nodes[n].centroid for n in group])
        for i, n in enumerate(group):
            if n not in vecs:
                continue
            sims = cents @ vecs[n]
            out[n] = float(sims[i] - np.max(np.delete(sims, i)))
    return out


def label(name: str, description: str) -> str:
    return f"{name}. {description}" if description else name


def name_quality(tree: Tree, names: Mapping[str, NodeName], keywords: Mapping[str, KeywordName],
                 encode: Callable[[list[str]], np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    """(keyword margins, LLM margins) of every scored node (LLM margins only for nodes named by the model)."""
    kw = margins(tree, {n: label(k.name, k.description) for n, k in keywords.items() if k.name}, encode)
    llm = margins(tree, {n: label(v.name, v.description) for n, v in names.items() if v.source == "llm"}, encode)
    return kw, llm


def by_depth(tree: Tree, kw: Mapping[str, float], llm: Mapping[str, float]) -> list[dict]:
    """Per depth: nodes scored, keyword-name accuracy, LLM names scored and their accuracy (a margin > 0 is right)."""
    out = []
    for depth in sorted({tree.nodes[n].depth for n in kw}):
        k = [m for n, m in kw.items() if tree.nodes[n].depth == depth]
        m = [v for n, v in llm.items() if tree.nodes[n].depth == depth]
        out.append({"depth": depth, "nodes": len(k), "keyword_accuracy": float(np.mean([x > 0 for x in k])),
                    "llm_names": len(m), "llm_accuracy": float(np.mean([x > 0 for x in m])) if m else None})
    return out


def replace_worse(names: dict[str, NodeName], keywords: Mapping[str, KeywordName], kw: Mapping[str, float],
                  llm: Mapping[str, float]) -> list[str]:
    """Replace (in `names`) every LLM name whose margin is below its keyword name's; the ids replaced."""
    replaced = []
    for n, m in llm.items():
        if n in kw and m < kw[n]:
            k = keywords[n]
            names[n] = replace(names[n], name=k.name, description=k.description, source="keywords",
                               error=f"the LLM name {names[n].name!r} told its node from its siblings worse than the "
                                     f"keyword name (margin {m:.3f} < {kw[n]:.3f})")
            replaced.append(n)
    return replaced
