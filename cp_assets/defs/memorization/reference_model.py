"""`reference_model`: the memorization lab's reference, a tiny GPT trained like the runs' base models on the same
members but with nothing planted (AdamW, the first seed), registered as model `tiny-reference`. Planted-text losses
of every run are compared with its losses (`canary_memorization`)."""

import dagster as dg

from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET, base_split_dep, training_result
from cp_assets.lib.memorization.materialize import materialize_reference_model
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    deps=base_split_dep(),
    **LAB_GPU_ASSET,
    description="A tiny GPT trained on the base members with nothing planted (AdamW, first seed): the reference "
                "model for planted-text losses. Checkpoint under CPROX_HOME/tiny/reference, model `tiny-reference`.",
)
def reference_model(context: dg.AssetExecutionContext, pg: PgVectorStore,
                    results: ResultsStore) -> dg.MaterializeResult:
    return training_result(context, lambda: materialize_reference_model(pg.store(), results.db(),
                                                                        log=context.log.info))
