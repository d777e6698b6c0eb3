"""`rollout_traces`: the maximal verbatim spans of every rollout of one model in one split (OLMoTrace style), with
exact counts, documents and snippets; table `rollout_spans` (`cp_assets.lib.reports.trace.trace_rollouts`)."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_split_partitions, rollouts_of_model, shards_of_split
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.ngram_index import ngram_index
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.lib.reports.trace import trace_rollouts
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class RolloutTracesConfig(dg.Config):
    min_tokens: int = 12  # shortest span reported (>= the index's n)
    max_docs: int = 3  # locations (with snippets) stored per span


@dg.asset(
    partitions_def=model_split_partitions,
    deps=[dg.AssetDep(rollouts, partition_mapping=rollouts_of_model),
          dg.AssetDep(ngram_index, partition_mapping=shards_of_split)],
    group_name="reports",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    retry_policy=PG_RETRY,
    description="Verbatim spans of >= `min_tokens` tokens that each rollout of the model shares with the split: "
                "maximal spans with exact occurrence counts, document ids, offsets and snippets (table "
                "`rollout_spans`).",
)
def rollout_traces(context: dg.AssetExecutionContext, config: RolloutTracesConfig, pg: PgVectorStore,
                   results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    return result(trace_rollouts(pg.store(), results.db(), keys["model"], keys["split"], min_tokens=config.min_tokens,
                                 max_docs=config.max_docs, log=context.log.info))
