"""`ngram_index`: the exact token n-gram index of one split (DuckDB, `CPROX_HOME/ngrams/<split>.duckdb`), updated
incrementally from the split's documents; the basis of `contamination`, `rollout_traces` and `cprox trace`."""

import dagster as dg

from cp_assets.defs.core.partitions import split_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.corpus.ngram_index import DEFAULT_N, open_index
from cp_assets.resources.pgvector_store import PgVectorStore


class NgramIndexConfig(dg.Config):
    n: int = DEFAULT_N  # window length: the shortest traceable span and the lower bound of contamination n-grams
    batch_tokens: int = 2_000_000  # tokens per committed batch
    rebuild: bool = False  # drop the index file and build it from scratch


@dg.asset(
    partitions_def=split_partitions,
    deps=[raw_corpus],
    group_name="corpus",
    kinds={"duckdb", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Exact token n-gram postings (hash, document, position) of one split in DuckDB; incremental (new or "
                "changed documents are added in committed batches, removed ones deleted) and sorted by hash for "
                "lookups. Answers n-gram contamination and maximal verbatim span tracing with exact counts.",
)
def ngram_index(context: dg.AssetExecutionContext, config: NgramIndexConfig, pg: PgVectorStore) -> dg.MaterializeResult:
    split, store = context.partition_key, pg.store()
    index = open_index(split, n=config.n)
    docs = ((d.doc_id, d.text) for d in store.iter_documents(split))
    stats = index.update(docs, batch_tokens=config.batch_tokens, rebuild=config.rebuild, log=context.log.info)
    summary = index.stats()
    if summary["n_docs"] == 0:
        raise ValueError(f"split {split!r} has no documents: materialize `raw_corpus` for it first")
    context.log.info(f"{split}: +{stats.added} / -{stats.removed} / ={stats.kept} documents, {stats.tokens_added:,} "
                     f"tokens indexed in {stats.seconds:.1f}s ({stats.tokens_per_s:,.0f} tokens/s)")
    return dg.MaterializeResult(data_version=dg.DataVersion(index.version()), metadata={
        "documents": summary["n_docs"], "tokens": summary["n_tokens"], "postings": summary["n_postings"],
        "added": stats.added, "removed": stats.removed, "kept": stats.kept, "tokens_added": stats.tokens_added,
        "seconds": round(stats.seconds, 2), "tokens_per_s": round(stats.tokens_per_s),
        "n": summary["n"], "tokenizer": summary["tokenizer"],
        "file": dg.MetadataValue.path(summary["path"]),
        "file_mb": round(index.path.stat().st_size / 2**20, 1),
    })


@dg.asset_check(asset=ngram_index, partitions_def=split_partitions, blocking=True,
                retry_policy=PG_RETRY,
                description="The index holds exactly the split's documents (no batch lost or left over).")
def check_ngram_index_matches_corpus(context: dg.AssetCheckExecutionContext, pg: PgVectorStore) -> dg.AssetCheckResult:
    split = context.partition_key
    indexed, documents = open_index(split).stats()["n_docs"], pg.store().count("raw_corpus", split)
    return dg.AssetCheckResult(passed=indexed == documents, metadata={"indexed": indexed, "documents": documents})
