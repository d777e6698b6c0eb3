"""`lira_references`: two tiny GPTs trained on disjoint halves of the membership test's passages (in context, from the
member documents and the held-out ones), registered as `tiny-lira-a` and `tiny-lira-b`: every membership passage is
IN for one and OUT for the other, which gives `membership` its LiRA and reference-model scores (cp_assets/lib/memorization/references.py)."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.memorization.training_step import LAB_GPU_ASSET, base_split_dep
from cp_assets.lib.memorization.references import materialize_lira_references
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


@dg.asset(
    deps=base_split_dep(),
    **LAB_GPU_ASSET,
    description="LiRA reference models: AdamW runs on two seeded halves of the membership passages in context "
                "(members and held-out documents, nothing planted). Checkpoints under CPROX_HOME/tiny/lira, models `tiny-lira-a` / `-b`.",
)
def lira_references(context: dg.AssetExecutionContext, pg: PgVectorStore,
                    results: ResultsStore) -> dg.MaterializeResult:
    # not a `models` partition: the references calibrate the lab's models and are not evaluated themselves
    return result(materialize_lira_references(pg.store(), results.db(), log=context.log.info))
