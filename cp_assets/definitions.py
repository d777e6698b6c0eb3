"""The Dagster code location (loaded by workspace.yaml and `dg`): each domain's definitions (assets, checks, jobs,
sensors, schedules; `cp_assets/defs/<domain>/definitions.py`) merged, with the resources bound once and the default
executor.

CPU work (reading, chunking) fans out over processes; GPU work (embedding, generation, training) runs on its own jobs,
in the `gpu` pool (limit it with `concurrency: pools:` in dagster.yaml): in one process locally, one GPU pod/worker per
step on a cluster (CPROX_EXECUTOR, defs/core/executors.py), its steps tagged for GPU nodes.
"""

import dagster as dg

from cp_assets.defs.clusters import definitions as clusters
from cp_assets.defs.core.automation import report_automation_sensor
from cp_assets.defs.core.executors import cpu_executor
from cp_assets.defs.corpus import definitions as corpus
from cp_assets.defs.evals import definitions as evals
from cp_assets.defs.memorization import definitions as memorization
from cp_assets.defs.reports import definitions as reports
from cp_assets.resources import deployment_resources

DOMAINS = [corpus, evals, reports, clusters, memorization]

# Reports follow their inputs (declarative automation, evaluated by the `report_automation` sensor).
report_automation = reports.conditions | memorization.conditions

defs = dg.Definitions.merge(
    *(d.defs for d in DOMAINS),
    dg.Definitions(sensors=[report_automation_sensor(report_automation)], resources=deployment_resources(),
                   executor=cpu_executor()),
)

# Each domain's assets and checks, for in-process `dg.materialize` (the CLI, tests).
corpus_assets, corpus_checks = corpus.assets, list(corpus.defs.asset_checks)
eval_assets = list(evals.defs.assets)
cluster_assets, cluster_checks = list(clusters.defs.assets), list(clusters.defs.asset_checks)
