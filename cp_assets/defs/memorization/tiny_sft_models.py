"""`tiny_sft_models`: each base model of `tiny_models` fine-tuned on the SFT split (same optimizer and seed), giving
base/SFT pairs registered as `tiny-<run>-sft`."""

import dagster as dg

from cp_assets.defs.core.partitions import run_partitions, runs_from_sft_split
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.defs.memorization.tiny_models import tiny_models
from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET, TrainingConfig, training_result
from cp_assets.lib.memorization.materialize import materialize_tiny_sft_model
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=run_partitions,
    deps=[tiny_models, dg.AssetDep(raw_corpus, partition_mapping=runs_from_sft_split)],
    **LAB_GPU_ASSET,
    description="The run's base model fine-tuned on the SFT split with the same optimizer and seed (its tokenizer "
                "reused). Checkpoint under CPROX_HOME/tiny/sft/<run>, registered as model `tiny-<run>-sft`.",
)
def tiny_sft_models(context: dg.AssetExecutionContext, config: TrainingConfig, pg: PgVectorStore,
                    results: ResultsStore) -> dg.MaterializeResult:
    return training_result(context, lambda: materialize_tiny_sft_model(
        pg.store(), results.db(), context.partition_key, lr_scale=config.lr_scale, log=context.log.info))
