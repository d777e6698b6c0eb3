"""Verbatim tracing through the product: the `ngram_index` asset on the test splits, `rollout_traces` over stored
rollouts, and `cprox trace` (table and JSON)."""

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from cp_assets.lib.corpus.exact.ngram_split import open_index
from cp_assets.lib.evals.generation import Rollout, SamplingParams
from cp_assets_tests.conftest import corpus_key, metadata, shard_instance

MODEL = "echo-model"  # stored rollouts with known completions: the asset and tracing are what is under test


def math_docs(store, n=3):
    return [d for _, d in zip(range(n), store.iter_documents("math"))]


@pytest.fixture(scope="module")
def echo_rollouts(materialized, store, resources):
    from cp_assets.resources.results import ResultsStore

    docs = math_docs(store)
    copied = docs[0].text.split("Assistant: ")[1][:220]  # a GSM8K train solution, regurgitated
    mixed = "Let me think. " + docs[1].text[6:150] + " So the answer is new."
    now = datetime.now(timezone.utc)
    params = SamplingParams(max_tokens=64)
    rows = [Rollout(sample_id=f"gsm8k:{i}", eval_set="gsm8k", model_id=MODEL, backend="test", prompt="p",
                    completion=c, params=params, params_hash=params.key(None), finish_reason="stop", latency_s=0.1,
                    started_at=now, finished_at=now, correct=None)
            for i, c in enumerate([copied, mixed, "Nothing here was ever written down anywhere before."])]
    ResultsStore().db().write_rollouts(rows)
    return docs, rows


def test_ngram_index_asset_indexes_every_document(materialized, store):
    for split, result in materialized.items():
        md = metadata(result, "ngram_index")
        stats = open_index(split).stats()
        assert md["documents"] == stats["n_docs"] == store.count("raw_corpus", split)
        assert md["tokens"] == stats["n_tokens"] > md["documents"] and md["tokens_per_s"] > 0


def test_ngram_index_rerun_changes_nothing(materialized, resources):
    from cp_assets.definitions import corpus_assets, corpus_checks

    result = dg.materialize(corpus_assets + corpus_checks, selection=["ngram_index"], partition_key=corpus_key("math"),
                            instance=shard_instance(), resources=resources)
    md = metadata(result, "ngram_index")
    assert (md["added"], md["removed"], md["kept"]) == (0, 0, md["documents"])


def test_rollout_traces_finds_the_copied_spans(echo_rollouts, resources):
    from cp_assets.defs.reports.rollout_traces import rollout_traces
    from cp_assets.resources.results import ResultsStore

    docs, rows = echo_rollouts
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("models", [MODEL])
    key = dg.MultiPartitionKey({"model": MODEL, "split": "math"})
    result = dg.materialize([rollout_traces], partition_key=key, resources=resources, instance=instance)
    md = metadata(result, "rollout_traces")
    assert md["rollouts"] == 3 and md["rollouts_with_spans"] == 2
    with ResultsStore().db().connect(read_only=True) as con:
        spans = con.execute("SELECT sample_id, text, n_tokens, count, docs FROM rollout_spans WHERE model_id = ? "
                            "ORDER BY sample_id, token_start", [MODEL]).fetchall()
    by_sample = {}
    for sid, text, n, count, locs in spans:
        by_sample.setdefault(sid, []).append((text, n, count, json.loads(locs)))
    [(text, n, count, locs)] = by_sample["gsm8k:0"]
    assert text == rows[0].completion.strip() and count >= 1
    assert locs[0]["doc_id"] == docs[0].doc_id and locs[0]["verified"]
    assert docs[0].text[locs[0]["char_start"]:locs[0]["char_end"]] == text
    assert any(docs[1].doc_id == loc["doc_id"] for _, _, _, ls in by_sample["gsm8k:1"] for loc in ls)
    # idempotent: the same rows again
    assert dg.materialize([rollout_traces], partition_key=key, resources=resources, instance=instance).success
    with ResultsStore().db().connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM rollout_spans WHERE model_id = ?", [MODEL]).fetchone()[0] == len(spans)


def test_cprox_trace_json_and_table(materialized, store, capsys):
    from cp_assets.cli.main import main

    doc = math_docs(store, 1)[0]
    text = "Here is something I remember: " + doc.text[:200]
    assert main(["trace", text, "--split", "math", "--min-tokens", "10", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    [span] = found["math"]
    assert span["n_tokens"] >= 10 and span["count"] >= 1 and span["locations"][0]["doc_id"] == doc.doc_id
    assert text[span["char_start"]:span["char_end"]] == span["text"]
    assert main(["trace", text, "--split", "math"]) == 0
    out = capsys.readouterr().out
    assert "1 verbatim span(s)" in out and doc.doc_id in out
    assert main(["trace", text, "--split", "nope"]) == 1
    assert "no n-gram index for split(s) ['nope']" in capsys.readouterr().err
    assert main(["trace", text, "--split", "math", "--min-tokens", "2", "--json"]) == 0
    short = json.loads(capsys.readouterr().out)["math"]
    assert span["text"] in [s["text"] for s in short] and all(s["n_tokens"] >= 2 for s in short)
    assert main(["trace", text, "--split", "math", "--olmotrace", "--json"]) == 0
    olmo = [s["text"] for s in json.loads(capsys.readouterr().out)["math"]]
    assert olmo[0].startswith("User: Natalia") and olmo[0].endswith("in May."), ("no sentence break inside", olmo)
    assert "How many clips did Natalia sell altogether in April and May?" in olmo[1], olmo


def test_cprox_trace_reads_the_database_of_cprox_database_url(materialized, store, capsys, monkeypatch):
    """The snippets come from the server CPROX_DATABASE_URL names: the test's server works, a dead one is an error."""
    from cp_assets.cli.main import main

    doc = math_docs(store, 1)[0]
    monkeypatch.setenv("CPROX_DATABASE_URL", store.dsn())
    assert main(["trace", doc.text[:200], "--split", "math", "--json"]) == 0
    [span, *_] = json.loads(capsys.readouterr().out)["math"]
    assert span["locations"][0]["doc_id"] == doc.doc_id and span["locations"][0]["snippet"]
    monkeypatch.setenv("CPROX_DATABASE_URL", "postgresql://cprox@127.0.0.1:1/none?connect_timeout=2")
    assert main(["trace", doc.text[:200], "--split", "math", "--json"]) == 1
    assert "127.0.0.1:1" in capsys.readouterr().err


def test_cprox_reports_materializes_the_reports(echo_rollouts, capsys):
    from cp_assets.cli.main import main
    from cp_assets.resources.results import ResultsStore

    assert main(["reports", "--eval", "gsm8k", "--split", "math", "--model", MODEL]) == 0
    table = capsys.readouterr().err
    assert "reports" in table and "gsm8k" in table and "NO" not in table
    with ResultsStore().db().connect(read_only=True) as con:
        n = con.execute("SELECT n_items FROM contamination_summary WHERE eval_set = 'gsm8k' AND split = 'math'")
        assert n.fetchone()[0] == 1319
        assert con.execute("SELECT count(*) FROM rollout_spans WHERE model_id = ?", [MODEL]).fetchone()[0] > 0
