"""Security: secrets come only from the environment (dg.EnvVar) and never reach Dagster's run logs, event records,
metadata or captured output; the embedded Postgres has no TCP listener and the UI binds loopback; user text reaches
SQL only as parameters (`cprox sql` is the deliberate, read-only exception, tested in test_sql_reports.py)."""

import re
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._serdes import serialize_value

from cp_assets_tests.conftest import REGISTRY, TEST_HOME
from cp_assets_tests.servers import closed_port_url

REPO = Path(__file__).resolve().parents[1]
PG_SECRET = f"pg-planted-{uuid.uuid4().hex[:12]}"
KEY_SECRET = f"sk-planted-{uuid.uuid4().hex[:12]}"


def with_password(url: str, password: str) -> str:
    """The embedded server's URL (Unix socket, trust auth) with a password added: accepted, and a secret to find."""
    return re.sub(r"^(postgresql://[^:/@]+):?[^@]*@", rf"\1:{password}@", url)


def production_env(monkeypatch, tmp_path, database_url: str) -> None:
    from cp_assets.lib.core import settings

    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"leaky": {
        "backend": "openai", "base_url": closed_port_url(), "model": "m", "api_key_env": "CPROX_PLANTED_KEY",
        "max_retries": 0, "timeout_s": 5}}}))
    for name, value in {"CPROX_DEPLOYMENT": "production", "CPROX_DATABASE_URL": database_url,
                        "CPROX_HOME": str(TEST_HOME), "CPROX_CORPORA": str(REGISTRY),
                        "CPROX_DATA_DIR": str(settings.data_dir()), "CPROX_MODELS": str(models),
                        "CPROX_PLANTED_KEY": KEY_SECRET,
                        "CPROX_RESULTS_DB": str(tmp_path / "results.duckdb")}.items():  # the session's stays as is
        monkeypatch.setenv(name, value)


def everything_recorded(instance: dg.DagsterInstance, home: Path) -> str:
    """Every event record of every run (serialized as stored), and every file under the instance's directory
    (compute logs, run storage), as one text."""
    parts = []
    for run in instance.get_runs():
        parts.append(serialize_value(run))
        parts.extend(serialize_value(e) for e in instance.all_logs(run.run_id))
    for path in home.rglob("*"):
        if path.is_file():
            parts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(parts)


@pytest.mark.slow
def test_planted_secrets_never_reach_run_logs(store, materialized, monkeypatch, tmp_path, capfd):
    from cp_assets.definitions import corpus_assets, eval_assets
    from cp_assets.resources import production_resources

    production_env(monkeypatch, tmp_path, with_password(store.dsn(), PG_SECRET))
    resources = production_resources()
    assert isinstance(resources["pg"].database_url, dg.EnvVar), "the URL is read from the environment at run time"
    no_retries = {"execution": {"config": {"retries": {"disabled": {}}}}}
    with dg.instance_for_test() as instance:
        home = Path(instance.root_directory)
        instance.add_dynamic_partitions("models", ["leaky"])
        # a run that uses the secret URL and succeeds (reading the split again is idempotent)
        ok = dg.materialize(corpus_assets, selection=["raw_corpus"], partition_key="tiny", instance=instance,
                            resources=resources)
        assert ok.success
        # a run that fails while connecting with the secret key (the error path is where secrets leak)
        dg.materialize(eval_assets, selection=["eval_samples"], partition_key="recall", instance=instance,
                       resources=resources)
        failed = dg.materialize(eval_assets, selection=["rollouts"], instance=instance, resources=resources,
                                partition_key=dg.MultiPartitionKey({"eval_set": "recall", "model": "leaky"}),
                                run_config={**no_retries, "ops": {"rollouts": {"config": {"limit": 1}}}},
                                raise_on_error=False)
        assert not failed.success
        # the same URL pointing at a closed server: DatabaseUnavailable, whose message names the database
        monkeypatch.setenv("CPROX_DATABASE_URL", f"postgresql://cprox:{PG_SECRET}@127.0.0.1:1/cprox")
        down = dg.materialize(corpus_assets, selection=["raw_corpus"], partition_key="tiny", instance=instance,
                              resources=production_resources(), run_config=no_retries, raise_on_error=False)
        assert not down.success
        recorded = everything_recorded(instance, home)
        captured = capfd.readouterr()

    messages = [e.message for e in down.all_events if e.event_type_value == "STEP_FAILURE"]
    assert messages and "cannot connect to Postgres (postgresql://cprox:***@127.0.0.1:1/cprox)" in recorded
    assert "leaky" in recorded and "127.0.0.1" in recorded, "the failures were recorded"
    for secret in (PG_SECRET, KEY_SECRET):
        assert secret not in recorded, f"{secret} found in the instance's records"
        assert secret not in captured.out + captured.err, f"{secret} printed"


def test_production_resources_hold_env_var_names_not_values(monkeypatch, tmp_path):
    """What the definitions carry (and the UI shows as resource config) is the variable's name, not its value."""
    from cp_assets.resources import production_resources

    production_env(monkeypatch, tmp_path, f"postgresql://u:{PG_SECRET}@db.invalid/x")
    resources = production_resources()
    assert resources["pg"].database_url == dg.EnvVar("CPROX_DATABASE_URL")
    for name, resource in resources.items():
        assert PG_SECRET not in repr(resource) and KEY_SECRET not in repr(resource), name
    assert resources["pg"].database_url.get_value() == f"postgresql://u:{PG_SECRET}@db.invalid/x"


def test_embedded_postgres_has_no_tcp_listener(store):
    with store.connect() as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        assert conn.execute("SELECT inet_server_addr()").fetchone()[0] is None, "connected over a Unix socket"


@pytest.mark.slow
def test_the_ui_binds_loopback_only(store, tmp_path):
    """`make ui`'s own command line (`dagster dev`: webserver, daemon, code server), run on a free port with the
    repo's dagster.yaml: every TCP socket its process tree listens on is loopback. (Compose ports:
    test_docker_config.test_compose_ports_on_loopback_only.)"""
    import shlex
    import sys

    from cp_assets_tests.servers import free_port, running_webserver, ui_home
    from cp_assets_tests.sockets import LOOPBACK, listening_tcp, make_recipe

    [command] = make_recipe(REPO / "Makefile", "ui")
    port = free_port()
    command = command.replace("$(SIZE_ENV) ", "")  # the registries the UI reads (SIZE=demo); not what it binds
    argv = shlex.split(command.replace("$(VENV)", str(Path(sys.executable).parents[1])).replace("$(PORT)", str(port)))
    assert "$(" not in " ".join(argv) and argv[1] == "dev", argv
    home = ui_home(tmp_path / "dagster_home", (REPO / "dagster.yaml").read_text())
    with running_webserver(argv, port, home) as ui:
        assert [loc["loadStatus"] for loc in ui.wait_loaded()] == ["LOADED"]  # the code server is up too
        listeners = listening_tcp(ui.proc.pid)
    assert port in {s.port for s in listeners}, listeners  # the webserver's socket was seen: the check looked
    assert [s for s in listeners if s.ip not in LOOPBACK] == [], f"{len(listeners)} listening: {listeners}"


def test_embedded_postgres_has_no_tcp_socket(store):
    """The running postmaster and its backends (as the OS sees them, not as Postgres reports) listen on no TCP port."""
    from cp_assets.lib.corpus.embedded_pg import pgdata
    from cp_assets_tests.sockets import listening_tcp, postmaster_pid, process_tree

    store.count("chunks", "tiny")  # a live connection: at least one backend besides the postmaster
    pid = postmaster_pid(pgdata(TEST_HOME))
    assert len(process_tree(pid)) > 1, "the postmaster's children (checkpointer, backends) were not seen"
    assert listening_tcp(pid) == []


HOSTILE = ["'; DROP TABLE cprox_chunks; --", "x' OR '1'='1", "$$; DELETE FROM cprox_documents; $$", "\\'; --"]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_search_text_is_only_data(store, materialized, text):
    from cp_assets.lib.corpus.search import search

    before = (store.count("chunks", "tiny"), store.count("documents", "tiny"))
    [hits] = search(store, [text], split="tiny", k=3, engine="pgvector")
    assert len(hits) == 3
    assert (store.count("chunks", "tiny"), store.count("documents", "tiny")) == before


def test_hostile_keys_are_refused_by_the_registries(tmp_path):
    from cp_assets.lib.corpus.registry import RegistryError, load_registry

    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {"x'; DROP TABLE t; --": {"sources": [{"path": "a.txt"}]}}}))
    with pytest.raises(RegistryError, match="must match"):
        load_registry(path, tmp_path)
