"""`contamination`: per eval item and corpus split, n-gram overlap, Llama-2 bucket, GPT-4 substring hits, nearest-
chunk distance and the combined flag (rule in `cp_assets/lib/reports/contamination.py`); table `contamination`."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import eval_split_partitions, shards_of_split
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.corpus.ngram_index import ngram_index
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.lib.corpus.exact.ngram_split import open_index
from cp_assets.lib.reports.contamination import FlagRule, contamination_report
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore

_RULE = FlagRule()


class ContaminationConfig(dg.Config):
    n: int = 13  # n-gram length of `ngram_overlap`
    min_span: int = 10  # matches at least this long count toward `contaminated_share` (Llama 2)
    max_span_docs: int = 10  # matches found in more documents are boilerplate: not counted in `rare_share`
    min_share: float = _RULE.min_share  # flag: rare_share at or above (defaults chosen on a dev set: FlagRule)
    min_substring_hits: int = _RULE.min_substring_hits  # flag: GPT-4 substrings found at or above
    max_nn_cosine: float = _RULE.max_nn_cosine  # flag: nearest-chunk cosine distance at or below


@dg.asset(
    partitions_def=eval_split_partitions,
    deps=[eval_samples, dg.AssetDep(ngram_index, partition_mapping=shards_of_split), dg.AssetKey("eval_proximity")],
    group_name="reports",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    retry_policy=PG_RETRY,
    description="Is each eval item in the split? 13-gram overlap, share of tokens in >= 10-token matches with its "
                "Llama-2 bucket, GPT-4 style 50-character substring hits, nearest-chunk distance, and `flagged` "
                "(n-gram, substring or embedding evidence; docs/reports.md). Table `contamination`; the metadata "
                "says which evidence fired for each flagged item (`why_flagged`).",
)
def contamination(context: dg.AssetExecutionContext, config: ContaminationConfig, pg: PgVectorStore,
                  encoder: SentenceEncoder, results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    return result(contamination_report(
        pg.store(), results.db(), open_index(keys["split"]), encoder.model, keys["eval_set"], keys["split"],
        rule=FlagRule(config.min_share, config.min_substring_hits, config.max_nn_cosine), n=config.n,
        min_span=config.min_span, max_span_docs=config.max_span_docs, log=context.log.info,
        warn=context.log.warning))
