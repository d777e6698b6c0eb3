"""`lira_references`: two tiny GPTs trained on disjoint halves of the membership pool (the whole member documents and
the held-out ones), registered as `tiny-lira-a` and `tiny-lira-b`: every membership passage is IN for one and OUT for
the other, which gives `membership` its LiRA and reference-model scores (cp_assets/lib/memorization/references.py)."""

import dagster as dg

from cp_assets.defs.core.partitions import runs_from_base_split
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.defs.core.metadata import result
from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET
from cp_assets.lib.memorization.references import materialize_lira_references
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    deps=[dg.AssetDep(raw_corpus, partition_mapping=runs_from_base_split)],
    **LAB_GPU_ASSET,
    description="LiRA reference models: AdamW runs on two seeded halves of the membership pool (members and held-out "
                "documents, nothing planted). Checkpoints under CPROX_HOME/tiny/lira, models `tiny-lira-a` / `-b`.",
)
def lira_references(context: dg.AssetExecutionContext, pg: PgVectorStore,
                    results: ResultsStore) -> dg.MaterializeResult:
    # not a `models` partition: the references calibrate the lab's models and are not evaluated themselves
    return result(materialize_lira_references(pg.store(), results.db(), log=context.log.info))
