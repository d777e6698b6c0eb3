"""The one way `cprox` commands materialize assets in-process: `instance()` (dead runs reaped, model partitions
synced) and `materialize()` (a selection for one partition with the code location's resources and tags, watched
while it waits for a pool slot)."""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, field

import dagster as dg

from cp_assets.cli import pools
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
    reaped = []
    for run in inst.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])):
        if run.tags.get(pools.HOST_TAG) not in (None, pools.host()):
            continue  # started on another machine: its daemon's run monitoring decides
        pids = pools.run_pids(inst, run.run_id)
        if not pids or any(pools.alive(p, seen_at) for p, seen_at in pids.items()):
            continue
        inst.report_run_failed(run, f"run {run.run_id}: process {sorted(pids)} is gone")
        inst.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


def add_models(inst: dg.DagsterInstance, models: list[str]) -> None:
    """Model partitions for models that have rollouts but left models.yaml (their reports can still be made)."""
    known = set(inst.get_dynamic_partitions("models"))
    inst.add_dynamic_partitions("models", [m for m in models if m not in known])


@dataclass
class Outcome:
    """One in-process run: success, each asset's materialization metadata, each check's verdict, wall time."""

    ok: bool
    metadata: dict[str, dict] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def of(cls, result, seconds: float) -> "Outcome":
        """From a finished run's result (in-process or `execute_job`)."""
        md = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
              for e in result.get_asset_materialization_events()}
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        return cls(result.success, md, checks, round(seconds, 1))


def materialize(inst: dg.DagsterInstance, selection: list[str], key=None, log_level: str = "WARNING",
                ops: dict | None = None, definitions: dg.Definitions | None = None,
                wait_message_every_s: float = pools.WAIT_MESSAGE_EVERY_S) -> Outcome:
    """Materialize `selection` (and its checks) for partition `key` with the code location's resources (or those of
    `definitions`), tagged with this host and pid so a later `instance()` can reap the run if this process dies.
    While a step waits for a concurrency-pool slot, who holds it is printed every `wait_message_every_s` s."""
    if definitions is None:
        from cp_assets.definitions import defs as definitions

    graph = definitions.resolve_asset_graph()
    used = set().union(*(graph.get(dg.AssetKey.from_user_string(a)).pools or set() for a in selection))
    invocation = uuid.uuid4().hex
    assets = [a for a in definitions.assets or [] if isinstance(a, dg.AssetsDefinition)]
    _check_partition_key(graph, selection, key, inst)
    t0 = time.perf_counter()
    with pools.PoolWatcher(inst, invocation, used, wait_message_every_s):
        res = dg.materialize(assets + list(definitions.asset_checks or []), selection=selection, partition_key=key,
                             instance=inst, resources=definitions.resources or {}, raise_on_error=False,
                             tags={pools.HOST_TAG: pools.host(), pools.PID_TAG: str(os.getpid()),
                                   pools.INVOCATION_TAG: invocation},
                             run_config={"loggers": {"console": {"config": {"log_level": log_level}}},
                                         "ops": ops or {}})
    return Outcome.of(res, time.perf_counter() - t0)


def _check_partition_key(graph, selection: list[str], key, inst: dg.DagsterInstance | None = None) -> None:
    """A key that is no partition of the selection is a LookupError naming the registry files the partitions come
    from (not Dagster's DagsterUnknownPartitionError traceback)."""
    if key is None:
        return
    for name in selection:
        partitions = graph.get(dg.AssetKey.from_user_string(name)).partitions_def
        problem = None
        if isinstance(partitions, dg.StaticPartitionsDefinition) and key not in partitions.get_partition_keys():
            problem = f"Its partitions are {partitions.get_partition_keys()}"
        elif isinstance(partitions, dg.MultiPartitionsDefinition):
            dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else {}
            for dim in partitions.partitions_defs:
                pd = dim.partitions_def
                if isinstance(pd, dg.DynamicPartitionsDefinition):
                    known = inst.get_dynamic_partitions(pd.name) if inst is not None else None
                else:
                    known = pd.get_partition_keys()
                if dims.get(dim.name) is None or (known is not None and dims[dim.name] not in known):
                    problem = (f"Its partitions are {' x '.join(d.name for d in partitions.partitions_defs)}; "
                               f"{dim.name} is one of {known if known is not None else 'a dynamic set'}")
                    break
        if problem:
            raise LookupError(
                f"{name}: no partition {str(key)!r}. {problem}, read from the registries {settings.corpora_file()} "
                f"(splits, and their shard plans: `cprox shards plan`), {settings.evals_file()} (eval sets) and "
                f"{settings.training_file()} (runs); add it there or pick one of those")
