"""`canary_memorization`: one run's base model scored on every planted item (canaries, invented facts, eval items
at doses 0-64): greedy and probabilistic extraction, exposure among 10,000 same-format candidates, loss against the
reference model, answer accuracy of planted eval items. Tables `planted_scores` and `canary_memorization`."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import run_partitions
from cp_assets.defs.memorization.reference_model import reference_model
from cp_assets.defs.memorization.tiny_models import tiny_models
from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET
from cp_assets.lib.memorization.materialize import materialize_canary_memorization
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=run_partitions,
    deps=[tiny_models, reference_model],
    **LAB_GPU_ASSET,
    description="Planted ground truth, by dose: greedy and (n, p) extraction, exposure, loss vs the reference "
                "model, answer accuracy of planted eval items. Tables `planted_scores`, `canary_memorization`.",
)
def canary_memorization(context: dg.AssetExecutionContext, results: ResultsStore) -> dg.MaterializeResult:
    return result(materialize_canary_memorization(results.db(), context.partition_key, log=context.log.info))
