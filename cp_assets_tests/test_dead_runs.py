"""A run killed with `kill -9` while it holds the `gpu` pool slot: without a daemon nothing frees the slot, and the next
in-process run of a `gpu` step would wait forever. `cli.common.instance()` reaps such runs (process gone) first, and
`cli.common.materialize` says who holds the slot while one of its steps waits (and reaps a holder that dies then)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import uuid

import dagster as dg
import psutil
from dagster._core.storage.dagster_run import DagsterRun

from cp_assets.cli.common import materialize, reap_dead_runs
from cp_assets.cli.pools import (HOST_TAG, INVOCATION_TAG, LIFECYCLE_EVENTS, PID_TAG, PoolWatcher, alive, holders,
                                 run_pids, waiting_steps)

SCRIPT = textwrap.dedent("""
    import socket, sys, time
    import dagster as dg

    @dg.asset(pool="gpu")
    def holds_gpu():
        print("started", flush=True)
        time.sleep(120)

    inst = dg.DagsterInstance.from_config(sys.argv[1])
    dg.materialize([holds_gpu], instance=inst, tags={"cprox/host": socket.gethostname()})
""")


@dg.asset(pool="gpu")
def quick_gpu_step():
    return 1


def gpu_instance(home) -> dg.DagsterInstance:
    """A persistent instance whose `gpu` pool has one slot (as dagster.yaml configures it). Its steps' stdout and
    stderr are not captured to files: these tests run `materialize` in a thread while pytest's capsys reads the
    process's streams, and the `tail -F` mirrors of Dagster's local compute-log capture then stalled the step's
    teardown past 60 s (3 times in full `make test` runs, 2026-12-03 and 04; never in the CLI, which materializes
    in its main thread). The tests are about pool slots."""
    (home / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n    granularity: op\n"
                                       "telemetry:\n  enabled: false\n"
                                       "compute_logs:\n  module: dagster._core.storage.noop_compute_log_manager\n"
                                       "  class: NoOpComputeLogManager\n")
    return dg.DagsterInstance.from_config(str(home))


def start_holder(home) -> subprocess.Popen:
    """A real run in another process, holding the `gpu` slot for two minutes."""
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(home)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"DAGSTER_HOME": str(home)})
    assert proc.stdout.readline().strip() == "started"
    return proc


def test_killed_run_is_reaped_and_its_pool_slot_freed(tmp_path):
    inst = gpu_instance(tmp_path)
    proc = start_holder(tmp_path)
    assert [s.run_id for s in inst.event_log_storage.get_concurrency_info("gpu").claimed_slots]
    assert reap_dead_runs(inst) == []  # alive: left alone
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    [run_id] = reap_dead_runs(inst)
    assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert inst.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    assert dg.materialize([quick_gpu_step], instance=inst).success  # would wait forever for the slot before
    assert reap_dead_runs(inst) == []


def fake_gpu_claim(inst: dg.DagsterInstance, pid: int) -> str:
    """Test double of another cprox run holding the `gpu` slot: a STARTED run record (tagged with a live pid and this
    host, no events) and a claimed slot, without any process behind them. Its run id."""
    run_id = f"fake-holder-{uuid.uuid4().hex[:8]}"
    inst.add_run(DagsterRun(job_name="fake_holder", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                            tags={HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}))
    inst.event_log_storage.initialize_concurrency_limit_to_default("gpu")
    assert inst.event_log_storage.claim_concurrency_slot("gpu", run_id, "fake_step").is_claimed
    return run_id


def materialize_in_thread(inst) -> tuple[threading.Thread, dict]:
    out = {}
    thread = threading.Thread(target=lambda: out.update(res=materialize(
        inst, ["quick_gpu_step"], definitions=dg.Definitions(assets=[quick_gpu_step]), wait_message_every_s=0.5)),
        daemon=True)  # a failed test leaves no thread waiting on a slot
    thread.start()
    return thread, out


def join(thread: threading.Thread, timeout: float = 60) -> None:
    """Join the materialize thread; if it is still running, fail with every thread's stack (where it waits)."""
    thread.join(timeout=timeout)
    if thread.is_alive():
        frames = sys._current_frames()
        stacks = "\n".join(f"--- {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
                            for t in threading.enumerate() if t.ident in frames)
        raise AssertionError(f"materialize still running {timeout} s after the slot was freed:\n{stacks}")


def wait_for(capsys, text: str, timeout: float = 60) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen and time.monotonic() < deadline:
        time.sleep(0.2)
        seen += capsys.readouterr().err
    assert text in seen, seen[-2000:]
    return seen


def test_a_wait_for_the_gpu_slot_names_the_run_that_holds_it(tmp_path, capsys):
    inst = gpu_instance(tmp_path)
    holder = fake_gpu_claim(inst, os.getpid())
    assert [h.describe() for h in holders(inst, "gpu")] == \
        [f"run {holder} (step fake_step, STARTED, pid {os.getpid()} on {socket.gethostname()})"]
    thread, out = materialize_in_thread(inst)
    seen = wait_for(capsys, f"held by run {holder} (step fake_step, STARTED, pid {os.getpid()}")
    assert "step quick_gpu_step of run " in seen and "waits for a `gpu` pool slot" in seen
    assert thread.is_alive(), "blocked while the slot is held"
    inst.event_log_storage.free_concurrency_slots_for_run(holder)
    join(thread)
    assert out["res"].ok
    assert inst.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED  # a live holder is never reaped


def test_a_holder_killed_during_the_wait_is_reaped_and_the_wait_ends(tmp_path, capsys):
    inst = gpu_instance(tmp_path)
    proc = start_holder(tmp_path)
    thread, out = materialize_in_thread(inst)
    wait_for(capsys, f"STARTED, pid {proc.pid} on {socket.gethostname()})")  # pid from the holder's event log
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seen = wait_for(capsys, "its process is gone")
    join(thread)
    assert out["res"].ok
    [dead] = [r for r in inst.get_runs() if r.status == dg.DagsterRunStatus.FAILURE]
    assert f"marked run {dead.run_id} failed" in seen


def kill_leaving_a_zombie(proc: subprocess.Popen) -> None:
    """SIGKILL `proc` without wait(): it stays a zombie of this process until the caller waits for it."""
    proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_zombie_or_a_reused_pid_counts_as_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert alive(child.pid)
    kill_leaving_a_zombie(child)
    assert not alive(child.pid), "killed and not yet waited for: a zombie, no longer running"
    child.wait(timeout=10)
    assert not alive(child.pid)
    born = psutil.Process().create_time()
    assert alive(os.getpid(), seen_at=born + 5) and not alive(os.getpid(), seen_at=born - 60), \
        "a process born after the event that named its pid is another process"


def test_a_killed_holder_not_yet_reaped_by_its_parent_is_reaped(tmp_path):
    """The CI failure of 2026-12-05: a `kill -9`ed fan-out left processes that were not yet reaped when the rerun
    looked, so the rerun took them for alive and waited on their `gpu` slot."""
    inst = gpu_instance(tmp_path)
    proc = start_holder(tmp_path)
    kill_leaving_a_zombie(proc)
    [run_id] = reap_dead_runs(inst)
    assert inst.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    proc.wait(timeout=10)


def test_the_watcher_of_a_fan_out_looks_at_each_of_its_runs(tmp_path):
    """`cprox materialize --workers N` tags every shard run with one invocation; while any of them waits for the
    `gpu` slot, the watcher names the holder and reaps it once its process is gone."""
    inst = gpu_instance(tmp_path)
    proc = start_holder(tmp_path)
    invocation, waiting = uuid.uuid4().hex, []
    for i in range(2):
        run_id = f"shard-run-{i}-{invocation[:6]}"
        inst.add_run(DagsterRun(job_name="all_assets_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                tags={INVOCATION_TAG: invocation, HOST_TAG: socket.gethostname()}))
        assert not inst.event_log_storage.claim_concurrency_slot("gpu", run_id, "embeddings").is_claimed
        waiting.append(run_id)
    logged: list[str] = []
    watcher = PoolWatcher(inst, invocation, ["gpu"], log=logged.append)
    assert sorted(watcher.run_ids()) == waiting
    msgs = watcher.check()
    assert sorted(m.split(" waits")[0] for m in msgs) == [f"step embeddings of run {r}" for r in waiting]
    assert all(f"STARTED, pid {proc.pid}" in m for m in msgs)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    msgs = watcher.check()
    assert sum("its process is gone" in m for m in msgs) == 1, msgs
    assert logged[-len(msgs):] == msgs
    # the freed slot goes to a waiting run's step (assigned now, claimed when that step asks again)
    claimed = [(s.run_id, s.step_key) for s in inst.event_log_storage.get_concurrency_info("gpu").claimed_slots]
    assert claimed == []
    assert watcher.check() == [], "a free slot is no news: the wait ends at the executor's next poll"
    assert any(inst.event_log_storage.claim_concurrency_slot("gpu", r, "embeddings").is_claimed for r in waiting)


def test_a_fan_out_run_waiting_behind_its_sibling_is_not_reported(tmp_path):
    """Two shard runs of one `--workers 2` invocation: one embeds (holds the slot), the other waits for it. That is
    the plan, not news: no message every 15 s for the whole fan-out."""
    inst = gpu_instance(tmp_path)
    invocation = uuid.uuid4().hex
    runs = [f"shard-run-{i}-{invocation[:6]}" for i in range(2)]
    for run_id in runs:
        inst.add_run(DagsterRun(job_name="all_assets_job", run_id=run_id, status=dg.DagsterRunStatus.STARTED,
                                tags={INVOCATION_TAG: invocation, HOST_TAG: socket.gethostname()}))
    inst.event_log_storage.initialize_concurrency_limit_to_default("gpu")
    assert inst.event_log_storage.claim_concurrency_slot("gpu", runs[0], "embeddings").is_claimed
    assert not inst.event_log_storage.claim_concurrency_slot("gpu", runs[1], "embeddings").is_claimed
    watcher = PoolWatcher(inst, invocation, ["gpu"], log=lambda m: None)
    assert waiting_steps(inst, "gpu", runs[1]) == ["embeddings"]
    assert watcher.check() == []  # (a holder outside the invocation is reported: the test above)


@dg.asset
def step_a() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"pid": os.getpid()})


@dg.asset
def step_b() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"pid": os.getpid()})


def two_step_job() -> dg.JobDefinition:
    """Two assets in a multiprocess job: the run worker plus one subprocess per step (reconstructable, module level)."""
    defs = dg.Definitions(assets=[step_a, step_b],
                          jobs=[dg.define_asset_job("two_steps", executor_def=dg.multiprocess_executor)])
    return defs.resolve_job_def("two_steps")


def test_run_pids_names_the_run_worker_and_every_step_process_from_lifecycle_events_only(tmp_path):
    """`run_pids` reads only lifecycle events (not a run's whole log): it must still name every process that wrote
    any event of a multiprocess run, the run worker and each step's subprocess."""
    inst = gpu_instance(tmp_path)
    with dg.execute_job(dg.reconstructable(two_step_job), instance=inst,
                        tags={HOST_TAG: socket.gethostname()}) as result:
        assert result.success
        step_pids = {m.metadata["pid"].value for m in result.asset_materializations_for_node("step_a")
                     + result.asset_materializations_for_node("step_b")}
    every = {r.dagster_event.pid for r in inst.all_logs(result.run_id) if r.dagster_event and r.dagster_event.pid}
    pids = run_pids(inst, result.run_id)
    assert set(pids) == every
    assert len(step_pids) == 2 and step_pids <= set(pids) and len(pids) == 3  # + the run worker
    read = {r.dagster_event.event_type_value for r in inst.all_logs(result.run_id, of_type=LIFECYCLE_EVENTS)}
    assert not read & {"ASSET_MATERIALIZATION", "STEP_OUTPUT", "HANDLED_OUTPUT"}, "only lifecycle events are read"
