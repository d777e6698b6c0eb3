"""`lr_sweep`: each optimizer trained at the learning-rate multiples of training.yaml's `base.lr_sweep` (first seed,
same members, planted items and token budget), with its validation loss and planted-item extraction; the multiple 1.0
is read from `tiny_models`. Table `lr_sweep`; the report says whether each optimizer ran at its best rate."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET, base_split_dep
from cp_assets.lib.memorization.references import materialize_lr_sweep
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    deps=base_split_dep(),
    **LAB_GPU_ASSET,
    description="Learning-rate sweep per optimizer at the same token budget (first seed): validation loss and "
                "greedy extraction of the planted items per multiple. Table `lr_sweep`.",
)
def lr_sweep(context: dg.AssetExecutionContext, pg: PgVectorStore, results: ResultsStore) -> dg.MaterializeResult:
    return result(materialize_lr_sweep(pg.store(), results.db(), log=context.log.info))
