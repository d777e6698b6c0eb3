"""`memorization_report`: Muon vs AdamW (at matched validation loss) and base vs SFT, every metric with a bootstrap
interval over seeds and items; table `memorization_comparisons`, plots in the metadata. Reads whatever the
memorization assets have written; missing inputs are noted, not fatal."""

import dagster as dg

from cp_assets.defs.memorization.extraction import extraction
from cp_assets.defs.memorization.membership import membership
from cp_assets.defs.memorization.tiny_models import tiny_models
from cp_assets.defs.memorization.tiny_sft_models import tiny_sft_models
from cp_assets.defs.memorization.verbatim_recall import verbatim_recall
from cp_assets.defs.reports.rollout_proximity import rollout_proximity
from cp_assets.lib.core import plots, settings
from cp_assets.lib.memorization import compare_runs
from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.memorization import report as rep
from cp_assets.lib.reports import report_tables
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
    db = results.db()
    with db.connect() as con:
        opt, opt_meta, opt_comps = rep.optimizer_rows(con, ex.load_experiment().base.split, log=context.log.info)
        sft, sft_meta, sft_comps = rep.sft_rows(con, log=context.log.info)
        report_tables.replace_rows(con, "memorization_comparisons", {}, rep.COLUMNS, opt + sft)
    meta: dict = {"optimizer": dg.MetadataValue.json(opt_meta), "sft": dg.MetadataValue.json(sft_meta),
                  "rows": len(opt) + len(sft)}
    for name, rows, comps, title in (("muon_vs_adamw", opt, opt_comps, "Muon vs AdamW (base models, all seeds)"),
                                     ("sft_vs_base", sft, sft_comps, "base vs SFT")):
        if not rows:
            continue
        meta[f"{name}_table"] = dg.MetadataValue.md(rep.markdown(rows))
        if comps:
            png = compare_runs.comparison_plot(comps, settings.home() / "plots" / f"{name}.png", title)
            meta[f"{name}_plot"] = dg.MetadataValue.md(plots.markdown_image(png, title))
    return dg.MaterializeResult(metadata=meta)

