"""The clusters domain's definitions: the recursive cluster tree of a split (or `all`), its LLM names, the eval
questions per cluster and the rollouts placed in the tree; the coverage check and the jobs."""

import dagster as dg

from cp_assets.defs.clusters.annotations import annotations
from cp_assets.defs.clusters.cluster_names import cluster_names
from cp_assets.defs.clusters.cluster_report import cluster_report
from cp_assets.defs.clusters.cluster_tree import (
    check_cluster_tree_covers_every_chunk,
    cluster_tree,
)
from cp_assets.defs.core.executors import gpu_executor

# Both jobs run on the GPU executor: annotations is GPU work, and clusters_job is a chain (tree -> names -> report) whose
# last two steps encode texts, so one process (locally) loads the embedding model once for both.
clusters_job = dg.define_asset_job(
    "clusters_job", selection=dg.AssetSelection.assets(cluster_tree, cluster_names, cluster_report),
    executor_def=gpu_executor(), tags={"cprox/resource": "gpu"},
    description="Cluster tree of one split (or `all`), its names, and the eval questions per cluster.",
)
annotations_job = dg.define_asset_job(
    "annotations_job", selection=dg.AssetSelection.assets(annotations),
    executor_def=gpu_executor(), tags={"cprox/resource": "gpu"},
    description="One model's rollouts placed in one split's cluster tree, sentence by sentence.",
)

defs = dg.Definitions(assets=[cluster_tree, cluster_names, cluster_report, annotations],
                      asset_checks=[check_cluster_tree_covers_every_chunk], jobs=[clusters_job, annotations_job])
