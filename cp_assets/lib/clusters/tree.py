"""The recursive cluster tree of chunk embeddings (the `cluster_tree` asset): data model and construction.

A tree is built over the unit-normalized embeddings of one split's chunks (or of every split's, tree "all").
Node ids are paths: the root is "0", its children "0.0", "0.1", ..., so an id says where a node sits. Every chunk
belongs to exactly one leaf. `member_hash` fingerprints a node's members (sorted chunk ids), so names computed for a
node can be reused when re-clustering leaves it unchanged.

`build_tree` splits a node as follows (breadth first, so `Tree.nodes` lists parents before children):
  1. stop when the node is too small to give two children of `min_size` (`min_size`; the root: `too_small`), when its
     vectors are (nearly) identical (`identical`), or at `max_depth` (`depth`);
  2. draw a seeded sample of at most `sample_size` members, project it on its top `pca_dims` principal components and
     fit scikit-learn `KMeans` (k-means++, one init) for every k in `branching`; score each k by the silhouette
     (Euclidean, full space; `silhouette` computes sklearn's `silhouette_score`, vectorized) of `silhouette_size`
     sampled members, whose distance matrix is computed once per node, and keep the best; stop when no k gives two
     clusters (`no_split`) or the best silhouette is below `min_quality` (`quality`; the leaf's `quality` holds it);
  3. assign every member to the nearest full-space cluster mean (chunked float32 matmul, no n x n matrix), then merge
     children below `min_size` into their nearest sibling (their members go to the nearest remaining mean); if one
     child is left, stop (`min_size`); else the node's `quality` is the silhouette of the final assignment.
Children are numbered by size, largest first (ties: by cluster index). Centroids are the unit-normalized means of all
members. Each node draws its randomness from (seed, node path), and the linear algebra runs on `threads` threads
(default 1: bit-identical results on any machine with the same libraries; on a shared machine, OpenMP/BLAS threads
that wait for busy cores make KMeans 10-30x slower), so the same input and seed give the same tree.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

STOP_REASONS = ("depth", "min_size", "too_small", "identical", "quality", "no_split")
IDENTICAL_VAR = 1e-8  # mean squared distance to the mean, relative to the mean squared norm, below which: identical
BLOCK = 16_384        # rows per chunk of the assignment pass


@dataclass
class Node:
    node_id: str                      # "0", "0.1", "0.1.3": the path from the root
    parent_id: str | None
    depth: int                        # root 0
    size: int                         # chunks under the node
    centroid: np.ndarray              # unit-normalized mean of the members' vectors (float32)
    quality: float | None             # silhouette of the split that made its children; None for leaves, except
                                      # stop_reason "quality": the best silhouette found (below min_quality)
    split_counts: dict[str, int]      # chunks under the node per corpus split (splits with at least one chunk)
    member_hash: str                  # member_fingerprint of the sorted chunk ids under the node
    children: list[str] = field(default_factory=list)
    stop_reason: str | None = None    # leaves: why the recursion stopped (one of STOP_REASONS)

    @property
    def is_leaf(self) -> bool:
        return not self.children


@dataclass
class Tree:
    nodes: dict[str, Node]            # node_id -> Node, parents before children (breadth first)
    chunk_ids: list[str]              # the clustered chunks, in input order
    chunk_splits: list[str]           # each chunk's split
    leaf_of: np.ndarray               # index into `leaf_ids` per chunk (int32), aligned with chunk_ids
    leaf_ids: list[str]
    seed: int
    params: dict
    warnings: list[str] = field(default_factory=list)  # e.g. a split too small to cluster

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

    def nearest_leaves(self, vectors: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(leaf ids, cosine distances), each (n, k), nearest first, of query vectors to the leaf centroids."""
        return nearest_centroids(self.leaf_ids, np.stack([n.centroid for n in self.leaves()]), vectors, k)

    def summary(self) -> dict:
        """Counts for asset metadata: nodes, leaves, depth, leaf sizes, stop reasons, mean split quality."""
        leaves = self.leaves()
        sizes = np.array([n.size for n in leaves])
        split_q = [n.quality for n in self.nodes.values() if n.children]
        reasons: dict[str, int] = {}
        for n in leaves:
            reasons[n.stop_reason] = reasons.get(n.stop_reason, 0) + 1
        return {"chunks": len(self.chunk_ids), "nodes": len(self.nodes), "leaves": len(leaves),
                "max_depth": max(n.depth for n in self.nodes.values()), "leaf_size_min": int(sizes.min()),
                "leaf_size_median": float(np.median(sizes)), "leaf_size_max": int(sizes.max()),
                "stop_reasons": dict(sorted(reasons.items())),
                "mean_split_quality": float(np.mean(split_q)) if split_q else None, "warnings": list(self.warnings)}


def member_fingerprint(chunk_ids: Sequence[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in sorted(chunk_ids):
        h.update(c.encode())
        h.update(b"\0")
    return h.hexdigest()


def nearest_centroids(ids: Sequence[str], centroids: np.ndarray, vectors: np.ndarray,
                      k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top-k unit centroids by cosine for each query (normalized here): (ids (n, k) object array, distances)."""
    q = np.atleast_2d(np.asarray(vectors, np.float32))
    if q.shape[1] != centroids.shape[1]:
        raise ValueError(f"query vectors have {q.shape[1]} dims, the tree's centroids {centroids.shape[1]}")
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    k = min(k, len(ids))
    sims = q @ centroids.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.asarray(ids, dtype=object)[top], (1.0 - np.take_along_axis(sims, top, 1)).astype(np.float32)


# -- construction ---------------------------------------------------------------------------------------------------
@dataclass
class _Stats:
    """Per-cluster sums over one pass: float64 vector sums, counts, sums of squared norms; labels per member."""
    labels: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    sumsq: np.ndarray


def _assign(X: np.ndarray, idx: np.ndarray, centers: np.ndarray | None) -> _Stats:
    """Nearest center (Euclidean) of each X[idx] row, by blocks; centers None: one cluster."""
    k = 1 if centers is None else len(centers)
    labels = np.zeros(len(idx), np.int32)
    sums, counts, sumsq = np.zeros((k, X.shape[1])), np.zeros(k, np.int64), np.zeros(k)
    half_sq = None if centers is None else 0.5 * np.einsum("ij,ij->i", centers, centers)
    for s in range(0, len(idx), BLOCK):
        xb = X[idx[s:s + BLOCK]]
        lab = np.zeros(len(xb), np.int32) if centers is None else \
            np.argmax(xb @ centers.T - half_sq, axis=1).astype(np.int32)
        labels[s:s + len(xb)] = lab
        counts += np.bincount(lab, minlength=k)
        sumsq += np.bincount(lab, weights=np.einsum("ij,ij->i", xb, xb, dtype=np.float64), minlength=k)
        for j in (range(k) if k > 1 else [0]):
            part = xb[lab == j] if k > 1 else xb
            if len(part):
                sums[j] += part.sum(0, dtype=np.float64)
    return _Stats(labels, sums, counts, sumsq)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return (v / n if n > 1e-12 else v).astype(np.float32)


def silhouette(d: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean silhouette from a distance matrix, as `sklearn.metrics.silhouette_score(d, labels, metric="precomputed")`
    computes it (singletons score 0), with one matmul instead of a Python loop over rows; None for < 2 clusters."""
    uniq, lab = np.unique(labels, return_inverse=True)
    m, k = len(lab), len(uniq)
    if not 2 <= k < m:
        return None
    counts = np.bincount(lab, minlength=k)
    sums = d @ np.eye(k)[lab]                        # m x k: summed distances of each row to each cluster
    rows = np.arange(m)
    a = sums[rows, lab] / np.maximum(counts[lab] - 1, 1)
    mean_to = sums / counts
    mean_to[rows, lab] = np.inf
    b = mean_to.min(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(counts[lab] > 1, (b - a) / np.maximum(a, b), 0.0)
    return float(np.nan_to_num(s).mean())


class _Builder:
    def __init__(self, X, chunk_ids, chunk_splits, seed, max_depth, min_size, branching, min_quality, sample_size,
                 silhouette_size, pca_dims, log):
        self.X, self.ids, self.seed, self.log = X, chunk_ids, seed, log
        self.max_depth, self.min_size, self.branching = max_depth, min_size, branching
        self.min_quality, self.sample_size, self.sil_size, self.pca_dims = (min_quality, sample_size,
                                                                            silhouette_size, pca_dims)
        self.split_names = sorted(set(chunk_splits))
        code = {s: i for i, s in enumerate(self.split_names)}
        self.split_code = np.fromiter((code[s] for s in chunk_splits), np.int32, len(chunk_splits))
        self.rank = np.empty(len(chunk_ids), np.int64)  # position of each chunk id in sorted order (fingerprints)
        self.rank[sorted(range(len(chunk_ids)), key=chunk_ids.__getitem__)] = np.arange(len(chunk_ids))
        self.enc = [c.encode() + b"\0" for c in chunk_ids]
        self.nodes: dict[str, Node] = {}
        self.leaf_of = np.full(len(chunk_ids), -1, np.int32)
        self.leaf_ids: list[str] = []
        self.warnings: list[str] = []

    def fingerprint(self, idx: np.ndarray) -> str:  # == member_fingerprint(ids of idx), without sorting strings
        h = hashlib.blake2b(digest_size=16)
        h.update(b"".join(map(self.enc.__getitem__, idx[np.argsort(self.rank[idx], kind="stable")])))
        return h.hexdigest()

    def new_node(self, node_id, parent_id, depth, idx, sums, count, sumsq) -> tuple[Node, float]:
        """The Node of members `idx` (stats from the parent's pass) and its relative variance."""
        mean = sums / count
        rel_var = max(sumsq / count - mean @ mean, 0.0) / max(sumsq / count, 1e-30)
        counts = np.bincount(self.split_code[idx], minlength=len(self.split_names))
        node = Node(node_id, parent_id, depth, int(count), _unit(mean), None,
                    {s: int(c) for s, c in zip(self.split_names, counts) if c}, "")
        self.nodes[node_id] = node
        return node, rel_var

    def leaf(self, node: Node, idx: np.ndarray, reason: str, quality: float | None = None) -> None:
        node.stop_reason, node.quality = reason, quality
        self.leaf_of[idx] = len(self.leaf_ids)
        self.leaf_ids.append(node.node_id)

    def fit(self, node: Node, idx: np.ndarray):
        """Sample, project, KMeans for each k, silhouette: (best k's full-space centers, best score, sil positions,
        distance matrix of the silhouette sample) or None when no k gives two clusters."""
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        rng = np.random.default_rng([self.seed, *map(int, node.node_id.split("."))])
        n = len(idx)
        m = min(n, self.sample_size)
        perm = rng.choice(n, m, replace=False) if m < n else rng.permutation(n)
        fit_pos = np.sort(perm)
        xs = self.X[idx[fit_pos]]
        sil_pos = perm[:min(m, self.sil_size)]           # positions in idx of the silhouette sample
        sil_rows = np.searchsorted(fit_pos, sil_pos)     # ... and in xs
        s = xs[sil_rows]
        sq = np.einsum("ij,ij->i", s, s)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (s @ s.T), 0.0)).astype(np.float64)
        np.fill_diagonal(d, 0.0)
        z = xs - xs.mean(0)
        if self.pca_dims and self.pca_dims < min(xs.shape):
            _, vecs = np.linalg.eigh((z.T @ z).astype(np.float64))
            z = z @ vecs[:, ::-1][:, :self.pca_dims].astype(np.float32)
        k_max = min(self.branching[1], n // self.min_size, m - 1)
        state = int(rng.integers(2**31 - 1))
        best = None
        for k in range(self.branching[0], k_max + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than k: skipped below
                km = KMeans(k, init="k-means++", n_init=1, max_iter=100, random_state=state).fit(z)
            if len(np.unique(km.labels_)) < k:
                continue
            score = silhouette(d, km.labels_[sil_rows])
            if score is not None and (best is None or score > best[1]):
                centers = np.stack([xs[km.labels_ == j].mean(0) for j in range(k)]).astype(np.float32)
                best = (centers, score)
        return None if best is None else (*best, sil_pos, d)

    def split(self, node: Node, idx: np.ndarray, rel_var: float, pending: deque) -> str:
        """Split one node (its children go to `pending`) or make it a leaf; returns what happened."""
        is_root = node.parent_id is None
        if node.size < 2 * self.min_size:
            if is_root:
                self.warnings.append(f"only {node.size} chunks, fewer than 2 x min_size = {2 * self.min_size}: "
                                     f"too small to cluster, the tree is a single leaf")
            self.leaf(node, idx, "too_small" if is_root else "min_size")
            return "leaf"
        if rel_var < IDENTICAL_VAR:
            if is_root:
                self.warnings.append(f"all {node.size} vectors are identical (or nearly): the tree is a single leaf")
            self.leaf(node, idx, "identical")
            return "leaf"
        if node.depth >= self.max_depth:
            self.leaf(node, idx, "depth")
            return "leaf"
        got = self.fit(node, idx)
        if got is None:
            self.leaf(node, idx, "no_split")
            return "leaf"
        centers, score, sil_pos, d = got
        if score < self.min_quality:
            self.leaf(node, idx, "quality", score)
            return "leaf"
        st = _assign(self.X, idx, centers)
        alive = list(range(len(centers)))
        while len(alive) > 1:  # merge the smallest child below min_size into its members' nearest siblings
            small = [j for j in alive if st.counts[j] < self.min_size]
            if not small:
                break
            j = min(small, key=lambda c: (st.counts[c], c))
            alive.remove(j)
            moved = np.flatnonzero(st.labels == j)
            sub = _assign(self.X, idx[moved], centers[alive])
            st.labels[moved] = np.asarray(alive, np.int32)[sub.labels]
            for a, c in enumerate(alive):
                st.sums[c] += sub.sums[a]
                st.counts[c] += sub.counts[a]
                st.sumsq[c] += sub.sumsq[a]
            st.counts[j] = 0
        if len(alive) < 2:
            self.leaf(node, idx, "min_size")
            return "leaf"
        final = silhouette(d, st.labels[sil_pos])
        if final is None or final < self.min_quality:
            self.leaf(node, idx, "quality", final if final is not None else score)
            return "leaf"
        node.quality = final
        for i, c in enumerate(sorted(alive, key=lambda c: (-st.counts[c], c))):
            child_idx = idx[st.labels == c]
            child, child_var = self.new_node(f"{node.node_id}.{i}", node.node_id, node.depth + 1, child_idx,
                                             st.sums[c], st.counts[c], st.sumsq[c])
            node.children.append(child.node_id)
            pending.append((child, child_idx, child_var))
        return "split"

    def run(self) -> None:
        t0 = time.perf_counter()
        root_idx = np.arange(len(self.ids))
        st = _assign(self.X, root_idx, None)
        root, var = self.new_node("0", None, 0, root_idx, st.sums[0], st.counts[0], st.sumsq[0])
        pending = deque([(root, root_idx, var)])
        depth, level = 0, {"nodes": 0, "split": 0, "chunks": 0, "t": time.perf_counter()}
        while pending:
            node, idx, var = pending.popleft()
            if node.depth != depth:
                self._log_level(depth, level, t0)
                depth, level = node.depth, {"nodes": 0, "split": 0, "chunks": 0, "t": time.perf_counter()}
            node.member_hash = self.fingerprint(idx)
            t = time.perf_counter()
            what = self.split(node, idx, var, pending)
            level["nodes"] += 1
            level["split"] += what == "split"
            level["chunks"] += len(idx)
            if self.log and len(idx) >= 100_000:
                self.log(f"node {node.node_id}: {len(idx):,} chunks -> " + (
                    f"{len(node.children)} children, silhouette {node.quality:.4f}" if what == "split"
                    else f"leaf ({node.stop_reason})") + f" in {time.perf_counter() - t:.1f}s")
        self._log_level(depth, level, t0)

    def _log_level(self, depth: int, level: dict, t0: float) -> None:
        if self.log:
            dt = time.perf_counter() - level["t"]
            self.log(f"depth {depth}: {level['nodes']:,} nodes ({level['split']:,} split, "
                     f"{level['nodes'] - level['split']:,} leaves), {level['chunks']:,} chunks in {dt:.1f}s "
                     f"({level['chunks'] / max(dt, 1e-9):,.0f} chunks/s); {len(self.nodes):,} nodes, "
                     f"{time.perf_counter() - t0:.1f}s so far")


def build_tree(vectors: np.ndarray, chunk_ids: Sequence[str], chunk_splits: Sequence[str], *, seed: int = 0,
               max_depth: int = 4, min_size: int = 25, branching: tuple[int, int] = (2, 8),
               min_quality: float = 0.01, sample_size: int = 20_000, silhouette_size: int = 2_000,
               pca_dims: int | None = 64, threads: int = 1, log: Callable[[str], None] | None = None) -> Tree:
    """The cluster tree of `vectors` (n x dim float32, rows aligned with chunk_ids and chunk_splits); see the module
    docstring. `vectors` is read, never copied whole. A split too small to cluster (fewer than 2 x min_size chunks)
    or all-identical vectors give a one-leaf tree (stop_reason "too_small" / "identical") and a message in
    `Tree.warnings`; empty or malformed input raises ValueError."""
    import sklearn.cluster  # noqa: F401  (loaded before threadpool_limits, so that the limit reaches its OpenMP)
    from threadpoolctl import threadpool_limits

    X = np.asarray(vectors)
    n = len(chunk_ids)
    if X.ndim != 2 or X.shape[0] != n or len(chunk_splits) != n:
        raise ValueError(f"vectors {X.shape}, {n} chunk ids and {len(chunk_splits)} splits do not line up: "
                         f"expected an n x dim matrix with one chunk id and one split per row")
    if n == 0:
        raise ValueError("no vectors to cluster: is the split embedded? (materialize `embeddings` first)")
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    if not all(np.isfinite(X[s:s + BLOCK]).all() for s in range(0, n, BLOCK)):
        raise ValueError("vectors contain NaN or infinite values: cannot cluster them")
    if len(set(zip(chunk_splits, chunk_ids))) != n:
        raise ValueError("duplicate (split, chunk_id) pairs: every chunk must appear once")
    if not (2 <= branching[0] <= branching[1]) or min_size < 1 or max_depth < 0 or seed < 0:
        raise ValueError(f"bad parameters: branching {branching} (need 2 <= lo <= hi), min_size {min_size} (>= 1), "
                         f"max_depth {max_depth} (>= 0), seed {seed} (>= 0)")
    chunk_ids, chunk_splits = list(chunk_ids), list(chunk_splits)
    params = {"max_depth": max_depth, "min_size": min_size, "branching": list(branching), "min_quality": min_quality,
              "sample_size": sample_size, "silhouette_size": silhouette_size, "pca_dims": pca_dims,
              "threads": threads, "n": n, "dim": int(X.shape[1])}
    b = _Builder(X, chunk_ids, chunk_splits, seed, max_depth, min_size, branching, min_quality, sample_size,
                 max(silhouette_size, 2 * branching[1]), pca_dims, log)
    with threadpool_limits(limits=threads):
        b.run()
    for w in b.warnings:
        if log:
            log(f"warning: {w}")
    return Tree(b.nodes, chunk_ids, chunk_splits, b.leaf_of, b.leaf_ids, seed, params, b.warnings)
