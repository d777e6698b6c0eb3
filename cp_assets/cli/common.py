"""What the `cprox` commands that materialize assets in-process share: the Dagster instance and one run."""

import os
import sys

import dagster as dg

from cp_assets.lib.core import settings


def instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance (runs show in the UI), else an ephemeral one; dead runs reaped, model partitions
    synced."""
    from cp_assets.defs.evals.models_registry_sensor import sync_model_partitions

    inst = dg.DagsterInstance.get() if settings.dagster_home_set() else dg.DagsterInstance.ephemeral()
    for run_id in reap_dead_runs(inst):
        print(f"marked run {run_id} failed: its process is gone (killed?); its pool slots are free again",
              file=sys.stderr)
    sync_model_partitions(inst)
    return inst


def reap_dead_runs(inst: dg.DagsterInstance) -> list[str]:
    """Runs still STARTED whose process on this machine no longer exists (a `kill -9`, a crash, a closed terminal)
    are reported failed and their concurrency-pool slots freed; otherwise the next in-process run waits forever for
    the `gpu` slot the dead one holds. (A deployment's daemon does this with `run_monitoring`, see docker/dagster.yaml.)"""
    from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter

    reaped = []
    for run in inst.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])):
        if run.tags.get("cprox/host") not in (None, _host()):
            continue  # started on another machine: its daemon's run monitoring decides
        pids = {r.dagster_event.pid for r in inst.all_logs(run.run_id) if r.dagster_event and r.dagster_event.pid}
        if not pids or any(_alive(p) for p in pids):
            continue
        inst.report_run_failed(run, f"run {run.run_id}: process {sorted(pids)} is gone")
        inst.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def _host() -> str:
    import socket

    return socket.gethostname()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def add_models(inst: dg.DagsterInstance, models: list[str]) -> None:
    """Model partitions for models that have rollouts but left models.yaml (their reports can still be made)."""
    known = set(inst.get_dynamic_partitions("models"))
    inst.add_dynamic_partitions("models", [m for m in models if m not in known])


def materialize(inst: dg.DagsterInstance, selection: list[str], key, log_level: str = "WARNING",
                ops: dict | None = None) -> tuple[bool, dict[str, dict]]:
    """Materialize `selection` (and its checks) for one partition with the code location's resources:
    (success, {asset: metadata})."""
    from cp_assets.definitions import defs

    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    res = dg.materialize(assets + list(defs.asset_checks or []), selection=selection, partition_key=key,
                         instance=inst, resources=defs.resources, raise_on_error=False, tags={"cprox/host": _host()},
                         run_config={"loggers": {"console": {"config": {"log_level": log_level}}}, "ops": ops or {}})
    md = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
          for e in res.get_asset_materialization_events()}
    return res.success, md
