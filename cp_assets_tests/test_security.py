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

from cp_assets_tests.conftest import REGISTRY, TEST_HOME, corpus_key, shard_instance
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
        shard_instance(instance)
        # a run that uses the secret URL and succeeds (reading the split again is idempotent)
        ok = dg.materialize(corpus_assets, selection=["raw_corpus"], partition_key=corpus_key("tiny"), instance=instance,
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
        down = dg.materialize(corpus_assets, selection=["raw_corpus"], partition_key=corpus_key("tiny"), instance=instance,
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

    before = (store.count("chunks", "tiny"), store.count("raw_corpus", "tiny"))
    assert min(before) > 0  # the split is there to lose
    [hits] = search(store, [text], split="tiny", k=3, engine="pgvector")
    assert len(hits) == 3
    assert (store.count("chunks", "tiny"), store.count("raw_corpus", "tiny")) == before


def hostile_documents(split: str) -> list:
    from cp_assets.lib.corpus.sources import Document

    body = " ".join(f"the quiet harbour keeps its boats {i}" for i in range(12))
    return [Document(doc_id=f"h{i}:{text}", split=split, source=text, locator=f"{text}#L{i}", byte_offset=i,
                     text=f"{text} {body} {text}", meta={"note": text, text: i}) for i, text in enumerate(HOSTILE)]


def test_hostile_corpus_text_round_trips_through_postgres_and_the_ngram_index(store, materialized, tmp_path):
    """Documents whose ids, sources, text and metadata are SQL come back byte for byte from Postgres and from the
    exact index (suffix array), and traced spans name them; no other split is touched."""
    from cp_assets.lib.corpus.exact.ngram_index import NgramIndex
    from cp_assets.lib.reports.trace import trace

    split = "hostile_roundtrip"
    docs = hostile_documents(split)
    others = {s: (store.count("raw_corpus", s), store.count("chunks", s)) for s in ("tiny", "math")}
    try:
        assert store.replace_documents(split, docs) == len(docs)
        back = sorted(store.iter_documents(split), key=lambda d: d.byte_offset)
        assert [(d.doc_id, d.source, d.locator, d.text, d.meta) for d in back] == \
            [(d.doc_id, d.source, d.locator, d.text, d.meta) for d in docs]
        index = NgramIndex(tmp_path / f"{split}.json")
        index.update(((d.doc_id, d.text) for d in back), log=lambda _: None)
        assert index.stats()["n_docs"] == len(docs)
        for doc in docs:
            spans = trace(index, doc.text, doc_text=lambda ids: store.document_texts(split, ids))
            located = {loc.doc_id for span in spans for loc in span.locations}
            assert doc.doc_id in located and all(loc.verified for span in spans for loc in span.locations)
    finally:
        store.drop_split(split)
    assert store.count("raw_corpus", split) == 0
    assert {s: (store.count("raw_corpus", s), store.count("chunks", s)) for s in ("tiny", "math")} == others


def test_hostile_rollout_text_is_only_data_in_the_results_db(tmp_path):
    """A completion (model output: untrusted) and its ids written through `write_rollouts` and a report table
    come back unchanged, and the other partitions' rows survive."""
    from datetime import datetime, timezone

    from cp_assets.lib.evals.generation import Rollout, SamplingParams
    from cp_assets.lib.reports import report_tables
    from cp_assets.lib.reports.results_db import ResultsDB

    db = ResultsDB(tmp_path / "results.duckdb")
    now = datetime.now(timezone.utc)
    rollouts = [Rollout(sample_id=f"s{i}:{t}", eval_set=t, model_id=f"m-{t}", backend="echo", prompt=t,
                        completion=f"{t} and {t}", params=SamplingParams(), params_hash="p", finish_reason="stop",
                        latency_s=0.0, started_at=now, finished_at=now, metadata={"k": t})
                for i, t in enumerate(HOSTILE)]
    assert db.write_rollouts(rollouts) == len(HOSTILE)
    assert sorted((r.sample_id, r.completion, r.metadata["k"]) for r in db.rollouts()) == \
        sorted((r.sample_id, r.completion, r.metadata["k"]) for r in rollouts)
    row = dict.fromkeys(report_tables.columns("rollout_spans"), 0) | {"split": "s", "params_hash": "p", "docs": "[]"}
    with db.connect() as con:
        report_tables.replace_named(con, {"model_id": "keep"}, {"rollout_spans": [
            row | {"model_id": "keep", "sample_id": "kept", "text": "kept", "eval_set": "e"}]})
        for t in HOSTILE:
            report_tables.replace_named(con, {"model_id": t}, {"rollout_spans": [
                row | {"model_id": t, "sample_id": t, "text": t, "eval_set": t}]})
        got = con.execute("SELECT model_id, sample_id, text FROM rollout_spans ORDER BY model_id").fetchall()
        tables = {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    assert sorted(got) == sorted([("keep", "kept", "kept")] + [(t, t, t) for t in HOSTILE])
    assert {"rollouts", "rollout_spans", "eval_samples"} <= tables


def test_hostile_keys_are_refused_by_the_registries(tmp_path):
    from cp_assets.lib.corpus.registry import RegistryError, load_registry

    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {"x'; DROP TABLE t; --": {"sources": [{"path": "a.txt"}]}}}))
    with pytest.raises(RegistryError, match="must match"):
        load_registry(path, tmp_path)
