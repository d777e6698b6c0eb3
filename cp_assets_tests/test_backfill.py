"""A backfill submitted from the CLI (`cprox backfill`, what the UI's "Materialize all" does) runs through the real
Dagster daemon: one queued run per partition, launched through the code location, each partition materialized."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cp_assets.lib.evals.eval_registry import load_evals

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def daemon_home(tmp_path, monkeypatch):
    """A fresh persistent instance (the project's dagster.yaml: queued runs, pools) with a running dagster-daemon."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml's storage reads it
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))):
        pass  # storage created once here: the daemon and the CLI starting together would race to create it
    # its own CPROX_HOME: the runs' eval samples go to a private results DuckDB, not the session's
    env = dict(os.environ, DAGSTER_HOME=str(home), OMP_NUM_THREADS="1", CPROX_HOME=str(tmp_path / "cprox_home"))
    log = open(tmp_path / "daemon.log", "w")
    proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield home, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_unknown_partition_or_asset_is_refused_before_anything_is_submitted():
    from cp_assets.cli.backfill import submit

    with dg.instance_for_test() as inst:
        with pytest.raises(LookupError, match=r"\['nope'\] are not partitions of \['eval_samples'\]"):
            submit(inst, ["eval_samples"], ["gsm8k", "nope"])
        with pytest.raises(LookupError, match=r"unknown assets \['no_such_asset'\]"):
            submit(inst, ["no_such_asset"], None)
        assert inst.get_backfills() == []
        backfill_id = submit(inst, ["eval_samples"], None)
        [backfill] = inst.get_backfills()
        assert backfill.backfill_id == backfill_id and backfill.status.value == "REQUESTED"
        target = backfill.asset_backfill_data.target_subset
        assert target.num_partitions_and_non_partitioned_assets == len(load_evals().names())


@pytest.mark.slow
def test_cli_backfill_runs_through_the_daemon(daemon_home):
    home, env = daemon_home
    partitions = ["gsm8k", "recall"]
    out = subprocess.run([str(BIN / "cprox"), "backfill", "eval_samples", "--partitions", ",".join(partitions),
                          "--wait", "--timeout", "300", "--quiet"], env=env, capture_output=True, text=True,
                         timeout=360)
    assert out.returncode == 0, (out.stdout, out.stderr[-3000:], (home.parent / "daemon.log").read_text()[-3000:])
    backfill_id = out.stdout.split()[1]
    assert f"backfill {backfill_id}: COMPLETED_SUCCESS" in out.stdout

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as inst:
        runs = inst.get_runs(dg.RunsFilter.for_backfill(backfill_id))
        assert sorted(r.tags["dagster/partition"] for r in runs) == partitions
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        done = inst.get_materialized_partitions(dg.AssetKey("eval_samples"))
        assert set(partitions) <= done
