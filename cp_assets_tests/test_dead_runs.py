"""A run killed with `kill -9` while it holds the `gpu` pool slot: without a daemon nothing frees the slot, and the next
in-process run of a `gpu` step would wait forever. `cli_common.instance()` reaps such runs (process gone) first."""

import os
import signal
import subprocess
import sys
import textwrap

import dagster as dg

from cp_assets.cli.common import reap_dead_runs

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


def test_killed_run_is_reaped_and_its_pool_slot_freed(tmp_path):
    (tmp_path / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n    granularity: op\n"
                                           "telemetry:\n  enabled: false\n")
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"DAGSTER_HOME": str(tmp_path)})
    assert proc.stdout.readline().strip() == "started"
    inst = dg.DagsterInstance.from_config(str(tmp_path))
    assert [s.run_id for s in inst.event_log_storage.get_concurrency_info("gpu").claimed_slots]
    assert reap_dead_runs(inst) == []  # alive: left alone
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    [run_id] = reap_dead_runs(inst)
    assert inst.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert inst.event_log_storage.get_concurrency_info("gpu").claimed_slots == []
    assert dg.materialize([quick_gpu_step], instance=inst).success  # would wait forever for the slot before
    assert reap_dead_runs(inst) == []
