"""Annotation of text by cluster: each sentence of a text (an eval question, a rollout, anything) gets the nearest
leaf of a cluster tree and the path of names from the root to it, with the cosine distance to each node's centroid
("math textbook > word problems > percentages").

The leaf is the one whose centroid is nearest the sentence's embedding (unit vectors: cosine = 1 - dot). Sentences
come from the same splitter as `rollout_proximity` (cut after . ! ? and at newlines; pieces of < 3 words dropped);
a text without such a sentence is annotated as one piece.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from cp_assets.lib.clusters.tree import Tree
from cp_assets.lib.reports.proximity import split_sentences


@dataclass
class Annotation:
    idx: int
    char_start: int
    char_end: int
    text: str
    leaf_id: str
    path_ids: list[str]
    path_names: list[str]
    path_distances: list[float]  # cosine distance of the sentence to each node's centroid, root first

    @property
    def distance(self) -> float:
        return self.path_distances[-1]

    def path(self, sep: str = " > ") -> str:
        return sep.join(self.path_names[1:] or self.path_names)  # the root's name says little: shown only alone

    def to_dict(self) -> dict:
        return asdict(self) | {"distance": self.distance, "path": self.path()}


def pieces(text: str, min_words: int = 3) -> list[tuple[int, int, str]]:
    found = split_sentences(text, min_words)
    if found:
        return found
    body = text.strip()
    return [(text.index(body), text.index(body) + len(body), body)] if body else []


def annotate_vectors(tree: Tree, vectors: np.ndarray) -> list[tuple[str, list[str], list[float]]]:
    """(leaf id, path ids root first, cosine distance to each path node's centroid) of each unit vector."""
    if not len(vectors):
        return []
    leaves, _ = tree.nearest_leaves(np.asarray(vectors, dtype=np.float32), k=1)
    out = []
    for v, leaf in zip(vectors, leaves[:, 0]):
        path = tree.path(str(leaf))
        out.append((str(leaf), path, [float(1.0 - np.dot(v, tree.nodes[p].centroid)) for p in path]))
    return out


def place_sentences(tree: Tree, names: dict[str, str], texts: Sequence[str],
                    encode: Callable[[list[str]], np.ndarray], min_words: int = 3) -> list[list[Annotation]]:
    """Per text, per sentence: nearest leaf and named path. `encode` maps texts to unit vectors (the tree's model);
    `names`: node id -> name (a missing name shows the node id)."""
    split = [pieces(t, min_words) for t in texts]
    flat = [p for ps in split for p in ps]
    if not flat:
        return [[] for _ in texts]
    vecs = encode([t for _, _, t in flat])
    found = iter(annotate_vectors(tree, vecs))
    out = []
    for ps in split:
        rows = []
        for i, (a, b, t) in enumerate(ps):
            leaf, path, dists = next(found)
            rows.append(Annotation(i, a, b, t, leaf, path, [names.get(p) or p for p in path], dists))
        out.append(rows)
    return out


def render(text: str, rows: Sequence[Annotation]) -> str:
    """The text with each annotated sentence followed by its cluster path and distance, for reading."""
    parts, pos = [], 0
    for r in rows:
        parts.append(text[pos:r.char_end])
        parts.append(f"  [{r.path()} | {r.distance:.3f}]")
        pos = r.char_end
    parts.append(text[pos:])
    return "".join(parts)
