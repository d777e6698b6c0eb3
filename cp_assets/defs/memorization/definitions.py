"""The memorization lab's definitions: tiny models trained here (base and SFT, per optimizer x seed), verbatim
recall, extraction and membership per model, and the comparisons report; the training and test jobs."""

import dagster as dg

from cp_assets.defs.core.automation import ON_NEW_INPUTS, automated
from cp_assets.defs.core.executors import gpu_executor
from cp_assets.defs.memorization.canary_memorization import canary_memorization
from cp_assets.defs.memorization.extraction import extraction
from cp_assets.defs.memorization.lira_references import lira_references
from cp_assets.defs.memorization.lr_sweep import lr_sweep
from cp_assets.defs.memorization.membership import membership
from cp_assets.defs.memorization.memorization_report import memorization_report
from cp_assets.defs.memorization.reference_model import reference_model
from cp_assets.defs.memorization.tiny_models import tiny_models
from cp_assets.defs.memorization.tiny_sft_models import tiny_sft_models
from cp_assets.defs.memorization.verbatim_recall import verbatim_recall

conditions = {"memorization_report": ON_NEW_INPUTS}
gpu_steps = gpu_executor()

training_job = dg.define_asset_job(
    "training_job", selection=dg.AssetSelection.assets(tiny_models, tiny_sft_models, canary_memorization),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="Train one optimizer x seed run: the base model, then its SFT model, and score its planted items "
                "(GPU pool).",
)
reference_job = dg.define_asset_job(
    "reference_job", selection=dg.AssetSelection.assets(reference_model, lira_references, lr_sweep),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="Train the models that judge the runs: the reference model (the base members, nothing planted), the "
                "LiRA references (halves of the membership pool) and the learning-rate sweep (GPU pool).",
)
memorization_job = dg.define_asset_job(
    "memorization_job", selection=dg.AssetSelection.assets(verbatim_recall, membership),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="Verbatim recall and membership inference for one model (GPU pool).",
)
extraction_job = dg.define_asset_job(
    "extraction_job", selection=dg.AssetSelection.assets(extraction),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="k-extractability of one model on one split (GPU pool).",
)
memorization_report_job = dg.define_asset_job(
    "memorization_report_job", selection=dg.AssetSelection.assets(memorization_report),
    description="Muon vs AdamW and base vs SFT comparisons over everything the memorization assets wrote.",
)

defs = dg.Definitions(
    assets=automated([tiny_models, tiny_sft_models, reference_model, lira_references, lr_sweep, canary_memorization,
                      verbatim_recall, extraction, membership, memorization_report], conditions),
    jobs=[training_job, reference_job, memorization_job, extraction_job, memorization_report_job],
)
