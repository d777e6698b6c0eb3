"""`cluster_tree`: the recursive cluster tree of one split's chunk embeddings (or of every split's: tree "all"),
stored in Postgres (centroids as vectors) and exported to the results DuckDB; `cluster_names` names its nodes."""

import time

import dagster as dg

from cp_assets.defs.core.partitions import (
    ALL_SPLITS_TREE,
    embeddings_to_trees,
    tree_partitions,
)
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.embeddings import embeddings
from cp_assets.lib.clusters import store as cluster_store
from cp_assets.lib.clusters.tree import build_tree
from cp_assets.lib.corpus.encoder import model_slug
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class ClusterTreeConfig(dg.Config):
    seed: int = 0
    max_depth: int = 4  # levels below the root
    min_size: int = 25  # smallest cluster; smaller children merge into their nearest sibling
    branching_min: int = 2  # children per split, chosen by silhouette in [branching_min, branching_max]
    branching_max: int = 8
    min_quality: float = 0.01  # a split whose silhouette is below this is not made
    sample_size: int = 20_000  # members sampled to fit each node's k-means


@dg.asset(
    partitions_def=tree_partitions,
    ins={"embeddings": dg.AssetIn(key=embeddings.key, partition_mapping=embeddings_to_trees, dagster_type=dg.Nothing)},
    group_name="clusters",
    kinds={"postgres", "scikitlearn"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Recursive k-means tree of the split's chunk embeddings (k per node by silhouette; stops at depth, "
                "minimum size or low split quality). Nodes: id (path), parent, depth, size, centroid, quality, "
                "per-split counts; every chunk in exactly one leaf. Postgres (`cprox_cluster_*`) and results DuckDB "
                "(`cluster_nodes`, `cluster_members`). Partition `all`: one tree over every split.",
)
def cluster_tree(context: dg.AssetExecutionContext, config: ClusterTreeConfig, encoder: SentenceEncoder,
                 pg: PgVectorStore, results: ResultsStore) -> dg.MaterializeResult:
    name, store, t0 = context.partition_key, pg.store(), time.perf_counter()
    slug = model_slug(encoder.model)
    vectors, ids, splits = cluster_store.load_vectors(store, slug, "all" if name == ALL_SPLITS_TREE else name)
    context.log.info(f"tree {name}: {len(ids):,} chunks of {sorted(set(splits))}")
    tree = build_tree(vectors, ids, splits, seed=config.seed, max_depth=config.max_depth, min_size=config.min_size,
                      branching=(config.branching_min, config.branching_max), min_quality=config.min_quality,
                      sample_size=config.sample_size, log=context.log.info)
    for w in tree.warnings:
        context.log.warning(w)
    version = cluster_store.save_tree(store, name, slug, tree)
    with results.db().connect() as con:
        exported = cluster_store.export_to_duckdb(tree, con, tree=name, embed_model=encoder.model)
    secs = time.perf_counter() - t0
    summary = tree.summary()
    top = sorted((n for n in tree.nodes.values() if n.depth == 1), key=lambda n: -n.size)
    table = "| node | chunks | quality | per split |\n|---|---|---|---|\n" + "".join(
        f"| {n.node_id} | {n.size:,} | {'' if n.quality is None else f'{n.quality:.3f}'} | {n.split_counts} |\n"
        for n in top)
    return dg.MaterializeResult(metadata={
        **{k: v for k, v in summary.items() if k not in ("warnings", "stop_reasons") and v is not None},
        "stop_reasons": dg.MetadataValue.json(summary["stop_reasons"]),
        "warnings": "; ".join(tree.warnings) or "none", "version": version, "embed_model": encoder.model,
        "seconds": round(secs, 2), "chunks_per_s": round(len(ids) / secs) if secs else None,
        "duckdb_rows": dg.MetadataValue.json(exported), "top_level": dg.MetadataValue.md(table),
    })


@dg.asset_check(asset=cluster_tree, partitions_def=tree_partitions, blocking=True,
                retry_policy=PG_RETRY,
                description="Every embedded chunk of the tree's split(s) sits in exactly one leaf.")
def check_cluster_tree_covers_every_chunk(context: dg.AssetCheckExecutionContext, encoder: SentenceEncoder,
                                          pg: PgVectorStore) -> dg.AssetCheckResult:
    name, store = context.partition_key, pg.store()
    slug = model_slug(encoder.model)
    with store.session() as conn:
        members, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (chunk_split, chunk_id)) FROM cprox_cluster_members "
            "WHERE tree = %s AND embed_slug = %s", (name, slug)).fetchone()
    splits = [p["split"] for p in store.partitions() if p["kind"] == "embeddings" and p["model_slug"] == slug
              and (name == ALL_SPLITS_TREE or p["split"] == name)]
    embedded = sum(store.count("embeddings", s, slug) for s in splits)
    return dg.AssetCheckResult(passed=members == distinct == embedded,
                               metadata={"members": members, "distinct": distinct, "embedded": embedded})
