"""The corpus assets through Dagster: materialization, checks, idempotence, incremental re-embedding, isolation."""

import os
import re
import subprocess
import sys

import dagster as dg
import pytest

from cp_assets_tests.conftest import REGISTRY_SPLITS, corpus_key, metadata, shard_instance


def test_definitions_load():
    from cp_assets.definitions import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"raw_corpus", "chunks", "embeddings", "eval_samples", "rollouts"} <= keys
    node = repo.asset_graph.get(dg.AssetKey("embeddings"))
    assert node.partitions_def.partition_dimension_names == ["shard", "split"]
    [split_dim] = [d for d in node.partitions_def.partitions_defs if d.name == "split"]
    assert split_dim.partitions_def.get_partition_keys() == list(REGISTRY_SPLITS)
    from cp_assets.defs.corpus.embeddings import embeddings

    assert embeddings.op.pool == "gpu"
    assert {"corpus_job", "gpu_embed_job", "all_assets_job", "eval_samples_job", "rollouts_job"} <= {
        j.name for j in repo.get_all_jobs()}
    rollouts = repo.asset_graph.get(dg.AssetKey("rollouts"))
    assert rollouts.partitions_def.partition_dimension_names == ["eval_set", "model"]
    assert rollouts.pools == {"gpu"}
    assert sorted(s.name for s in repo.sensor_defs) == ["corpus_shards_sensor", "models_registry_sensor",
                                                         "report_automation"]
    assert [s.name for s in repo.schedule_defs] == ["nightly_shard_backfill"]
    assert {k.name for k in repo.asset_graph.asset_check_keys} >= {
        "check_embeddings_count_matches_chunks", "check_embeddings_dim_matches_model", "check_embeddings_finite",
        "check_ngram_index_matches_corpus"}
    assert {"ngram_index", "eval_proximity", "contamination", "rollout_proximity", "rollout_traces",
            "difficulty_report", "contamination_summary", "distance_by_difficulty", "nearest_neighbors",
            "rollout_correctness_by_distance"} <= keys
    assert {"proximity_job", "rollout_reports_job", "analysis_job"} <= {j.name for j in repo.get_all_jobs()}
    contamination = repo.asset_graph.get(dg.AssetKey("contamination"))
    assert {p.to_user_string() for p in contamination.parent_keys} == {"eval_samples", "ngram_index", "eval_proximity"}


def test_materialize_every_split(materialized, store):
    for split, result in materialized.items():
        raw, ch, emb = (metadata(result, a) for a in ("raw_corpus", "chunks", "embeddings"))
        assert raw["documents"] == store.count("raw_corpus", split) > 0
        assert ch["chunks"] == store.count("chunks", split) == emb["chunks"] > raw["documents"] // 2
        assert emb["dim"] == 384 and emb["embedded"] + emb["reused"] == ch["chunks"]
        assert emb["tokens_per_s"] > 0 and ch["token_histogram"].startswith("![tokens per chunk](data:image/png")
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"check_embeddings_count_matches_chunks": True, "check_embeddings_dim_matches_model": True,
                          "check_embeddings_finite": True, "check_ngram_index_matches_corpus": True}
        ngrams = metadata(result, "ngram_index")
        assert ngrams["documents"] == raw["documents"] and ngrams["tokens"] > 1000 and ngrams["status"] == "rebuilt"
        assert 3 < ngrams["bytes_per_token"] < 8
    raw = metadata(materialized["tiny"], "raw_corpus")
    assert raw["per_source"] == {"fineweb": 12, "sonnets": 20, "austen": 3}


def run(assets, split, resources, **kw):
    from cp_assets.definitions import corpus_assets, corpus_checks

    kw["instance"] = shard_instance(kw.get("instance"))
    return dg.materialize(corpus_assets + corpus_checks, selection=assets, partition_key=corpus_key(split),
                          resources=resources, **kw)


def test_rematerializing_is_idempotent_and_incremental(materialized, store, resources):
    slug = "all_minilm_l6_v2"
    other_version = store.partition_version("embeddings", "math", slug)
    result = run(["embeddings"], "tiny", resources)
    assert metadata(result, "embeddings")["status"] == "up_to_date"
    assert metadata(result, "embeddings")["embedded"] == 0

    # one chunk's text changes: only that chunk is embedded again
    with store.connect() as conn:
        conn.execute("UPDATE cprox_chunks SET text = text || ' (edited)', text_hash = 'edited' "
                     "WHERE split = 'tiny' AND chunk_id = (SELECT min(chunk_id) FROM cprox_chunks WHERE split='tiny')")
    md = metadata(run(["embeddings"], "tiny", resources), "embeddings")
    assert (md["embedded"], md["reused"]) == (1, md["chunks"] - 1)

    # the chunks asset restores the text: again one chunk to embed; docs re-read give identical ids
    md = metadata(run(["raw_corpus", "chunks", "embeddings"], "tiny", resources), "embeddings")
    assert md["embedded"] == 1
    assert store.partition_version("embeddings", "math", slug) == other_version, "other splits untouched"


def test_check_fails_when_a_vector_is_missing(materialized, store, resources):
    from cp_assets.lib.corpus.embeddings import embedding_checks

    model = "all-MiniLM-L6-v2"
    assert all(passed for passed, _ in embedding_checks(store, "math", model).values())
    with store.connect() as conn:
        conn.execute("DELETE FROM emb_all_minilm_l6_v2 WHERE split = 'math' AND chunk_id = "
                     "(SELECT min(chunk_id) FROM cprox_chunks WHERE split = 'math')")
    passed, figures = embedding_checks(store, "math", model)["count_matches_chunks"]
    assert not passed and figures["embeddings"] == figures["chunks"] - 1
    md = metadata(run(["embeddings"], "math", resources), "embeddings")
    assert md["embedded"] == 1 and store.count("embeddings", "math", "all_minilm_l6_v2") == md["chunks"]


def test_unknown_split_and_bad_database_fail_clearly(materialized, resources, capsys):
    from cp_assets.lib.corpus.registry import RegistryError, load_registry

    with pytest.raises(RegistryError, match="unknown split 'nope'"):
        load_registry().split("nope")
    from cp_assets.cli.common import instance, materialize
    from cp_assets.cli.main import main
    from cp_assets.lib.core import settings
    from cp_assets.resources.pgvector_store import PgVectorStore

    assert main(["materialize", "--split", "nope"]) == 1  # the CLI: the registry read and its splits, no traceback
    said = "".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "unknownsplit'nope'" in said and str(settings.corpora_file()) in said and "Traceback" not in said, said
    with pytest.raises(LookupError, match=rf"no partition 'nope'.*{re.escape(str(settings.corpora_file()))}"):
        materialize(instance(), ["chunks"], "nope")  # every CLI command that materializes a partition

    bad = dict(resources, pg=PgVectorStore(database_url="postgresql://u:pw@127.0.0.1:1/x"))
    result = run(["raw_corpus"], "tiny", bad, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "cannot connect to Postgres" in text and "cprox db start" in text and ":pw@" not in text


def test_bad_input_fails_at_once_and_leaves_the_split(materialized, resources, store, tmp_path):
    """A malformed record is not retried (PG_RETRY is for the database) and the split keeps its documents."""
    import gzip

    from cp_assets.resources.corpus_registry import CorpusRegistry

    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"text": "fine"}\n{"text": \n'))
    (tmp_path / "corpora.yaml").write_text("splits:\n  tiny:\n    sources:\n      - {path: bad.jsonl.gz, text_field: text}\n")
    before = store.count("raw_corpus", "tiny")
    bad = dict(resources, registry=CorpusRegistry(corpora_file=str(tmp_path / "corpora.yaml"), data_dir=str(tmp_path)))
    result = run(["raw_corpus"], "tiny", bad, raise_on_error=False)
    assert not result.success
    types = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in types and types.count("STEP_FAILURE") == 1
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"{tmp_path / 'bad.jsonl.gz'}:2" in str(failure.event_specific_data.error)
    assert before > 0 and store.count("raw_corpus", "tiny") == before


def test_empty_source_file_fails_the_asset_and_warns_when_skipped(materialized, resources, store, tmp_path):
    """An empty source file fails `raw_corpus` at once, naming the file (the split keeps its documents); under
    `on_bad_record: skip` the read logs a warning and records it in the metadata."""
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.shards import read_corpus
    from cp_assets.resources.corpus_registry import CorpusRegistry

    (tmp_path / "empty.jsonl").write_bytes(b"")
    (tmp_path / "one.jsonl").write_text('{"id": "a", "text": "the only document"}\n')
    (tmp_path / "corpora.yaml").write_text("splits:\n  tiny:\n    sources:\n      - {path: empty.jsonl, text_field: text}\n")
    before = store.count("raw_corpus", "tiny")
    bad = dict(resources, registry=CorpusRegistry(corpora_file=str(tmp_path / "corpora.yaml"), data_dir=str(tmp_path)))
    result = run(["raw_corpus"], "tiny", bad, raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"{tmp_path / 'empty.jsonl'}: empty file" in str(failure.event_specific_data.error)
    assert before > 0 and store.count("raw_corpus", "tiny") == before
    (tmp_path / "skip.yaml").write_text("splits:\n  empty_check:\n    sources:\n"
                                        "      - {path: empty.jsonl, text_field: text, on_bad_record: skip}\n"
                                        "      - {path: one.jsonl, text_field: text, id_field: id}\n")
    warned = []
    try:
        md = read_corpus(load_registry(tmp_path / "skip.yaml", tmp_path), "empty_check", store, log=lambda _: None,
                         warn=warned.append)
    finally:
        store.drop_split("empty_check")
    assert md["documents"] == 1 and md["skipped_by_reason"] == {"empty_file": 1}
    assert len(warned) == 1 and warned[0] == md["warnings"] and "empty.jsonl: empty file" in warned[0]


@pytest.mark.slow
def test_standard_dagster_cli_materializes_a_partition(materialized, store):
    from cp_assets.cli.main import main

    assert main(["shards", "sync"]) == 0  # the shard partitions in DAGSTER_HOME's instance (the sensor does it too)
    cmd = [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "-m",
           "cp_assets.definitions", "--select", "raw_corpus,chunks", "--partition", "00000|math"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    inst = dg.DagsterInstance.get()  # DAGSTER_HOME's, which the CLI wrote to
    [run] = inst.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    made = {}
    for asset in ("raw_corpus", "chunks"):
        [rec] = inst.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                                                  asset_partitions=["00000|math"]), limit=1).records
        assert rec.run_id == run.run_id, f"{asset}'s latest materialization is not the CLI's run"
        made[asset] = {k: v.value for k, v in rec.asset_materialization.metadata.items()}
    assert made["raw_corpus"]["documents"] == store.count("raw_corpus", "math") == 40  # limit: 40 in the registry
    assert made["chunks"]["chunks"] == store.count("chunks", "math") > 40
