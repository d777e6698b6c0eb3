"""Texts -> top-k nearest chunks, per split or over all splits.

Two engines over the same store of record (pgvector):
- `pgvector`: SQL per query, pipelined on one connection; HNSW (cosine index, `ef_search`) or exact (`exact=True`).
- `memory`: for batches (the reports' workload), a FAISS index built from the split's vectors copied out of
  pgvector and cached under CPROX_HOME by the partition's version: flat (exact) or HNSW. A re-materialized split gets
  a new version, so a stale cache is never used; a damaged one (its files fail their sha256 manifest, or do not
  load) is logged with the file and the reason and rebuilt from pgvector.
`engine="auto"` picks memory for batches of `MEMORY_BATCH` queries or more.

Distances: cosine = 1 - cos; l2 = Euclidean; inner_product = -<a, b> (pgvector's `<#>`: smaller is closer);
l1 = Manhattan. With HNSW, l2 and inner_product rank like cosine on unit vectors; l1 re-ranks `ef_search` candidates.

Every hit of `search` carries `embed_share`, its split's vectors / chunks: below 1 when the registry's
`embed_sample` embedded part of the split, where a distance is an upper bound of the distance to the whole split.
A call reads the partition registry once for its whole batch of texts: the embedded splits, their versions and
their shares.
"""

from __future__ import annotations

import heapq
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cp_assets.lib.core import integrity, settings
from cp_assets.lib.corpus.embed_sample import embed_shares
from cp_assets.lib.corpus.encoder import encode, model_slug
from cp_assets.lib.corpus.pgvector_store import METRICS, Hit, PgStore

MEMORY_BATCH = 64
log = logging.getLogger(__name__)


def search(store: PgStore, texts: Sequence[str], *, model: str | None = None, split: str | None = None, k: int = 5,
           metric: str = "cosine", exact: bool = False, ef_search: int = 100, engine: str = "auto",
           cache_dir: Path | None = None) -> list[list[Hit]]:
    """One list of hits (rank 1 first) per text, each with its split's `embed_share`."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose from {sorted(METRICS)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model = model or settings.embed_model()
    slug = model_slug(model)
    parts = store.partitions()  # read once per call (a batch of texts): the splits, their versions and shares
    versions = {p["split"]: p["version"] for p in parts if (p["kind"], p["model_slug"]) == ("embeddings", slug)}
    available = sorted(versions)
    if not available:
        raise LookupError(f"no split has embeddings for {model!r} yet: materialize the `embeddings` asset first")
    if split is not None and split not in available:
        raise LookupError(f"split {split!r} has no embeddings for {model!r}; embedded splits: {available}")
    queries = encode(model, list(texts))
    if engine == "auto":
        engine = "memory" if len(texts) >= MEMORY_BATCH else "pgvector"
    if engine == "pgvector":
        results = store.search(slug, queries, split=split, k=k, metric=metric, exact=exact, ef_search=ef_search)
    elif engine == "memory":
        results = memory_search(store, slug, queries, [split] if split else available, k=k, metric=metric,
                                exact=exact, ef_search=ef_search,
                                cache_dir=cache_dir or settings.home() / "cache" / "indexes", versions=versions)
    else:
        raise ValueError(f"unknown engine {engine!r}: auto, pgvector or memory")
    shares = embed_shares(store, slug, parts)
    for hits in results:
        for h in hits:
            h.embed_share = shares.get(h.split)
    return results


def memory_search(store: PgStore, slug: str, queries: np.ndarray, splits: Sequence[str], *, k: int, metric: str,
                  exact: bool, ef_search: int, cache_dir: Path,
                  versions: Mapping[str, str] | None = None) -> list[list[Hit]]:
    """Top-k hits per query vector over `splits` through their cached FAISS indexes; each split's published version
    from `versions` when the caller has read them (`search`), else asked of the store."""
    per_query: list[list[tuple[float, str, str]]] = [[] for _ in range(len(queries))]
    for split in splits:
        version = versions[split] if versions is not None else store.partition_version("embeddings", split, slug)
        ids, index = _index(store, slug, split, version, metric, exact, cache_dir)
        if not ids:
            continue
        is_hnsw = hasattr(index, "hnsw")
        if is_hnsw:
            index.hnsw.efSearch = max(ef_search, k)
        scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(ids)))
        dists = _to_distance(scores, metric, inner_product_scores=is_hnsw)
        for qi in range(len(queries)):
            per_query[qi].extend((float(d), split, ids[r]) for d, r in zip(dists[qi], rows[qi]) if r >= 0)
    tops = [heapq.nsmallest(k, hits) for hits in per_query]
    texts = store.chunk_texts(sorted({(s, c) for top in tops for _, s, c in top}))
    results = []
    for top in tops:
        hits = []
        for rank, (d, s, c) in enumerate(top, start=1):
            doc_id, text = texts[(s, c)]
            hits.append(Hit(rank, d, metric, s, doc_id, c, text))
        results.append(hits)
    return results


def _to_distance(scores: np.ndarray, metric: str, inner_product_scores: bool) -> np.ndarray:
    """FAISS scores -> this module's distances (inner-product scores come from the unit-vector HNSW index)."""
    if metric == "cosine":
        return 1.0 - scores
    if metric == "inner_product":
        return -scores
    if metric == "l2":
        squared = 2.0 - 2.0 * scores if inner_product_scores else scores
        return np.sqrt(np.maximum(squared, 0.0))
    return scores


@lru_cache(maxsize=16)
def _index(store: PgStore, slug: str, split: str, version: str, metric: str, exact: bool, cache_dir: Path):
    """A FAISS index over one published split, cached on disk by partition version with a sha256 manifest. A cache
    that fails its manifest or does not load (truncated, overwritten) is logged and rebuilt, never used."""
    import faiss

    hnsw = not exact and metric != "l1"
    kind = "hnsw" if hnsw else f"flat-{metric}"
    base = cache_dir / slug / f"{split}-{version}"
    ids_path, index_path = base.with_suffix(".ids.npy"), base.with_suffix(f".{kind}.faiss")
    manifest = base.with_suffix(f".{kind}.sha256.json").name
    if ids_path.exists() and index_path.exists():
        cached = _load_cached(ids_path, index_path, manifest)
        if cached is not None:
            return cached
    ids, mat = store.load_matrix(slug, split)
    if not ids:
        return [], None
    d = mat.shape[1]
    if hnsw:  # unit vectors: inner-product HNSW orders cosine, l2 and inner product alike
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
    else:
        index = {"cosine": faiss.IndexFlatIP, "inner_product": faiss.IndexFlatIP, "l2": faiss.IndexFlatL2}.get(
            metric, lambda dim: faiss.IndexFlat(dim, faiss.METRIC_L1))(d)
    index.add(mat)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp_index, tmp_ids = (p.with_name(f".{p.name}.tmp-{os.getpid()}") for p in (index_path, ids_path))
    faiss.write_index(index, str(tmp_index))
    with open(tmp_ids, "wb") as f:
        np.save(f, np.array(ids))
    tmp_ids.replace(ids_path)
    tmp_index.replace(index_path)
    integrity.write_manifest(base.parent, [ids_path.name, index_path.name], manifest=manifest)  # last: the seal
    return ids, index


def _load_cached(ids_path: Path, index_path: Path, manifest: str):
    """(ids, index) from the cache files, or None (logged) when they cannot be trusted."""
    import faiss

    if not integrity.has_manifest(index_path.parent, manifest):
        log.info("search index cache %s has no checksums (written by an older version or interrupted): rebuilding",
                 index_path)
        return None
    try:
        integrity.verify_manifest(index_path.parent, manifest, required=(ids_path.name, index_path.name))
        ids = list(np.load(ids_path, allow_pickle=False))
        index = faiss.read_index(str(index_path))
        if index.ntotal != len(ids):
            raise integrity.CorruptFile(index_path, f"{index.ntotal} vectors for {len(ids)} ids")
        return ids, index
    except (integrity.CorruptFile, OSError, RuntimeError, ValueError) as exc:
        log.warning("search index cache %s is corrupt or truncated (%s): rebuilding it from pgvector",
                    index_path, exc)
        return None


def hits_json(hits: list[Hit]) -> list[dict]:
    return [{"rank": h.rank, "distance": h.distance, "metric": h.metric, "split": h.split, "doc_id": h.doc_id,
             "chunk_id": h.chunk_id, "text": h.text, "embed_share": h.embed_share} for h in hits]
