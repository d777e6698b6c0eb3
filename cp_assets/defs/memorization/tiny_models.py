"""`tiny_models`: the memorization lab's base models, a small nanochat-style GPT trained here on one corpus split per
optimizer x seed (training.yaml), registered as models `tiny-<optimizer>-s<seed>` so rollouts, verbatim_recall,
extraction and membership run on them. Training runs in the `gpu` pool (on CUDA when there is one)."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.partitions import (
    model_partitions,
    run_partitions,
    runs_from_base_split,
)
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.core import plots, settings
from cp_assets.lib.evals.eval_registry import load_evals
from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.memorization import training as tiny_training
from cp_assets.lib.reports import report_tables
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


def split_documents(pg: PgVectorStore, split: str) -> list[tuple[str, str]]:
    """(doc_id, text) of every document of a split; a clear error when `raw_corpus` has not been materialized."""
    docs = [(d.doc_id, d.text) for d in pg.store().iter_documents(split)]
    if not docs:
        raise ValueError(f"split {split!r} has no documents: materialize `raw_corpus` for it first")
    return docs


def record_training(db, model_id: str, rows: tuple[list[tuple], list[tuple]],
                    doc_rows: tuple[str, list[tuple]] | None = None) -> None:
    """Replace the model's run row and curve (and the split's member list) in one transaction per table group."""
    runs_rows, curve_rows = rows
    with db.connect() as con:
        report_tables.replace_tables(con, {"model_id": model_id}, {
            "training_runs": (tiny_training.RUN_COLUMNS, runs_rows),
            "training_curves": (tiny_training.CURVE_COLUMNS, curve_rows)})
        if doc_rows is not None:
            report_tables.replace_rows(con, "training_documents", {"split": doc_rows[0]}, tiny_training.DOC_COLUMNS,
                                       doc_rows[1])


def training_metadata(context, out: dict, stage: str) -> dict:
    from cp_assets.lib.tinygpt import train

    result, model_id = out["result"], out["model_id"]
    png = train.loss_curves_png({model_id: result}, settings.home() / "plots" / f"loss_{model_id}.png")
    context.instance.add_dynamic_partitions(model_partitions.name, [model_id])
    return {"model_id": model_id, "stage": stage, "checkpoint": dg.MetadataValue.path(str(out["path"])),
            "n_params": result.n_params, "tokens": result.tokens, "final_train_loss": result.final_train_loss,
            "final_val_loss": result.final_val_loss, "tokens_per_s": result.tokens_per_s,
            "seconds": result.seconds, "config": dg.MetadataValue.json(_jsonable(out["config"])),
            "loss_curve": dg.MetadataValue.md(plots.markdown_image(png, f"loss of {model_id}"))}


def _jsonable(cfg) -> dict:
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool, type(None)))}


def fail(exc, db, model_id: str) -> dg.Failure:
    """A diverged run: its failure row is recorded, earlier checkpoints stay, and the step fails without retries."""
    record_training(db, model_id, exc.rows)
    return dg.Failure(description=str(exc), metadata={"model_id": model_id}, allow_retries=False)


class TrainingConfig(dg.Config):
    lr_scale: float = 1.0  # multiplies every learning rate of the run (a sweep knob; training.yaml holds the rest)


@dg.asset(
    partitions_def=run_partitions,
    deps=[dg.AssetDep(raw_corpus, partition_mapping=runs_from_base_split)],
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    description="A small nanochat-style GPT trained on the base split's member documents with one optimizer "
                "(AdamW, or Muon on the matrices + AdamW on embeddings/head) and seed; same data, tokens and "
                "schedule for every run. Checkpoint under CPROX_HOME/tiny/base/<run>, registered as model "
                "`tiny-<run>`; tables `training_runs`, `training_curves`, `training_documents`.",
)
def tiny_models(context: dg.AssetExecutionContext, config: TrainingConfig, pg: PgVectorStore,
                results: ResultsStore) -> dg.MaterializeResult:
    from cp_assets.lib.tinygpt.train import TrainingDiverged

    run, experiment, db = context.partition_key, ex.load_experiment(), results.db()
    split = experiment.base.split
    docs = split_documents(pg, split)
    evals = load_evals()
    quotes = tiny_training.recall_quotes(evals.load_samples("recall")) if "recall" in evals.names() else []
    try:
        out = tiny_training.train_base(docs, quotes, experiment, run, lr_scale=config.lr_scale,
                                       log=context.log.info)
    except TrainingDiverged as exc:
        raise fail(exc, db, ex.base_model_id(run)) from exc
    ex.register(out["model_id"], out["path"], f"tiny GPT, {run}, base on {split}")
    record_training(db, out["model_id"], (out["runs_rows"], out["curve_rows"]), (split, out["doc_rows"]))
    docs_split = out["docs"]
    return dg.MaterializeResult(metadata=training_metadata(context, out, "base") | {
        "members": len(docs_split.members), "heldout": len(docs_split.heldout),
        "recall_documents": len(docs_split.recall_documents)})
