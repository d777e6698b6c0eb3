"""The real `cprox materialize`, killed with `kill -9` while it embeds a split (holding the one `gpu` pool slot), then
run again: the rerun reaps the dead run first (instead of waiting forever for its slot), says so, and finishes the
split with exactly one embedding per chunk."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from cp_assets_tests.test_crash_resume import SPLIT, chunk_keys, published

CPROX = Path(sys.executable).parent / "cprox"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A private CPROX_HOME (its own embedded Postgres) and DAGSTER_HOME (the repo's dagster.yaml: one `gpu` slot),
    and a registry with one small split. DAGSTER_HOME is set here too: dagster.yaml reads it for its SQLite path."""
    from cp_assets.lib.corpus import embedded_pg

    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    registry = tmp_path / "corpora.yaml"
    registry.write_text(textwrap.dedent(f"""
        splits:
          {SPLIT}:
            sources:
              - path: gsm8k/train.jsonl.gz
                name: gsm8k
                template: "User: {{question}}\\nAssistant: {{answer}}"
                limit: 40
    """))
    yield dict(os.environ, CPROX_HOME=str(home), DAGSTER_HOME=str(dagster_home), CPROX_CORPORA=str(registry),
               OMP_NUM_THREADS="1")
    embedded_pg.stop(home)


def gpu_holder(inst: dg.DagsterInstance) -> str | None:
    slots = inst.event_log_storage.get_concurrency_info("gpu").claimed_slots
    return slots[0].run_id if slots else None


def kill_group_when(proc: subprocess.Popen, ready, failure: str, timeout_s: float = 240) -> None:
    """SIGKILL the process group of `proc` (started with start_new_session) as soon as `ready()` is true; fail with
    `failure` and its stderr if it ends or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"{failure}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_kill_9_of_cprox_materialize_then_rerun_reaps_and_completes(cli_env):
    from cp_assets.lib.corpus.pgvector_store import PgStore

    cmd = [str(CPROX), "materialize", "--split", SPLIT, "--log-level", "WARNING"]
    # the instance's storage is created here, before the CLI opens it: two processes creating a fresh SQLite
    # storage at once race on its schema version table ("more than one head present")
    inst = dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"])
    proc = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    kill_group_when(proc, lambda: gpu_holder(inst), "embedding never started")  # the step holding the slot embeds
    killed = gpu_holder(inst)
    assert inst.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED  # nothing else knows it died

    t0 = time.monotonic()
    rerun = subprocess.run(cmd + ["--json"], env=cli_env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    reaped = rerun.stderr.find(f"marked run {killed} failed: its process is gone")
    assert 0 <= reaped < rerun.stderr.index(f"{SPLIT}: raw_corpus"), "reaped before anything runs"
    assert seconds < 150, f"the rerun took {seconds:.0f} s"
    assert inst.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE and gpu_holder(inst) is None

    store = PgStore(home=Path(cli_env["CPROX_HOME"]))
    chunks = chunk_keys(store)
    assert len(chunks) >= 40 and published(store) == chunks, "exactly one embedding per chunk, none missing"
    [row] = json.loads(rerun.stdout)
    assert row["ok"] and row["checks"] and all(row["checks"].values())
    assert row["embeddings"]["embedded"] + row["embeddings"]["reused"] == len(chunks)
