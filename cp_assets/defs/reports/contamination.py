"""`contamination`: per eval item and corpus split, n-gram overlap, Llama-2 bucket, GPT-4 substring hits, nearest-
chunk distance and the combined flag (rule in `cp_assets/lib/reports/contamination.py`); table `contamination`."""

import time

import dagster as dg

from cp_assets.defs.core.partitions import eval_split_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.ngram_index import ngram_index
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.lib.core import plots, settings
from cp_assets.lib.corpus.ngram_index import open_index
from cp_assets.lib.reports import report_tables
from cp_assets.lib.reports.contamination import COLUMNS, FlagRule, contamination_rows
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class ContaminationConfig(dg.Config):
    n: int = 13  # n-gram length of `ngram_overlap`
    min_span: int = 10  # matches at least this long count toward `contaminated_share` (Llama 2)
    max_span_docs: int = 10  # matches found in more documents are boilerplate: not counted in `rare_share`
    min_share: float = 0.5  # flag: rare_share at or above
    min_substring_hits: int = 1  # flag: GPT-4 substrings found at or above
    max_nn_cosine: float = 0.2  # flag: nearest-chunk cosine distance at or below


@dg.asset(
    partitions_def=eval_split_partitions,
    deps=[eval_samples, ngram_index, dg.AssetKey("eval_proximity")],
    group_name="reports",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    retry_policy=PG_RETRY,
    description="Is each eval item in the split? 13-gram overlap, share of tokens in >= 10-token matches with its "
                "Llama-2 bucket, GPT-4 style 50-character substring hits, nearest-chunk distance, and `flagged` "
                "(n-gram, substring or embedding evidence; see README). Table `contamination`.",
)
def contamination(context: dg.AssetExecutionContext, config: ContaminationConfig, pg: PgVectorStore,
                  encoder: SentenceEncoder, results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    eval_set, split = keys["eval_set"], keys["split"]
    db, store, t0 = results.db(), pg.store(), time.perf_counter()
    items = [(s["sample_id"], s["prompt"]) for s in db.samples(eval_set)]
    if not items:
        raise ValueError(f"eval set {eval_set!r} has no samples: materialize `eval_samples` for it first")
    with db.connect(read_only=True) as con:
        report_tables.ensure_readable(con, "eval_proximity")
        nearest = {sid: (d, p) for sid, d, p in con.execute(
            "SELECT sample_id, min_cosine, percentile FROM eval_proximity WHERE eval_set = ? AND split = ? "
            "AND embed_model = ?", [eval_set, split, encoder.model]).fetchall()}
    if not nearest:
        context.log.warning(f"no eval_proximity rows for {eval_set} x {split}: no embedding evidence")
    rule = FlagRule(config.min_share, config.min_substring_hits, config.max_nn_cosine)
    rows = contamination_rows(eval_set, split, items, open_index(split), (d.text for d in store.iter_documents(split)),
                              nearest, n=config.n, min_span=config.min_span, max_span_docs=config.max_span_docs,
                              rule=rule)
    with db.connect() as con:
        report_tables.replace_rows(con, "contamination", {"eval_set": eval_set, "split": split}, COLUMNS, rows)
    secs = time.perf_counter() - t0
    col = {c: i for i, c in enumerate(COLUMNS)}
    flagged = [r for r in rows if r[col["flagged"]]]
    buckets = {b: sum(r[col["bucket"]] == b for r in rows) for b in ("clean", "not_clean", "dirty")}
    reasons = {k: sum(k in (r[col["flag_reason"]] or "") for r in rows) for k in ("ngram", "substring", "embedding")}
    context.log.info(f"{eval_set} x {split}: {len(flagged)}/{len(rows)} flagged in {secs:.1f}s")
    png = plots.bars(list(buckets) + [f"flag:{k}" for k in reasons], list(buckets.values()) + list(reasons.values()),
                     settings.home() / "plots" / f"contamination_{eval_set}_{split}.png",
                     f"{eval_set} in {split}: Llama-2 buckets and flag evidence", "items")
    top = sorted(rows, key=lambda r: (-r[col["contaminated_share"]], r[col["nn_distance"]] or 9))[:10]
    table = "| sample | share in >=10-token matches | 13-gram overlap | substrings | nn distance | reason |\n" \
            "|---|---|---|---|---|---|\n" + "".join(
                f"| {r[1]} | {r[6]:.2f} | {r[5]:.2f} | {r[9]} | {'' if r[10] is None else f'{r[10]:.3f}'} | "
                f"{r[13] or ''} |\n" for r in top)
    return dg.MaterializeResult(metadata={
        "items": len(rows), "flagged": len(flagged), "flagged_rate": round(len(flagged) / len(rows), 4),
        **{f"bucket_{b}": n for b, n in buckets.items()}, **{f"evidence_{k}": n for k, n in reasons.items()},
        "with_embedding_evidence": len(nearest), "seconds": round(secs, 2),
        "most_contaminated": dg.MetadataValue.md(table),
        "plot": dg.MetadataValue.md(plots.markdown_image(png, "buckets and evidence")),
    })
