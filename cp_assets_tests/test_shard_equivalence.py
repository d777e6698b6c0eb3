"""A split cut into 8 shards gives what the same files give as one shard (`whole`, built in-process): the same
documents, chunks, vectors (within bf16 tolerance), n-gram counts and contamination rows, whether its shards run
- as 8 runs through the multiprocess executor, 2 processes at a time (`sharded`), or
- through a real dagster-celery deployment: a Redis broker on loopback, Postgres run storage, and two single-process
  workers, `cpu` on queue `dagster` and `gpu` on queue `gpu` (`sharded_celery`).
Re-materializing one shard touches no other."""

import numpy as np
import pytest

import dagster as dg

from cp_assets_tests.celery_cluster import local_instance
from cp_assets_tests.conftest import SHARD_FILES, corpus_key, metadata

SLUG = "all_minilm_l6_v2"
SHARDED = ("sharded", "sharded_celery")


def _plans():
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.shards import shard_keys

    plans = shard_keys(load_registry())
    assert len(plans["sharded"]) == SHARD_FILES and plans["whole"] == ["00000"]
    return plans


def step_spans(instance: dg.DagsterInstance, run_ids: list[str]) -> list[tuple[float, float, int]]:
    """(start, end, pid) of every step of these runs, from their event logs."""
    spans = []
    for run_id in run_ids:
        start = {}
        for e in instance.all_logs(run_id):
            ev = e.dagster_event
            if ev is None or ev.step_key is None:
                continue
            if ev.event_type_value == "STEP_START":
                start[ev.step_key] = (e.timestamp, ev.pid)
            elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in start:
                spans.append((start[ev.step_key][0], e.timestamp, start[ev.step_key][1]))
    return spans


def most_at_once(spans) -> int:
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans], key=lambda x: (x[0], x[1]))
    now = best = 0
    for _, d in edges:
        now += d
        best = max(best, now)
    return best


@pytest.fixture(scope="module")
def built(store, resources, tmp_path_factory):
    """`sharded`: 8 shard runs through the multiprocess executor, 2 at a time; `whole`: one shard, in-process."""
    from cp_assets.cli.fanout import run_many
    from cp_assets.definitions import corpus_assets, corpus_checks
    from cp_assets.lib.corpus.exact.ngram_split import drop_split_index

    plans = _plans()
    instance = local_instance(tmp_path_factory.mktemp("dagster_home"))
    instance.add_dynamic_partitions("corpus_shards", plans["sharded"])
    keys = [corpus_key("sharded", shard) for shard in plans["sharded"]]
    outcomes = run_many(instance, keys, workers=2)
    for key, res in outcomes.items():
        assert res.ok and len(res.checks) == 4 and all(res.checks.values()), (key, res)
    whole = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key("whole"), instance=instance,
                           resources=resources)
    assert whole.success and all(c.passed for c in whole.get_asset_check_evaluations())
    # `whole` has no shard 00001..00007: those partitions are empty shards, and pass their checks
    empty = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key("whole", "00003"),
                           instance=instance, resources=resources)
    assert empty.success and all(c.passed for c in empty.get_asset_check_evaluations())
    assert metadata(empty, "raw_corpus")["status"] == "empty_shard" and store.count("raw_corpus", "whole") == 245
    yield instance
    for split in SHARDED + ("whole",):
        store.drop_split(split)
        drop_split_index(split)


@pytest.fixture(scope="module")
def celery_built(built, store, tmp_path_factory):
    """`sharded_celery`: the 8 shard runs orchestrated 2 at a time, every step a Celery task on the two workers.
    Yields the instance (Postgres storage) and the run ids."""
    import shutil

    from cp_assets.cli.fanout import run_many
    from cp_assets.lib.corpus import embedded_pg
    from cp_assets_tests.celery_cluster import celery_cluster

    if shutil.which("redis-server") is None:
        pytest.skip("needs Debian's redis-server (`make services` installs it)")
    plans = _plans()
    work = tmp_path_factory.mktemp("celery")
    with celery_cluster(work, embedded_pg.start(store.home)) as cluster, pytest.MonkeyPatch.context() as mp:
        for name in ("CPROX_EXECUTOR", "CPROX_CELERY_BROKER", "CPROX_CELERY_BACKEND", "DAGSTER_HOME"):
            mp.setenv(name, cluster.env[name])  # the orchestrating processes load the code location with them
        instance = dg.DagsterInstance.from_config(str(cluster.dagster_home))
        instance.add_dynamic_partitions("corpus_shards", plans["sharded_celery"])
        keys = [corpus_key("sharded_celery", shard) for shard in plans["sharded_celery"]]
        outcomes = run_many(instance, keys, workers=2)
        bad = {k: r for k, r in outcomes.items() if not (r.ok and len(r.checks) == 4 and all(r.checks.values()))}
        assert not bad, (bad, cluster.worker_log("cpu")[-3000:], cluster.worker_log("gpu")[-3000:])
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition/split": "sharded_celery"}))
        yield instance, [r.run_id for r in runs]
        instance.dispose()


def test_multiprocess_ran_each_step_in_its_own_process_two_at_a_time(built):
    runs = built.get_runs(dg.RunsFilter(tags={"dagster/partition/split": "sharded"}))
    assert len(runs) == SHARD_FILES and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    spans = step_spans(built, [r.run_id for r in runs])
    assert len(spans) == SHARD_FILES * 6  # 4 assets + the n-gram check + one step of 3 embedding checks
    assert len({pid for _, _, pid in spans}) == len(spans), "a process per step"
    assert most_at_once(spans) == 2, "two worker processes, busy together"


def test_celery_ran_embedding_on_the_gpu_worker_and_the_rest_on_the_cpu_worker(celery_built):
    instance, run_ids = celery_built
    assert len(run_ids) == SHARD_FILES
    where = {}
    for run_id in run_ids:
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            md = e.dagster_event.event_specific_data.metadata
            if "Celery worker" in md:
                where.setdefault(e.dagster_event.step_key, set()).add(md["Celery worker"].value.split("@")[0])
    assert where["embeddings"] == {"gpu"}
    assert {step: workers for step, workers in where.items() if step != "embeddings"} == {
        step: {"cpu"} for step in where if step != "embeddings"}
    assert len(where) == 6


@pytest.fixture(params=SHARDED)
def sharded(request, built):
    """Each way of running the 8 shards: the split's name, once its shards are built."""
    if request.param == "sharded_celery":
        request.getfixturevalue("celery_built")
    return request.param


def test_eight_shards_equal_one(sharded, store):
    from cp_assets.lib.corpus.exact.ngram_split import SplitIndex, open_index

    docs = {s: [(d.doc_id, d.text) for d in store.iter_documents(s)] for s in (sharded, "whole")}
    assert docs[sharded] == docs["whole"] and len(docs["whole"]) == 8 * 30 + 5
    per_shard = [store.count("raw_corpus", sharded, shard=f"{i:05d}") for i in range(SHARD_FILES)]
    assert per_shard == [31] * 5 + [30] * 3
    chunks = {s: [(c, h) for c, h, _, _ in store.chunk_rows(s)] for s in (sharded, "whole")}
    assert chunks[sharded] == chunks["whole"]
    ids_a, a = store.load_matrix(SLUG, sharded)
    ids_b, b = store.load_matrix(SLUG, "whole")
    assert ids_a == ids_b and len(ids_a) == len(chunks["whole"])
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999  # bf16 autocast: batches differ, vectors agree
    index, whole = open_index(sharded), open_index("whole")
    assert isinstance(index, SplitIndex) and len(index.shards) == SHARD_FILES
    for key in ("n_docs", "n_tokens"):
        assert index.stats()[key] == whole.stats()[key], key


def test_contamination_rows_are_the_same(sharded, store):
    import gzip
    import json

    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.exact.ngram_split import open_index
    from cp_assets.lib.corpus.search import search
    from cp_assets.lib.reports.contamination import contamination_rows

    with gzip.open(settings.data_dir() / "gsm8k" / "test.jsonl.gz", "rt") as fh:
        items = [(f"gsm8k:{i}", json.loads(line)["question"]) for i, line in zip(range(10), fh)]
    rows = {}
    for split in (sharded, "whole"):
        hits = search(store, [t for _, t in items], split=split, k=1, exact=True, engine="pgvector")
        nearest = {sid: (h[0].distance, None) for (sid, _), h in zip(items, hits)}
        corpus = (d.text for d in store.iter_documents(split))
        rows[split] = contamination_rows("gsm8k", split, items, open_index(split), corpus, nearest)
    # (eval_set, sample_id, split, n, n_tokens, overlap, share, longest, bucket, substrings, distance, percentile,
    #  flagged, reason, rare_share): the distance within bf16 tolerance, everything else equal
    assert [r[1] for r in rows["whole"] if r[12]] == [f"gsm8k:{i}" for i in range(5)], "the planted five, only"
    for a, b in zip(rows[sharded], rows["whole"], strict=True):
        assert a[:2] + a[3:10] + a[11:] == b[:2] + b[3:10] + b[11:]
        assert abs(a[10] - b[10]) < 2e-3


def test_rematerializing_one_shard_touches_no_other(built, store, resources):
    from cp_assets.definitions import corpus_assets, corpus_checks

    instance = built
    from cp_assets.lib.corpus.exact.ngram_split import shard_files

    before = {(p["kind"], p["model_slug"], p["shard"]): (p["version"], p["updated_at"])
              for p in store.shard_partitions() if p["split"] == "sharded"}
    indexes = {k: (p.stat().st_mtime_ns, p.read_text()) for k, p in shard_files("sharded").items()}
    res = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key("sharded", "00003"),
                         instance=instance, resources=resources)
    assert res.success and metadata(res, "embeddings")["status"] == "up_to_date"
    assert metadata(res, "ngram_index")["status"] == "unchanged", "same documents: the suffix array is kept"
    assert {k: (p.stat().st_mtime_ns, p.read_text()) for k, p in shard_files("sharded").items()} == indexes
    after = {(p["kind"], p["model_slug"], p["shard"]): (p["version"], p["updated_at"])
             for p in store.shard_partitions() if p["split"] == "sharded"}
    changed = sorted(k for k in after if after[k] != before[k])
    assert {shard for _, _, shard in changed} == {"00003"}, changed
    assert {kind for kind, _, _ in changed} == {"raw_corpus", "chunks"}  # replaced; the vectors were up to date
