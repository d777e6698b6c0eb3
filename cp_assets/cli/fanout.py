"""Many shards at once: each shard partition a real Dagster run of `all_assets_job`, `workers` runs at a time.

`cprox materialize --workers N` (N > 1) lands here. Each run goes through `dg.execute_job` over a reconstructable
job, so the code location's executor places its steps (CPROX_EXECUTOR, defs/core/executors.py):
- `multiprocess`: every step in its own process, one step at a time per run, so N runs use at most N processes;
- `celery`: every step a Celery task, the embedding step on queue `gpu`; the workers do the work, wherever they run,
  and N only bounds how many runs are in flight (the instance needs shared storage: Postgres, see docs/corpus.md).
The `gpu` pool still holds: however many runs are in flight, no more embedding steps run at once than its limit.
While a run waits for a slot, the parent watches the pool (cli/pools.py): a holder whose process is gone (a killed
earlier invocation whose processes had not yet died when this one started) is reaped then, instead of being waited on.
A deployment does the same from the UI: a backfill of the shard partitions, its runs queued by the daemon.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed

import dagster as dg

from cp_assets.cli import pools
from cp_assets.cli.common import Outcome
from cp_assets.defs.core.executors import executor_kind

SHARD_JOB = "all_assets_job"
PRELOAD = ("cp_assets.definitions", "sentence_transformers")


def shard_job() -> dg.JobDefinition:
    """The reconstructable target: every corpus asset and check of one shard (step processes and Celery workers
    import this module and call it)."""
    from cp_assets.definitions import defs

    return defs.resolve_job_def(SHARD_JOB)


def _run_config(log_level: str) -> dict:
    config: dict = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    if executor_kind() == "multiprocess":
        # step processes fork from a server that imported the code location and sentence-transformers once,
        # instead of each spawning a fresh interpreter (~3 s of imports per step on this machine)
        config["execution"] = {"config": {"max_concurrent": 1, "start_method": {
            "forkserver": {"preload_modules": list(PRELOAD)}}}}
    return config


def run_one(inst: dg.DagsterInstance, key: str, selection: list[str] | None = None,
            log_level: str = "WARNING", invocation: str | None = None) -> Outcome:
    """One shard as one run of the shard job, through the code location's executor; its outcome as `materialize`
    gives it. `invocation` tags the run as one of a fan-out's (the parent's pool watcher finds it by it)."""
    job = shard_job()
    tags = {**job.partitions_def.get_tags_for_partition_key(key), pools.HOST_TAG: pools.host(),
            pools.PID_TAG: str(os.getpid()), **({pools.INVOCATION_TAG: invocation} if invocation else {})}
    keys = [dg.AssetKey.from_user_string(a) for a in selection] if selection else None
    t0 = time.perf_counter()
    with dg.execute_job(dg.reconstructable(shard_job), instance=inst, run_config=_run_config(log_level), tags=tags,
                        asset_selection=keys) as result:
        return Outcome.of(result, time.perf_counter() - t0)


def init_pools(inst: dg.DagsterInstance, names: tuple[str, ...] = ("gpu",)) -> None:
    """Create the pools' concurrency rows once, before runs start: Dagster creates them lazily on the first claim,
    and two runs claiming at once on a fresh Postgres run storage race on the insert (a unique-key violation that
    failed one shard's run)."""
    for name in names:
        try:
            inst.event_log_storage.initialize_concurrency_limit_to_default(name)
        except Exception:  # noqa: BLE001 (already there, or a storage without pools: nothing to do)
            pass


def _exit_with_parent(parent: int) -> None:
    """A worker's watchdog: exit when `materialize` (the parent) is gone. Workers whose parent was killed alone (a
    timeout killing `cprox` but not its process group) were re-parented to init and went on spinning in Dagster's
    executor loop at full CPU (2026-12-05, fresh-clone test_shard_kill, two such orphans after its rerun timed out)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _run_in_child(ref: dg.InstanceRef, key: str, selection: list[str] | None, log_level: str,
                  invocation: str) -> Outcome:
    with dg.DagsterInstance.from_ref(ref) as inst:
        return run_one(inst, key, selection, log_level, invocation)


def run_many(inst: dg.DagsterInstance, keys: list[dg.MultiPartitionKey], workers: int,
             selection: list[str] | None = None, log_level: str = "WARNING",
             on_done: Callable[[dg.MultiPartitionKey, Outcome], None] | None = None) -> dict[str, Outcome]:
    """Every key as its own run, `workers` at a time; outcomes by key (in the order given). `on_done` is called as
    each run ends (progress).

    Each run is orchestrated from its own process: Dagster configures Python logging per run (dictConfig), and two
    runs orchestrated from threads of one process deadlock on the logging locks. While one of them waits for a `gpu`
    slot, the pool is watched from here (pools.PoolWatcher: holders reported, dead ones reaped)."""
    out: dict[str, Outcome] = {}
    ref = inst.get_ref()
    init_pools(inst)
    spawn, invocation = multiprocessing.get_context("spawn"), uuid.uuid4().hex
    with pools.PoolWatcher(inst, invocation, ("gpu",)), \
            ProcessPoolExecutor(max_workers=max(1, workers), mp_context=spawn, initializer=_exit_with_parent,
                                initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(_run_in_child, ref, str(key), selection, log_level, invocation): key for key in keys}
        for future in as_completed(futures):
            key = futures[future]
            out[str(key)] = future.result()
            if on_done:
                on_done(key, out[str(key)])
    return {str(k): out[str(k)] for k in keys}
