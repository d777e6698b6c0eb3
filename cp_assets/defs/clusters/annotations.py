"""`annotations`: every rollout of a model, answer by answer and sentence by sentence, placed in a split's cluster
tree (nearest leaf, named path, distance); error rate per top-level cluster with Wilson intervals. Table
`annotations`."""

import dagster as dg

from cp_assets.defs.clusters.cluster_names import cluster_names
from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_tree_partitions, rollouts_of_model, tree_of_split
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.lib.clusters.materialize import materialize_annotations
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=model_tree_partitions,
    deps=[dg.AssetDep(rollouts, partition_mapping=rollouts_of_model),
          dg.AssetDep(cluster_names, partition_mapping=tree_of_split)],
    group_name="clusters",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    pool="gpu",  # encodes answers and sentences with the embedding model
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Each rollout of the model (whole answer and each sentence) placed in the split's cluster tree: "
                "nearest leaf, top-level cluster, named path, cosine distance. Error rate per top-level cluster "
                "with 95% Wilson intervals. Table `annotations`.",
)
def annotations(context: dg.AssetExecutionContext, encoder: SentenceEncoder, pg: PgVectorStore,
                results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    return result(materialize_annotations(pg.store(), results.db(), keys["model"], keys["split"], encoder.model))
