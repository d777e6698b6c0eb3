"""The recursive cluster tree of chunk embeddings (the `cluster_tree` asset): data model and construction.

A tree is built over the unit-normalized embeddings of one split's chunks (or of every split's, tree "all").
Node ids are paths: the root is "0", its children "0.0", "0.1", ..., so an id says where a node sits. Every chunk
belongs to exactly one leaf. `member_hash` fingerprints a node's members (sorted chunk ids), so names computed for a
node can be reused when re-clustering leaves it unchanged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass
class Node:
    node_id: str                      # "0", "0.1", "0.1.3": the path from the root
    parent_id: str | None
    depth: int                        # root 0
    size: int                         # chunks under the node
    centroid: np.ndarray              # unit-normalized mean of the members' vectors (float32)
    quality: float | None             # silhouette of the split that made its children (None for leaves)
    split_counts: dict[str, int]      # chunks under the node per corpus split
    member_hash: str                  # member_fingerprint of the sorted chunk ids under the node
    children: list[str] = field(default_factory=list)
    stop_reason: str | None = None    # leaves: why the recursion stopped (depth, min_size, quality, identical, ...)

    @property
    def is_leaf(self) -> bool:
        return not self.children


@dataclass
class Tree:
    nodes: dict[str, Node]            # node_id -> Node, parents before children
    chunk_ids: list[str]              # the clustered chunks, in input order
    chunk_splits: list[str]           # each chunk's split
    leaf_of: np.ndarray               # index into `leaf_ids` per chunk (int32), aligned with chunk_ids
    leaf_ids: list[str]
    seed: int
    params: dict

    def leaves(self) -> list[Node]:
        return [self.nodes[i] for i in self.leaf_ids]

    def members(self, node_id: str) -> np.ndarray:
        """Row indices (into chunk_ids) of the chunks under a node."""
        prefix = node_id + "."
        leaves = [i for i, leaf in enumerate(self.leaf_ids) if leaf == node_id or leaf.startswith(prefix)]
        return np.flatnonzero(np.isin(self.leaf_of, leaves))

    def path(self, node_id: str) -> list[str]:
        """Node ids from the root down to `node_id`."""
        parts = node_id.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def member_fingerprint(chunk_ids: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in sorted(chunk_ids):
        h.update(c.encode())
        h.update(b"\0")
    return h.hexdigest()
