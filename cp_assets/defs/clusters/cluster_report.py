"""`cluster_report`: which clusters the eval questions fall in: every question of every loaded eval set placed in a
split's cluster tree (table `question_clusters`), counts per top-level cluster and eval set."""

import dagster as dg

from cp_assets.defs.clusters.cluster_names import cluster_names
from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import tree_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.lib.clusters.materialize import materialize_question_clusters
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=tree_partitions,
    deps=[cluster_names, eval_samples],
    group_name="clusters",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Eval questions per cluster: every question of every loaded eval set placed in the tree (nearest "
                "leaf, top-level cluster, named path). Table `question_clusters`; counts per cluster and eval set.",
)
def cluster_report(context: dg.AssetExecutionContext, encoder: SentenceEncoder, pg: PgVectorStore,
                   results: ResultsStore) -> dg.MaterializeResult:
    return result(materialize_question_clusters(pg.store(), results.db(), context.partition_key, encoder.model))
