"""`membership`: membership inference on one model: loss, zlib ratio, Min-K% and Min-K%++ per passage from the
model's token logprobs, and each score's AUROC (bootstrap interval, TPR at 1% / 5% FPR) at telling member passages
from non-members. Labels are exact for models trained here (`tiny_models`), a proxy for any other model."""

import dagster as dg

from cp_assets.defs.partitions import model_partitions
from cp_assets.defs.tiny_models import split_documents
from cp_assets.lib import experiments as ex, membership as mia, plots, report_tables, settings
from cp_assets.lib.memorization_runs import AUROC_COLUMNS, MEMBERSHIP_COLUMNS, membership_rows, passages
from cp_assets.lib.tiny_training import members_of
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class MembershipConfig(dg.Config):
    n: int = 150  # passages per class (one per document)
    words: int = 64  # words per passage
    max_tokens: int = 256
    seed: int = 0


def labelled_documents(llm: LLMResource, model_id: str, results: ResultsStore) -> tuple[str, str, set, set]:
    """(split, labels, member ids, non-member ids): the model's own members.json when it was trained here, else the
    experiment's member / held-out documents (`training_documents`) as a proxy."""
    spec = llm.registry().get(model_id)
    info = members_of(spec.path) if spec.backend == "tiny" and spec.path else None
    if info:
        return info["split"], "exact", set(info["members"]), set(info["heldout"])
    split = ex.load_experiment().base.split
    with results.db().connect(read_only=True) as con:
        report_tables.ensure_readable(con, "training_documents")
        rows = con.execute("SELECT doc_id, role FROM training_documents WHERE split = ?", [split]).fetchall()
    if not rows:
        raise ValueError(f"model {model_id!r} was not trained here and no labelled set exists yet: materialize one "
                         f"`tiny_models` partition first (it writes the {split!r} member / held-out documents)")
    return (split, "proxy", {d for d, r in rows if r == "member"}, {d for d, r in rows if r == "heldout"})


@dg.asset(
    partitions_def=model_partitions,
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags={"cprox/resource": "gpu"},
    description="Membership inference: loss, zlib ratio, Min-K% and Min-K%++ per passage (teacher-forced token "
                "logprobs) and the AUROC of each at separating member from non-member passages, with bootstrap "
                "intervals and TPR at low FPR. Tables `membership_scores`, `membership_auroc`.",
)
def membership(context: dg.AssetExecutionContext, config: MembershipConfig, llm: LLMResource, pg: PgVectorStore,
               results: ResultsStore) -> dg.MaterializeResult:
    model_id, db = context.partition_key, results.db()
    split, labels, member_ids, other_ids = labelled_documents(llm, model_id, results)
    docs = [d for d in split_documents(pg, split) if d[0] in member_ids | other_ids]
    members = passages([d for d in docs if d[0] in member_ids], config.n, config.words, config.seed)
    nonmembers = passages([d for d in docs if d[0] in other_ids], config.n, config.words, config.seed)
    rows, aurocs, figures = membership_rows(llm.backend(model_id), members, nonmembers, labels=labels,
                                            max_tokens=config.max_tokens, log=context.log.info)
    with db.connect() as con:
        report_tables.replace_tables(con, {"model_id": model_id}, {
            "membership_scores": (MEMBERSHIP_COLUMNS, rows), "membership_auroc": (AUROC_COLUMNS, aurocs)})
    named = [dict(zip(AUROC_COLUMNS, a)) for a in aurocs]
    png = mia.roc_plot(_by_score(rows), settings.home() / "plots" / f"membership_{model_id}.png",
                       f"{model_id}: membership ROC ({labels} labels, {split})")
    table = "| score | AUROC [95% CI] | TPR@1%FPR | TPR@5%FPR |\n|---|---|---|---|\n" + "\n".join(
        f"| {a['score']} | {_fmt(a['auroc'])} [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}] | "
        f"{_fmt(a['tpr_at_1pct_fpr'])} | {_fmt(a['tpr_at_5pct_fpr'])} |" for a in named)
    return dg.MaterializeResult(metadata=figures | {
        "split": split, "auroc": dg.MetadataValue.md(table),
        "roc": dg.MetadataValue.md(plots.markdown_image(png, "ROC curves"))})


def _by_score(rows: list[tuple]) -> dict[str, tuple[list, list]]:
    """score -> (member values, non-member values), for the ROC plot."""
    out: dict[str, tuple[list, list]] = {}
    for _, _, _, member, _, _, score, value in rows:
        if value is not None:
            out.setdefault(score, ([], []))[0 if member else 1].append(value)
    return out


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"
