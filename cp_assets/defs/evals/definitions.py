"""The evals domain's definitions: eval_samples and model rollouts, their blocking checks, their jobs, and the
models-registry sensor."""

import dagster as dg

from cp_assets.defs.core.executors import gpu_executor
from cp_assets.defs.evals.eval_samples import check_eval_samples_consistent, eval_samples
from cp_assets.defs.evals.models_registry_sensor import models_registry_sensor
from cp_assets.defs.evals.rollouts import check_rollouts_consistent, rollouts

eval_samples_job = dg.define_asset_job(
    "eval_samples_job", selection=dg.AssetSelection.assets(eval_samples),
    description="Load one eval set's samples into the results DuckDB.",
)
rollouts_job = dg.define_asset_job(
    "rollouts_job", selection=dg.AssetSelection.assets(rollouts),
    executor_def=gpu_executor(), tags={"cprox/resource": "gpu"},
    description="Generate and grade rollouts for one eval set x model (GPU pool for local and vLLM models).",
)

defs = dg.Definitions(assets=[eval_samples, rollouts],
                      asset_checks=[check_eval_samples_consistent, check_rollouts_consistent],
                      jobs=[eval_samples_job, rollouts_job],
                      sensors=[models_registry_sensor])
