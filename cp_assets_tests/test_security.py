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


def test_the_ui_binds_loopback_only():
    make_ui = re.search(r"^ui:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "dagster dev -h 127.0.0.1" in make_ui  # compose ports: test_docker_config.test_compose_ports_on_loopback_only


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
