"""`tiny_sft_models`: each base model of `tiny_models` fine-tuned on the SFT split (same optimizer and seed), giving
base/SFT pairs registered as `tiny-<run>-sft`."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.partitions import run_partitions, runs_from_sft_split
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.defs.memorization.tiny_models import (
    TrainingConfig,
    fail,
    record_training,
    split_documents,
    tiny_models,
    training_metadata,
)
from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.memorization import training as tiny_training
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    partitions_def=run_partitions,
    deps=[tiny_models, dg.AssetDep(raw_corpus, partition_mapping=runs_from_sft_split)],
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    description="The run's base model fine-tuned on the SFT split with the same optimizer and seed (its tokenizer "
                "reused). Checkpoint under CPROX_HOME/tiny/sft/<run>, registered as model `tiny-<run>-sft`.",
)
def tiny_sft_models(context: dg.AssetExecutionContext, config: TrainingConfig, pg: PgVectorStore,
                    results: ResultsStore) -> dg.MaterializeResult:
    from cp_assets.lib.tinygpt.train import TrainingDiverged

    run, experiment, db = context.partition_key, ex.load_experiment(), results.db()
    split = experiment.sft.split
    docs = split_documents(pg, split)
    try:
        out = tiny_training.train_sft(docs, experiment, run, lr_scale=config.lr_scale, log=context.log.info)
    except TrainingDiverged as exc:
        raise fail(exc, db, ex.sft_model_id(run)) from exc
    ex.register(out["model_id"], out["path"], f"tiny GPT, {run}, base fine-tuned on {split}")
    record_training(db, out["model_id"], (out["runs_rows"], out["curve_rows"]))
    return dg.MaterializeResult(metadata=training_metadata(context, out, "sft") | {
        "sft_documents": out["n_documents"]})
