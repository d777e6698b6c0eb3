"""`tiny_models`: the memorization lab's base models, a small nanochat-style GPT trained here on one corpus split per
optimizer x seed (training.yaml), registered as models `tiny-<optimizer>-s<seed>` so rollouts, verbatim_recall,
extraction and membership run on them. Training runs in the `gpu` pool (on CUDA when there is one)."""

import dagster as dg

from cp_assets.defs.core.partitions import run_partitions, runs_from_base_split
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET, TrainingConfig, training_result
from cp_assets.lib.memorization.materialize import materialize_tiny_model
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=run_partitions,
    deps=[dg.AssetDep(raw_corpus, partition_mapping=runs_from_base_split)],
    **LAB_GPU_ASSET,
    description="A small nanochat-style GPT trained on the base split's member documents with one optimizer "
                "(AdamW, or Muon on the matrices + AdamW on embeddings/head) and seed; same data, tokens and "
                "schedule for every run. Checkpoint under CPROX_HOME/tiny/base/<run>, registered as model "
                "`tiny-<run>`; tables `training_runs`, `training_curves`, `training_documents`.",
)
def tiny_models(context: dg.AssetExecutionContext, config: TrainingConfig, pg: PgVectorStore,
                results: ResultsStore) -> dg.MaterializeResult:
    return training_result(context, lambda: materialize_tiny_model(
        pg.store(), results.db(), context.partition_key, lr_scale=config.lr_scale, log=context.log.info))
