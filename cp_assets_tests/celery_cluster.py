"""Dagster instances for runs through an executor: `local_instance` (persistent, SQLite or a given storage) and a real
dagster-celery deployment on this machine, for the distributed-run test: Debian's `redis-server` as the
broker on a free loopback port, a Dagster instance with Postgres run/event storage (a database of the test's embedded
Postgres), and two `dagster-celery` workers, one process each: `cpu` serves queue `dagster`, `gpu` serves queue `gpu`.
The workers are started the way docker/celery_worker.yaml says a deployment starts them. No side effects on
import: benchmarks/shards.py uses it too."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cp_assets_tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
WORKER_YAML = REPO / "docker" / "celery_worker.yaml"
QUEUES = {"cpu": "dagster", "gpu": "gpu"}  # worker name -> the queue it serves


@dataclass
class Cluster:
    broker: str
    dagster_home: Path
    env: dict
    logs: Path

    def worker_log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def local_instance(home: Path, storage: str | None = None):
    """A persistent Dagster instance in `home` (runs through an executor need one): SQLite storage there unless
    `storage` gives another `storage:` block; the `gpu` pool limited to one slot, as in the repo's dagster.yaml."""
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text((storage or f"storage:\n  sqlite:\n    base_dir: {home}\n") + (
        "concurrency:\n  pools:\n    default_limit: 1\n    granularity: op\ntelemetry:\n  enabled: false\n"))
    return dg.DagsterInstance.from_config(str(home))


def _postgres_storage(pg_url: str, database: str) -> str:
    """A Dagster `storage:` block on a fresh database `database` of the Postgres at `pg_url`."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {database}")
    base, _, query = pg_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{database}" + (f"?{query}" if query else "")
    return f"storage:\n  postgres:\n    postgres_url: \"{url}\"\n"


def _wait_for_redis(port: int, proc: subprocess.Popen, timeout_s: float = 20) -> None:
    import redis

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            redis.Redis(host="127.0.0.1", port=port).ping()
            return
        except redis.exceptions.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on 127.0.0.1:{port} did not start (exit {proc.poll()})") from None
            time.sleep(0.1)


def _wait_for_workers(cluster: Cluster, procs: list[subprocess.Popen], timeout_s: float = 120) -> None:
    """Until every worker answers a ping over the broker; a worker that exits first fails with its log."""
    from celery import Celery

    app = Celery(broker=cluster.broker)
    deadline = time.monotonic() + timeout_s
    while True:
        for name, proc in zip(QUEUES, procs):
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker {name} exited ({proc.returncode}): {cluster.worker_log(name)[-3000:]}")
        answered = {next(iter(r)).split("@")[0] for r in app.control.ping(timeout=1.0)}
        if answered >= set(QUEUES):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"celery workers {sorted(set(QUEUES) - answered)} did not answer in {timeout_s} s")


@contextmanager
def celery_cluster(work: Path, pg_url: str, database: str = "dagster_celery_test"):
    """Yield a running Cluster; stop the workers and the broker after (their logs stay in `work/logs`)."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise FileNotFoundError("redis-server not found: `make services` installs Debian's redis-server")
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis_proc = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no"], stdout=open(logs / "redis.log", "w"),
                                  stderr=subprocess.STDOUT)
    workers: list[subprocess.Popen] = []
    try:
        _wait_for_redis(port, redis_proc)
        home = work / "dagster_home"
        local_instance(home, storage=_postgres_storage(pg_url, database)).dispose()
        bin_dir = str(Path(sys.executable).parent)  # `dagster-celery worker start` runs `celery` from PATH
        env = dict(os.environ, CPROX_EXECUTOR="celery", CPROX_CELERY_BROKER=broker, CPROX_CELERY_BACKEND=broker,
                   DAGSTER_HOME=str(home), OMP_NUM_THREADS="1", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        cli = Path(sys.executable).parent / "dagster-celery"
        for name, queue in QUEUES.items():
            workers.append(subprocess.Popen(
                [str(cli), "worker", "start", "-A", "dagster_celery.app", "-y", str(WORKER_YAML), "-q", queue,
                 "-n", name, "--", "--pool", "solo"],
                env=env, stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        cluster = Cluster(broker, home, env, logs)
        _wait_for_workers(cluster, workers)
        yield cluster
    finally:
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in workers:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        redis_proc.terminate()
        redis_proc.wait(timeout=15)
