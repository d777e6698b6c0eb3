"""Who holds a Dagster concurrency-pool slot, and a watcher that says so while an in-process run waits for one.

Dagster's in-process executor waits for a `gpu` slot silently (one "blocked" event, then one every 5 minutes) and
polls without sleeping, so a wait behind another run looked like a hang. `PoolWatcher` runs beside `dg.materialize`
and, every `interval` seconds that a step of the watched run is queued for a full pool, prints which runs hold the
slots (run id, step, status, pid and host when known). A holder whose process is gone is reaped there and then
(`reap_dead_runs`), so the wait ends instead of lasting forever. One invocation may be many runs (`cprox materialize
--workers N` tags every shard's run with it): the watcher looks at each of them that has not finished, reading each
pool once per look, and says nothing of a wait behind a sibling run of the same invocation (the fan-out's plan: one
embedding step per `gpu` slot).

"Gone" means no process with that pid, a zombie (killed, not yet reaped by init: a container whose init reaps late
keeps it for a while), or a pid taken by a newer process than the one that wrote the run's events.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

import dagster as dg
import psutil

HOST_TAG, PID_TAG, INVOCATION_TAG = "cprox/host", "cprox/pid", "cprox/invocation"
WAIT_MESSAGE_EVERY_S = 15.0
LIFECYCLE_EVENTS = {dg.DagsterEventType.RUN_STARTING, dg.DagsterEventType.RUN_START, dg.DagsterEventType.STEP_START,
                    dg.DagsterEventType.STEP_WORKER_STARTING, dg.DagsterEventType.STEP_WORKER_STARTED,
                    dg.DagsterEventType.ENGINE_EVENT}


def host() -> str:
    return socket.gethostname()


def alive(pid: int, seen_at: float | None = None) -> bool:
    """Whether `pid` is a live process, and (given `seen_at`, when it wrote an event) the same one: a zombie is dead,
    and so is a process created after `seen_at` (the pid was reused)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        return seen_at is None or proc.create_time() <= seen_at + 1.0  # 1 s: create_time is estimated from boot time
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def run_pids(inst: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """The pids that wrote the run's events (its run worker and step processes), each with the time of its first
    event. Only the lifecycle events are read (a run's start, each step's start, engine events), which name every
    process of a run, not its whole log: materializations, checks and logs may number in the thousands."""
    out: dict[int, float] = {}
    for r in inst.all_logs(run_id, of_type=LIFECYCLE_EVENTS):
        if r.dagster_event and r.dagster_event.pid:
            out.setdefault(r.dagster_event.pid, r.timestamp)
    return out


@dataclass(frozen=True)
class Holder:
    """One claimed slot of a pool: the run and step holding it, the run's status, and where it runs."""

    run_id: str
    step_key: str
    status: str
    pid: int | None
    host: str | None

    def describe(self) -> str:
        where = f"pid {self.pid}" if self.pid else "pid unknown"
        return f"run {self.run_id} (step {self.step_key}, {self.status}, {where}{' on ' + self.host if self.host else ''})"


def holders(inst: dg.DagsterInstance, pool: str) -> list[Holder]:
    """The runs holding `pool`'s slots now; pid/host from the run's cprox tags, else from its event log."""
    out = []
    for slot in inst.event_log_storage.get_concurrency_info(pool).claimed_slots:
        run = inst.get_run_by_id(slot.run_id)
        tags = run.tags if run else {}
        pid = int(tags[PID_TAG]) if tags.get(PID_TAG, "").isdigit() else min(run_pids(inst, slot.run_id), default=None)
        out.append(Holder(slot.run_id, slot.step_key, run.status.value if run else "run not in this instance", pid,
                          tags.get(HOST_TAG)))
    return out


def waiting_steps(inst: dg.DagsterInstance, pool: str, run_id: str) -> list[str]:
    """Steps of `run_id` queued for `pool` and not holding a slot."""
    return _waiting(inst.event_log_storage.get_concurrency_info(pool), {run_id}).get(run_id, [])


def _waiting(info, run_ids: set[str]) -> dict[str, list[str]]:
    """From one look at a pool (`get_concurrency_info`): the steps of each of `run_ids` queued and not holding a slot."""
    claimed = {(s.run_id, s.step_key) for s in info.claimed_slots}
    out: dict[str, list[str]] = {}
    for p in info.pending_steps:
        if p.run_id in run_ids and (p.run_id, p.step_key) not in claimed:
            out.setdefault(p.run_id, []).append(p.step_key)
    return out


class PoolWatcher:
    """A thread, as a context manager around the runs tagged `cprox/invocation=<invocation>` (one in-process run, or
    every shard run of a fan-out): while a step of one of them waits for a slot of `pools`, every `interval` s it
    reaps holders whose process is gone and reports the live ones through `log` (default: stderr)."""

    def __init__(self, inst: dg.DagsterInstance, invocation: str, pools: Iterable[str],
                 interval: float = WAIT_MESSAGE_EVERY_S, log: Callable[[str], None] | None = None):
        self.inst, self.invocation, self.pools, self.interval = inst, invocation, sorted(set(pools)), interval
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cprox-pool-watcher", daemon=True)

    def __enter__(self) -> Self:
        if self.pools and self.inst.event_log_storage.supports_global_concurrency_limits:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a failed look never stops the run it watches
                self.log(f"(could not read the pool slots: {type(exc).__name__}: {exc})")

    def run_ids(self) -> set[str]:
        """The invocation's runs that have not finished."""
        runs = self.inst.get_runs(dg.RunsFilter(tags={INVOCATION_TAG: self.invocation},
                                                statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                                                          dg.DagsterRunStatus.STARTED]))
        return {r.run_id for r in runs}

    def check(self) -> list[str]:
        """One look: the messages logged (none when no run waits for a slot, when no slot is held (the wait is over
        at the executor's next poll), or when only runs of this invocation hold the slots: a fan-out's shard run behind its sibling is the plan, and its siblings are this process's
        children, so nothing is reaped then either)."""
        from cp_assets.cli.common import reap_dead_runs

        messages: list[str] = []
        mine, reaped = self.run_ids(), False
        for pool in self.pools:
            info = self.inst.event_log_storage.get_concurrency_info(pool)
            waiting = _waiting(info, mine)
            holding = {slot.run_id for slot in info.claimed_slots}
            if not waiting or not holding or holding <= mine:
                continue  # nothing waits; a slot is free (the wait ends on the executor's next poll); or the plan
            if not reaped:
                reaped = True
                messages += [f"marked run {dead} failed: its process is gone (killed?); its pool slots are free again"
                             for dead in reap_dead_runs(self.inst)]
            held = holders(self.inst, pool)
            for run_id, steps in sorted(waiting.items()):
                who = "; ".join(h.describe() for h in held if h.run_id != run_id)
                if who:  # (none: the slots came free between the two reads)
                    messages.append(f"step {', '.join(steps)} of run {run_id} waits for a `{pool}` pool slot, "
                                    f"held by {who}")
        for msg in messages:
            self.log(msg)
        return messages
