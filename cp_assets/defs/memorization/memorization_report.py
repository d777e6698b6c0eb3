"""`memorization_report`: Muon vs AdamW (at matched validation loss) and base vs SFT, every metric with a bootstrap
interval over seeds and items; table `memorization_comparisons`, plots in the metadata. Reads whatever the
memorization assets have written; missing inputs are noted, not fatal."""

import dagster as dg

from cp_assets.defs.core.metadata import result
from cp_assets.defs.memorization.extraction import extraction
from cp_assets.defs.memorization.membership import membership
from cp_assets.defs.memorization.tiny_models import tiny_models
from cp_assets.defs.memorization.tiny_sft_models import tiny_sft_models
from cp_assets.defs.memorization.verbatim_recall import verbatim_recall
from cp_assets.defs.reports.rollout_proximity import rollout_proximity
from cp_assets.lib.memorization.materialize import materialize_memorization_report
from cp_assets.resources.results import ResultsStore


@dg.asset(
    deps=[tiny_models, tiny_sft_models, verbatim_recall, extraction, membership, rollout_proximity],
    group_name="memorization",
    kinds={"duckdb", "python"},
    owners=["team:memorization"],
    description="Muon vs AdamW (recall exact rate and similarity, extraction rate, membership AUROC; flagged "
                "whether final validation losses match within 5%) and base vs SFT (distance of outputs to each split, "
                "recall, extraction, membership), each a difference with a 95% two-level bootstrap interval over "
                "seeds and items. Table `memorization_comparisons`.",
)
def memorization_report(context: dg.AssetExecutionContext, results: ResultsStore) -> dg.MaterializeResult:
    return result(materialize_memorization_report(results.db(), log=context.log.info))
