"""`cluster_tree`: the recursive cluster tree of one split's chunk embeddings (or of every split's: tree "all"),
stored in Postgres (centroids as vectors) and exported to the results DuckDB; `cluster_names` names its nodes."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import (
    ALL_SPLITS_TREE,
    embeddings_to_trees,
    tree_partitions,
)
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.embeddings import embeddings
from cp_assets.lib.clusters.materialize import materialize_tree
from cp_assets.lib.clusters.store import covers_every_chunk
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
    return result(materialize_tree(
        pg.store(), results.db(), context.partition_key, encoder.model, log=context.log.info, warn=context.log.warning,
        seed=config.seed, max_depth=config.max_depth, min_size=config.min_size,
        branching=(config.branching_min, config.branching_max), min_quality=config.min_quality,
        sample_size=config.sample_size))


@dg.asset_check(asset=cluster_tree, partitions_def=tree_partitions, blocking=True,
                retry_policy=PG_RETRY,
                description="Every embedded chunk of the tree's split(s) sits in exactly one leaf.")
def check_cluster_tree_covers_every_chunk(context: dg.AssetCheckExecutionContext, encoder: SentenceEncoder,
                                          pg: PgVectorStore) -> dg.AssetCheckResult:
    passed, figures = covers_every_chunk(pg.store(), context.partition_key, model_slug(encoder.model), ALL_SPLITS_TREE)
    return dg.AssetCheckResult(passed=passed, metadata=figures)
