"""`verbatim_recall`: greedy completion of every prefix of the verbatim-recall set by one model, scored against the
true continuation (exact, normalized, character and word edit distance and similarity, longest matching prefix in
words), with rates by category and 95% intervals. Table `verbatim_recall`; the completions are stored as rollouts."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.partitions import model_partitions
from cp_assets.lib.core import plots, settings
from cp_assets.lib.evals.eval_registry import load_evals
from cp_assets.lib.evals.rollouts import run_eval
from cp_assets.lib.memorization import recall as recall_scores
from cp_assets.lib.memorization.runs import (
    RECALL_COLUMNS,
    recall_markdown,
    recall_params,
    recall_rows,
)
from cp_assets.lib.reports import report_tables
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.results import ResultsStore


class VerbatimRecallConfig(dg.Config):
    eval_set: str = "recall"
    max_tokens: int = 64  # the continuations are 5-60 words
    limit: int | None = None


@dg.asset(
    partitions_def=model_partitions,
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    description="Verbatim recall of famous passages: greedy completion of each prefix, scored against the "
                "continuation (exact / normalized match, char and word edit distance and similarity, longest "
                "matching word prefix); rates by category with Wilson intervals. Table `verbatim_recall`.",
)
def verbatim_recall(context: dg.AssetExecutionContext, config: VerbatimRecallConfig, llm: LLMResource,
                    results: ResultsStore) -> dg.MaterializeResult:
    model_id, db = context.partition_key, results.db()
    samples = load_evals().load_samples(config.eval_set, config.limit)
    figures, stored = run_eval(llm.backend(model_id), config.eval_set, recall_params(config.max_tokens), db,
                               limit=config.limit, log=context.log.info)
    rows = recall_rows(model_id, samples, stored)
    with db.connect() as con:
        report_tables.replace_rows(con, "verbatim_recall", {"model_id": model_id}, RECALL_COLUMNS, rows)
    summary = recall_scores.summarize([dict(zip(RECALL_COLUMNS, r)) for r in rows], by="category")
    png = recall_scores.recall_plot(summary, settings.home() / "plots" / f"verbatim_recall_{model_id}.png",
                                    f"{model_id}: verbatim recall by category")
    overall = next((s for s in summary if s.get("category") in (None, "all", "overall")), summary[-1])
    return dg.MaterializeResult(metadata={
        "items": len(rows), "generated": figures["generated"],
        "exact_rate": overall.get("exact_rate"), "normalized_rate": overall.get("normalized_rate"),
        "mean_char_similarity": overall.get("char_similarity"),
        "by_category": dg.MetadataValue.json(summary),
        "recall_plot": dg.MetadataValue.md(plots.markdown_image(png, "recall by category")),
        "longest_recalled": dg.MetadataValue.md(recall_markdown(rows))})
