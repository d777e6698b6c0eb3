"""`membership`: membership inference on one model: loss, zlib ratio, Min-K% and Min-K%++ per passage from the
model's token logprobs, and each score's AUROC (bootstrap interval, TPR at 1% / 5% FPR) at telling member passages
from non-members. Labels are exact for models trained here (`tiny_models`), a proxy for any other model."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.partitions import model_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.memorization.tiny_models import split_documents
from cp_assets.lib.core import plots, settings
from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.memorization import membership as mia
from cp_assets.lib.memorization.runs import (
    AUROC_COLUMNS,
    MEMBERSHIP_COLUMNS,
    auroc_markdown,
    labelled_documents,
    membership_rows,
    passages,
    scores_by_class,
)
from cp_assets.lib.reports import report_tables
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class MembershipConfig(dg.Config):
    n: int = 150  # passages per class (one per document)
    words: int = 64  # words per passage
    max_tokens: int = 256
    seed: int = 0


@dg.asset(
    partitions_def=model_partitions,
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Membership inference: loss, zlib ratio, Min-K% and Min-K%++ per passage (teacher-forced token "
                "logprobs) and the AUROC of each at separating member from non-member passages, with bootstrap "
                "intervals and TPR at low FPR. Tables `membership_scores`, `membership_auroc`.",
)
def membership(context: dg.AssetExecutionContext, config: MembershipConfig, llm: LLMResource, pg: PgVectorStore,
               results: ResultsStore) -> dg.MaterializeResult:
    model_id, db = context.partition_key, results.db()
    with db.connect(read_only=True) as con:
        split, labels, member_ids, other_ids = labelled_documents(llm.registry().get(model_id), con,
                                                                  ex.load_experiment().base.split)
    docs = [d for d in split_documents(pg, split) if d[0] in member_ids | other_ids]
    members = passages([d for d in docs if d[0] in member_ids], config.n, config.words, config.seed)
    nonmembers = passages([d for d in docs if d[0] in other_ids], config.n, config.words, config.seed)
    rows, aurocs, figures = membership_rows(llm.backend(model_id), members, nonmembers, labels=labels,
                                            max_tokens=config.max_tokens, log=context.log.info)
    with db.connect() as con:
        report_tables.replace_tables(con, {"model_id": model_id}, {
            "membership_scores": (MEMBERSHIP_COLUMNS, rows), "membership_auroc": (AUROC_COLUMNS, aurocs)})
    png = mia.roc_plot(scores_by_class(rows), settings.home() / "plots" / f"membership_{model_id}.png",
                       f"{model_id}: membership ROC ({labels} labels, {split})")
    return dg.MaterializeResult(metadata=figures | {
        "split": split, "auroc": dg.MetadataValue.md(auroc_markdown(aurocs)),
        "roc": dg.MetadataValue.md(plots.markdown_image(png, "ROC curves"))})

