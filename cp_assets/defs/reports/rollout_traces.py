"""`rollout_traces`: the maximal verbatim spans of every rollout of one model in one split (OLMoTrace style), with
exact counts, documents and snippets; table `rollout_spans`."""

import time

import dagster as dg

from cp_assets.defs.core.partitions import model_split_partitions, rollouts_of_model
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.ngram_index import ngram_index
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.lib.core import plots, settings
from cp_assets.lib.corpus.ngram_index import open_index
from cp_assets.lib.reports import report_tables
from cp_assets.lib.reports.trace import SPAN_COLUMNS, rollout_span_rows
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class RolloutTracesConfig(dg.Config):
    min_tokens: int = 12  # shortest span reported (>= the index's n)
    max_docs: int = 3  # locations (with snippets) stored per span


@dg.asset(
    partitions_def=model_split_partitions,
    deps=[dg.AssetDep(rollouts, partition_mapping=rollouts_of_model), ngram_index],
    group_name="reports",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    retry_policy=PG_RETRY,
    description="Verbatim spans of >= `min_tokens` tokens that each rollout of the model shares with the split: "
                "maximal spans with exact occurrence counts, document ids, offsets and snippets (table "
                "`rollout_spans`).",
)
def rollout_traces(context: dg.AssetExecutionContext, config: RolloutTracesConfig, pg: PgVectorStore,
                   results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    model_id, split = keys["model"], keys["split"]
    store, db, t0 = pg.store(), results.db(), time.perf_counter()
    done = db.rollouts(model_id=model_id)
    rows = rollout_span_rows(split, done, open_index(split), config.min_tokens, config.max_docs,
                             doc_text=lambda ids: store.document_texts(split, ids))
    with db.connect() as con:
        report_tables.replace_rows(con, "rollout_spans", {"model_id": model_id, "split": split}, SPAN_COLUMNS, rows)
    secs = time.perf_counter() - t0
    col = {c: i for i, c in enumerate(SPAN_COLUMNS)}
    traced = {(r[col["sample_id"]], r[col["params_hash"]]) for r in rows}
    context.log.info(f"{model_id} x {split}: {len(rows)} spans in {len(traced)}/{len(done)} rollouts, {secs:.1f}s")
    longest = sorted(rows, key=lambda r: -r[col["n_tokens"]])[:10]
    table = "| sample | tokens | count | docs | span |\n|---|---|---|---|---|\n" + "".join(
        f"| {r[col['sample_id']]} | {r[col['n_tokens']]} | {r[col['count']]} | {r[col['n_docs']]} | "
        f"{r[col['text']][:80].replace('|', '/').replace(chr(10), ' ')} |\n" for r in longest)
    meta = {"rollouts": len(done), "rollouts_with_spans": len(traced), "spans": len(rows),
            "share_with_spans": round(len(traced) / len(done), 4) if done else None,
            "seconds": round(secs, 2), "rollouts_per_s": round(len(done) / secs, 1) if secs else None,
            "longest_spans": dg.MetadataValue.md(table)}
    if rows:
        png = plots.histogram([r[col["n_tokens"]] for r in rows],
                              settings.home() / "plots" / f"rollout_spans_{model_id}_{split}.png",
                              f"{model_id} in {split}: verbatim span lengths", "tokens")
        meta["span_lengths"] = dg.MetadataValue.md(plots.markdown_image(png, "span lengths"))
    return dg.MaterializeResult(metadata={k: v for k, v in meta.items() if v is not None})
