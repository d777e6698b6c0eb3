"""`extraction`: Carlini et al.'s k-extractability test of one model on one split: windows of P + S tokens sampled
from the split's documents, the first P tokens as the prompt, S tokens greedy-generated; exact-match rate (with a
Wilson interval) and the edit-distance distribution. For models trained here each window is marked member or not."""

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.partitions import model_split_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.defs.memorization.tiny_models import split_documents
from cp_assets.lib.core import plots, settings
from cp_assets.lib.memorization import extraction as ext
from cp_assets.lib.memorization.runs import (
    EXTRACTION_COLUMNS,
    extraction_markdown,
    extraction_rows,
    trained_members,
)
from cp_assets.lib.reports import report_tables
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore

SPLIT_OF = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="split")


class ExtractionConfig(dg.Config):
    prefix_tokens: int = 32
    suffix_tokens: int = 32
    n: int = 200  # windows sampled (seeded)
    seed: int = 0
    members_only: bool = True  # for models trained here on this split: sample only the documents they saw


@dg.asset(
    partitions_def=model_split_partitions,
    deps=[dg.AssetDep(raw_corpus, partition_mapping=SPLIT_OF)],
    group_name="memorization",
    kinds={"pytorch", "duckdb"},
    owners=["team:memorization"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="k-extractability (Carlini et al.): P-token prefixes of windows sampled from the split, S tokens "
                "greedy-generated; exact-match rate with a Wilson interval, edit distances. Table `extraction`.",
)
def extraction(context: dg.AssetExecutionContext, config: ExtractionConfig, llm: LLMResource, pg: PgVectorStore,
               results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    model_id, split, db = keys["model"], keys["split"], results.db()
    docs = split_documents(pg, split)
    info = trained_members(llm.registry().get(model_id))
    members = set(info["members"]) if info and info["split"] == split else None
    if members is not None and config.members_only:
        docs = [d for d in docs if d[0] in members]
    rows, figures = extraction_rows(llm.backend(model_id), split, docs, members, prefix_tokens=config.prefix_tokens,
                                    suffix_tokens=config.suffix_tokens, n=config.n, seed=config.seed,
                                    log=context.log.info)
    with db.connect() as con:
        report_tables.replace_rows(con, "extraction", {"model_id": model_id, "split": split}, EXTRACTION_COLUMNS, rows)
    named = [dict(zip(EXTRACTION_COLUMNS, r)) for r in rows]
    summary = ext.summarize_extraction(named)
    png = ext.distance_histogram(named,
                                 settings.home() / "plots" / f"extraction_{model_id}_{split}.png",
                                 f"{model_id} on {split}: edit distance of {config.suffix_tokens}-token continuations")
    return dg.MaterializeResult(metadata=figures | {
        "members_known": members is not None, "summary": dg.MetadataValue.json(summary),
        "exact_rate": summary.get("exact_rate"),
        "edit_distance_histogram": dg.MetadataValue.md(plots.markdown_image(png, "edit distances")),
        "closest_continuations": dg.MetadataValue.md(extraction_markdown(named, config.suffix_tokens))})

