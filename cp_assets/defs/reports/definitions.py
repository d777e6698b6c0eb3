"""The reports domain's definitions: eval set x split and model x split proximity reports, contamination, traces,
the difficulty report and the dbt_like_sql models; their checks, jobs and automation conditions (they follow their
inputs, see defs/core/automation.py)."""

import dagster as dg

from cp_assets.defs.core.automation import automated, report_conditions
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.defs.reports.contamination import contamination
from cp_assets.defs.reports.difficulty_report import difficulty_report
from cp_assets.defs.reports.eval_proximity import check_eval_proximity_rows_consistent, eval_proximity
from cp_assets.defs.reports.rollout_proximity import check_rollout_proximity_rows_consistent, rollout_proximity
from cp_assets.defs.reports.rollout_traces import rollout_traces
from cp_assets.defs.reports.sql_models import sql_model_assets

conditions = report_conditions(rollouts, [a.key.to_user_string() for a in (difficulty_report, *sql_model_assets)])

proximity_job = dg.define_asset_job(
    "proximity_job", selection=dg.AssetSelection.assets(eval_proximity, contamination),
    description="Eval questions vs one split: nearest chunks, percentiles, contamination evidence.",
)
rollout_reports_job = dg.define_asset_job(
    "rollout_reports_job", selection=dg.AssetSelection.assets(rollout_proximity, rollout_traces),
    description="One model's rollouts vs one split: nearest chunk per answer and sentence, verbatim spans.",
)
analysis_job = dg.define_asset_job(
    "analysis_job", selection=dg.AssetSelection.assets(difficulty_report, *sql_model_assets),
    description="difficulty_report and the dbt_like_sql models over every partition's results.",
)

defs = dg.Definitions(
    assets=automated([eval_proximity, contamination, rollout_proximity, rollout_traces, difficulty_report,
                      *sql_model_assets], conditions),
    asset_checks=[check_eval_proximity_rows_consistent, check_rollout_proximity_rows_consistent],
    jobs=[proximity_job, rollout_reports_job, analysis_job],
)
