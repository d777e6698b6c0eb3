"""The Dagster code location: assets, checks, jobs and resources (loaded by workspace.yaml and `dg`)."""


import dagster as dg

from cp_assets.defs.clusters.annotations import annotations, cluster_report
from cp_assets.defs.clusters.cluster_names import cluster_names
from cp_assets.defs.clusters.cluster_tree import (
                 check_cluster_tree_covers_every_chunk,
                 cluster_tree,
)
from cp_assets.defs.core.automation import (
                 automated,
                 report_automation_sensor,
                 report_conditions,
)
from cp_assets.defs.core.executors import cpu_executor, gpu_executor
from cp_assets.defs.corpus.chunks import chunks
from cp_assets.defs.corpus.embeddings import all_embedding_checks, embeddings
from cp_assets.defs.corpus.ngram_index import (
                 check_ngram_index_matches_corpus,
                 ngram_index,
)
from cp_assets.defs.corpus.nightly_shard_backfill import (
                 nightly_corpus_job,
                 nightly_shard_backfill,
)
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.defs.evals.models_registry_sensor import models_registry_sensor
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.defs.memorization.extraction import extraction
from cp_assets.defs.memorization.membership import membership
from cp_assets.defs.memorization.memorization_report import memorization_report
from cp_assets.defs.memorization.tiny_models import tiny_models
from cp_assets.defs.memorization.tiny_sft_models import tiny_sft_models
from cp_assets.defs.memorization.verbatim_recall import verbatim_recall
from cp_assets.defs.reports.contamination import contamination
from cp_assets.defs.reports.difficulty_report import difficulty_report
from cp_assets.defs.reports.eval_proximity import (
                 check_eval_proximity_rows_consistent,
                 eval_proximity,
)
from cp_assets.defs.reports.rollout_proximity import (
                 check_rollout_proximity_rows_consistent,
                 rollout_proximity,
)
from cp_assets.defs.reports.rollout_traces import rollout_traces
from cp_assets.defs.reports.sql_models import sql_model_assets
from cp_assets.resources import deployment_resources

corpus_assets = [raw_corpus, chunks, embeddings, ngram_index]
corpus_checks = all_embedding_checks + [check_ngram_index_matches_corpus]
eval_assets = [eval_samples, rollouts]
report_assets = [eval_proximity, contamination, rollout_proximity, rollout_traces, difficulty_report,
                 *sql_model_assets]
report_checks = [check_eval_proximity_rows_consistent, check_rollout_proximity_rows_consistent]
cluster_assets = [cluster_tree, cluster_names, cluster_report, annotations]
cluster_checks = [check_cluster_tree_covers_every_chunk]
memorization_assets = [tiny_models, tiny_sft_models, verbatim_recall, extraction, membership, memorization_report]

# CPU work (reading, chunking) fans out over processes; GPU work (embedding, generation, training) runs on its own
# jobs, in the `gpu` pool (limit it with `concurrency: pools:` in dagster.yaml): in one process locally, one GPU
# pod/worker per step on a cluster (CPROX_EXECUTOR, defs/core/executors.py), its steps tagged for GPU nodes.
gpu_steps = gpu_executor()
corpus_job = dg.define_asset_job(
    "corpus_job", selection=dg.AssetSelection.assets(raw_corpus, chunks, ngram_index),
    description="Read, chunk and n-gram-index one corpus split (CPU).",
)
gpu_embed_job = dg.define_asset_job(
    "gpu_embed_job", selection=dg.AssetSelection.assets(embeddings),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="Embed one corpus split into pgvector (GPU pool).",
)
all_assets_job = dg.define_asset_job(
    "all_assets_job", selection=dg.AssetSelection.assets(*corpus_assets),
    description="Everything for one split: raw_corpus -> chunks -> embeddings, ngram_index (+ checks).",
)

eval_samples_job = dg.define_asset_job(
    "eval_samples_job", selection=dg.AssetSelection.assets(eval_samples),
    description="Load one eval set's samples into the results DuckDB.",
)
rollouts_job = dg.define_asset_job(
    "rollouts_job", selection=dg.AssetSelection.assets(rollouts),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="Generate and grade rollouts for one eval set x model (GPU pool for local and vLLM models).",
)

# Reports: eval set x split, model x split, then the unpartitioned analyses over everything.
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
clusters_job = dg.define_asset_job(
    "clusters_job", selection=dg.AssetSelection.assets(cluster_tree, cluster_names, cluster_report),
    description="Cluster tree of one split (or `all`), its names, and the eval questions per cluster.",
)
annotations_job = dg.define_asset_job(
    "annotations_job", selection=dg.AssetSelection.assets(annotations),
    description="One model's rollouts placed in one split's cluster tree, sentence by sentence.",
)

# The memorization lab: training (GPU pool, one process), then the per-model tests (GPU pool), then the comparisons.
training_job = dg.define_asset_job(
    "training_job", selection=dg.AssetSelection.assets(tiny_models, tiny_sft_models),
    executor_def=gpu_steps, tags={"cprox/resource": "gpu"},
    description="Train one optimizer x seed run: the base model, then its SFT model (GPU pool).",
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

# Reports follow their inputs (declarative automation, evaluated by the `report_automation` sensor); the corpus chain
# of streaming splits is re-read nightly when shards change; the models sensor keeps model partitions = models.yaml.
report_automation = report_conditions(
    rollouts, [a.key.to_user_string() for a in (difficulty_report, *sql_model_assets, memorization_report)])

defs = dg.Definitions(
    assets=automated(corpus_assets + eval_assets + report_assets + cluster_assets + memorization_assets,
                     report_automation),
    asset_checks=corpus_checks + report_checks + cluster_checks,
    jobs=[corpus_job, gpu_embed_job, all_assets_job, eval_samples_job, rollouts_job, proximity_job,
          rollout_reports_job, analysis_job, clusters_job, annotations_job, training_job, memorization_job,
          extraction_job, memorization_report_job, nightly_corpus_job],
    schedules=[nightly_shard_backfill],
    sensors=[models_registry_sensor, report_automation_sensor(report_automation)],
    resources=deployment_resources(),
    executor=cpu_executor(),
)
