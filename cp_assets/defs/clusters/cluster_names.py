"""`cluster_names`: a name and a one-sentence description for every node of a cluster tree, by an LLM prompted
Clio-style (samples nearest the centroid, contrasting samples from siblings; parents from their children's names),
with c-TF-IDF keyword names always computed and used when no model is configured or the model's answer is unusable.
Names are cached by the node's member hash, so re-clustering re-names only changed nodes."""

import dagster as dg

from cp_assets.defs.clusters.cluster_tree import cluster_tree
from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import tree_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.lib.clusters.materialize import materialize_names
from cp_assets.lib.core import settings
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class ClusterNamesConfig(dg.Config):
    # a models.yaml id (any OpenAI-compatible endpoint, vLLM or a local model); empty: keyword names only.
    # Default: CPROX_NAMING_MODEL.
    naming_model: str = settings.naming_model()
    samples: int = 6  # chunks nearest the centroid shown to the model
    contrast: int = 4  # chunks of sibling clusters shown as contrast
    max_name_words: int = 6
    llm_max_depth: int = -1  # only nodes this deep or shallower are named by the model (-1: every node)


@dg.asset(
    partitions_def=tree_partitions,
    deps=[cluster_tree],
    group_name="clusters",
    kinds={"duckdb", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    pool="gpu",  # the naming model (local or vLLM) and the embedding model that scores the names
    op_tags=GPU_OP_TAGS,
    description="Names and one-sentence descriptions of every cluster-tree node (Clio-style LLM prompts, bottom-up; "
                "c-TF-IDF keyword names as the fallback and when no model is set), cached by member hash; duplicate "
                "sibling names resolved. Table `cluster_names`; treemap/sunburst HTML and PNG in the metadata.",
)
def cluster_names(context: dg.AssetExecutionContext, config: ClusterNamesConfig, encoder: SentenceEncoder,
                  pg: PgVectorStore, llm: LLMResource, results: ResultsStore) -> dg.MaterializeResult:
    return result(materialize_names(
        pg.store(), results.db(), context.partition_key, encoder.model,
        llm.backend(config.naming_model) if config.naming_model else None, config.naming_model,
        samples=config.samples, contrast=config.contrast, max_name_words=config.max_name_words,
        llm_max_depth=None if config.llm_max_depth < 0 else config.llm_max_depth, log=context.log.info))
