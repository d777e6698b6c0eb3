"""Fault injection on real components: each test injects one fault into real Dagster runs (in subprocesses, which a
test can kill or race) over the embedded Postgres, the results DuckDB and a real model (SmolLM2-135M), then asserts
that nothing was lost, duplicated or mixed up.

1. kill -9 of a run in the middle of `rollouts`; the rerun generates exactly the missing rollouts.
2. Postgres stopped in the middle of `embeddings`; the step fails with a clear `DatabaseUnavailable`, its retry
   policy (`PG_RETRY`) retries it, the retry starts the embedded server again and resumes the build.
3. Two partitions of the corpus assets materialized at the same time by two processes; each split ends up exactly as
   a solo run makes it.

They use a private corpus registry and models registry (so the session's `tiny`/`math` splits and the registered
models' rollouts are untouched) and leave the session's embedded Postgres running.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from cp_assets_tests.conftest import TEST_HOME

SLUG = "all_minilm_l6_v2"
FAULT_MODEL = "smollm2-faults"  # SmolLM2-135M-Instruct (the converted checkpoint), 2 prompts per batch
ROLLOUT_EVAL, ROLLOUT_LIMIT, ROLLOUT_MAX_TOKENS = "gsm8k", 6, 8
PG_SPLIT = "faultpg"  # embedded while Postgres is stopped
CONCURRENT = ("faulta", "faultb")  # materialized at the same time

REGISTRY = """
splits:
  faultpg:
    sources:
      - path: gsm8k/train.jsonl.gz
        name: gsm8k
        template: "User: {question}\\nAssistant: {answer}"
        limit: 30
  faulta:
    sources:
      - path: gsm8k/train.jsonl.gz
        name: gsm8k
        template: "User: {question}\\nAssistant: {answer}"
        limit: 14
  faultb:
    sources:
      - path: public_domain_texts/shakespeare_sonnets.txt.gz
        name: sonnets
        split_on: '^\\s*$'
        limit: 24
"""

# Materializes raw_corpus -> chunks -> embeddings for one split and prints one JSON line: success, each step's
# start/end time, the errors of the attempts that were retried, the failures, and the embeddings metadata.
CORPUS_RUNNER = textwrap.dedent("""
    import json, sys, time
    import dagster as dg
    from cp_assets.defs.corpus.chunks import chunks
    from cp_assets.defs.corpus.embeddings import embeddings
    from cp_assets.defs.corpus.raw_corpus import raw_corpus
    from cp_assets.resources import local_resources
    from cp_assets.resources.encoder import SentenceEncoder

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus_shards", ["00000"])
    resources = dict(local_resources(), encoder=SentenceEncoder(batch_size=8, commit_every=8))
    t0 = time.time()
    result = dg.materialize([raw_corpus, chunks, embeddings], resources=resources,
                            partition_key=dg.MultiPartitionKey({"split": sys.argv[1], "shard": "00000"}),
                            instance=instance, raise_on_error=False)
    steps = {}
    for entry in instance.all_logs(result.run_id):
        ev = entry.dagster_event
        if ev is None or ev.step_key is None:
            continue
        step = steps.setdefault(ev.step_key, {"start": None, "end": None, "retries": [], "failures": []})
        kind = ev.event_type_value
        if kind == "STEP_START" and step["start"] is None:
            step["start"] = entry.timestamp
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            step["end"] = entry.timestamp
        if kind == "STEP_UP_FOR_RETRY":
            step["retries"].append(ev.event_specific_data.error.to_string())
        elif kind == "STEP_FAILURE":
            step["failures"].append(ev.event_specific_data.error.to_string())
    md = {}
    for ev in result.get_asset_materialization_events():
        if ev.asset_key.to_user_string() == "embeddings":
            md = {k: v.value for k, v in ev.materialization.metadata.items()
                  if k in ("chunks", "embedded", "reused", "status")}
    print("RESULT " + json.dumps({"success": result.success, "t0": t0, "t1": time.time(), "steps": steps,
                                  "embeddings": md}))
""")

# Materializes `rollouts` for one eval set x model (killed by the test in the middle).
ROLLOUTS_RUNNER = textwrap.dedent("""
    import json, sys
    import dagster as dg
    from cp_assets.defs.evals.eval_samples import eval_samples
    from cp_assets.defs.evals.models_registry_sensor import sync_model_partitions
    from cp_assets.defs.evals.rollouts import rollouts
    from cp_assets.resources import local_resources

    instance = dg.DagsterInstance.ephemeral()
    sync_model_partitions(instance)
    key = dg.MultiPartitionKey({"eval_set": sys.argv[1], "model": sys.argv[2]})
    config = {"ops": {"rollouts": {"config": json.loads(sys.argv[3])}}}
    result = dg.materialize([eval_samples, rollouts], selection=["rollouts"], partition_key=key, instance=instance,
                            resources=local_resources(), run_config=config)
    sys.exit(0 if result.success else 1)
""")


@pytest.fixture(scope="module")
def fault_env(store, tmp_path_factory):
    """A subprocess environment with the private corpus registry and a models registry holding `smollm2-faults`.
    At the end: the embedded Postgres running, the private splits and the private model's rollouts gone."""
    from cp_assets.lib.corpus import embedded_pg
    from cp_assets.lib.evals.backends.local import model_dir
    from cp_assets.lib.evals.model_registry import load_models
    from cp_assets.lib.reports.results_db import ResultsDB

    where = tmp_path_factory.mktemp("faults")
    (where / "corpora.yaml").write_text(REGISTRY)
    smol = Path(model_dir(load_models().get("smollm2-135m-instruct")))  # converted once, cached across runs
    (where / "models.yaml").write_text(f"models:\n  {FAULT_MODEL}:\n    backend: local\n    path: {smol}\n"
                                       "    chat_template: true\n    batch_size: 2\n")
    yield dict(os.environ, CPROX_HOME=str(TEST_HOME), CPROX_CORPORA=str(where / "corpora.yaml"),
               CPROX_MODELS=str(where / "models.yaml"), OMP_NUM_THREADS="1")
    embedded_pg.start(TEST_HOME)  # whatever a test did to it, the session's server runs on
    for split in (PG_SPLIT, *CONCURRENT):
        store.drop_split(split)
    with ResultsDB().connect() as conn:
        conn.execute("DELETE FROM rollouts WHERE model_id = ?", [FAULT_MODEL])


def start(env: dict, *argv: str) -> subprocess.Popen:
    """A runner in its own process group (so SIGKILL reaches everything it started)."""
    return subprocess.Popen([sys.executable, "-c", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def corpus_result(proc: subprocess.Popen, timeout: float = 300) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill(proc)
    assert proc.returncode == 0 and "RESULT " in out, err[-3000:]
    return json.loads(out.split("RESULT ", 1)[1])


def build_rows(store, split: str) -> int:
    """Rows committed to the split's embedding build table (0 when there is none)."""
    table = f"emb_{SLUG}__{split}__00000__build"
    with store.connect() as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]:
            return 0
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def published(store, split: str) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return conn.execute(f"SELECT chunk_id, text_hash FROM emb_{SLUG} WHERE split = %s ORDER BY chunk_id",
                            (split,)).fetchall()


def chunk_keys(store, split: str) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return conn.execute("SELECT chunk_id, text_hash FROM cprox_chunks WHERE split = %s ORDER BY chunk_id",
                            (split,)).fetchall()


# -- 1. kill -9 mid-rollouts ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_rollouts_then_rerun_has_every_sample_once(fault_env, resources):
    """A run killed (SIGKILL to its process group) after some rollouts are committed leaves only whole rows in the
    results DuckDB; the rerun reuses them, generates exactly the rest, and the table then holds every sample of the
    eval set's first ROLLOUT_LIMIT exactly once."""
    from cp_assets.defs.evals.eval_samples import eval_samples
    from cp_assets.defs.evals.rollouts import rollouts
    from cp_assets.lib.evals.eval_registry import load_evals
    from cp_assets.lib.reports.results_db import ResultsDB
    from cp_assets.lib.evals.generation import SamplingParams
    from cp_assets.resources.llm import LLMResource

    params_hash = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=ROLLOUT_MAX_TOKENS, seed=0).key(None)
    expected = {s.id for s in load_evals().load_samples(ROLLOUT_EVAL, ROLLOUT_LIMIT)}
    db = ResultsDB()
    with db.connect():  # creates the tables in a fresh file
        pass

    def stored() -> tuple[int, set[str]]:
        """(rows, distinct sample ids) of this model and parameters, straight from the table."""
        with db.connect(read_only=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT sample_id FROM rollouts WHERE model_id = ? AND params_hash = ?",
                                              [FAULT_MODEL, params_hash]).fetchall()]
        return len(ids), set(ids)

    assert stored() == (0, set())
    config = {"limit": ROLLOUT_LIMIT, "max_tokens": ROLLOUT_MAX_TOKENS}
    proc = start(fault_env, ROLLOUTS_RUNNER, ROLLOUT_EVAL, FAULT_MODEL, json.dumps(config))
    try:
        deadline = time.monotonic() + 240
        while stored()[0] < 2:  # one batch (2 prompts) committed
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no rollout was committed in time"
            time.sleep(0.1)
    finally:
        kill(proc)
    assert proc.returncode == -signal.SIGKILL
    rows, ids = stored()  # after the kill: what the killed run left
    assert rows == len(ids) and ids < expected and 2 <= rows < ROLLOUT_LIMIT, (rows, ids)

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("models", [FAULT_MODEL])
    key = dg.MultiPartitionKey({"eval_set": ROLLOUT_EVAL, "model": FAULT_MODEL})
    result = dg.materialize([eval_samples, rollouts], selection=["rollouts"], partition_key=key, instance=instance,
                            resources=dict(resources, llm=LLMResource(models_file=fault_env["CPROX_MODELS"])),
                            run_config={"ops": {"rollouts": {"config": config}}})
    [ev] = result.get_asset_materialization_events()
    md = {k: v.value for k, v in ev.materialization.metadata.items()}
    assert (md["skipped_existing"], md["generated"], md["rollouts"]) == (rows, ROLLOUT_LIMIT - rows, ROLLOUT_LIMIT)
    assert md["params_hash"] == params_hash
    assert stored() == (ROLLOUT_LIMIT, expected), "no duplicate or missing rollout"
    kept = db.rollouts(eval_set=ROLLOUT_EVAL, model_id=FAULT_MODEL, params_hash=params_hash)
    assert len(kept) == ROLLOUT_LIMIT
    assert all(r.completion_token_ids and r.correct is not None for r in kept), "every row whole and graded"


# -- 2. Postgres stopped mid-embeddings ----------------------------------------------------------------------------

@pytest.mark.slow
def test_postgres_stopped_mid_embeddings_fails_clearly_then_the_retry_resumes(fault_env, store):
    """Postgres is stopped while `embeddings` runs (some batches committed). The attempt fails with
    `DatabaseUnavailable` naming the embedded server and how to start it (not a bare psycopg error, not masked by the
    build lock's cleanup); PG_RETRY retries the step, the retry's first connection starts the server again, the build
    resumes from the committed batches, and the published split holds every chunk exactly once."""
    from cp_assets.lib.corpus import embedded_pg

    with store.reader() as conn:  # the session store's long-lived reader, opened before the server goes away
        conn.execute("SELECT 1")
    proc = start(fault_env, CORPUS_RUNNER, PG_SPLIT)
    try:
        deadline = time.monotonic() + 240
        while (before := build_rows(store, PG_SPLIT)) < 8:  # one batch of 8 committed
            assert proc.poll() is None, f"the run ended before Postgres was stopped: {proc.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, "no embedding batch was committed in time"
            time.sleep(0.05)
    except BaseException:
        kill(proc)
        raise
    assert embedded_pg.stop(TEST_HOME)
    t_stop = time.time()
    res = corpus_result(proc)  # the test does not touch the database until the run is over

    assert res["success"], res["steps"]
    step = res["steps"]["embeddings"]
    assert step["failures"] == [] and len(step["retries"]) >= 1, step
    first = step["retries"][0]
    assert "DatabaseUnavailable" in first and f"embedded pgserver at {TEST_HOME / 'pg'}" in first, first
    assert "cprox db start" in first and "started again by the next connection" in first, first
    assert step["end"] > t_stop
    assert (TEST_HOME / "pg" / "postmaster.pid").exists(), "the retry started the embedded server again"

    md, keys = res["embeddings"], chunk_keys(store, PG_SPLIT)
    assert md["status"] == "built" and md["chunks"] == len(keys) > before
    assert md["reused"] >= before and md["embedded"] + md["reused"] == len(keys), "resumed, not restarted"
    assert published(store, PG_SPLIT) == keys, "every chunk exactly once"
    assert build_rows(store, PG_SPLIT) == 0
    with store.reader() as conn:  # the long-lived reader reconnects after the restart
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- 3. two partitions at once -------------------------------------------------------------------------------------

def solo_rows(registry_file: str, split: str) -> dict:
    """What a solo run of raw_corpus -> chunks -> embeddings writes for a split: the same library calls the assets
    make (default chunk config), made here in one process."""
    from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_documents
    from cp_assets.lib.corpus.encoder import encode, load_tokenizer
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.core.settings import DEFAULT_EMBED_MODEL
    from cp_assets.lib.corpus.sources import ReadStats, read_split

    docs = list(read_split(load_registry(registry_file), split, ReadStats()))
    chunks = sorted(chunk_documents(docs, load_tokenizer(DEFAULT_EMBED_MODEL), ChunkConfig(128, 16)),
                    key=lambda c: c.chunk_id)
    vectors = encode(DEFAULT_EMBED_MODEL, [c.text for c in chunks])
    return {
        "documents": sorted((d.doc_id, d.source, d.locator, d.byte_offset, hashlib.md5(d.text.encode()).hexdigest())
                            for d in docs),
        "chunks": [(c.chunk_id, c.doc_id, c.idx, c.char_start, c.char_end, c.n_tokens, c.text_hash) for c in chunks],
        "vectors": dict(zip((c.chunk_id for c in chunks), vectors)),
    }


def stored_rows(store, split: str) -> dict:
    from cp_assets.lib.corpus.encoder import model_slug
    from cp_assets.lib.core.settings import DEFAULT_EMBED_MODEL

    with store.connect() as conn:  # sorted here: Postgres's collation need not sort like Python
        docs = conn.execute("SELECT doc_id, source, locator, byte_offset, md5(text) FROM cprox_documents "
                            "WHERE split = %s", (split,)).fetchall()
        chunks = conn.execute("SELECT chunk_id, doc_id, idx, char_start, char_end, n_tokens, text_hash "
                              "FROM cprox_chunks WHERE split = %s", (split,)).fetchall()
        partitions = conn.execute("SELECT kind, n_rows FROM cprox_partitions WHERE split = %s", (split,)).fetchall()
    ids, vecs = store.load_matrix(model_slug(DEFAULT_EMBED_MODEL), split)
    return {"documents": sorted(docs), "chunks": sorted(chunks), "vector_ids": sorted(ids),
            "vectors": dict(zip(ids, vecs)), "partitions": dict(partitions)}


@pytest.mark.slow
def test_two_partitions_materialized_at_once_equal_solo_runs(fault_env, store):
    """Two processes materialize raw_corpus -> chunks -> embeddings for two different splits at the same time (the
    same tables, the same partitioned embedding table, swapped in by DDL on one parent). Both succeed on the first
    attempt (no retry hides a conflict), their runs overlap in time, and each split holds exactly the documents,
    chunks and vectors a solo run writes: no row of one lost, overwritten or taken by the other."""
    procs = {split: start(fault_env, CORPUS_RUNNER, split) for split in CONCURRENT}
    try:
        results = {split: corpus_result(proc) for split, proc in procs.items()}
    finally:
        for proc in procs.values():
            kill(proc)
    a, b = (results[s] for s in CONCURRENT)
    assert max(a["t0"], b["t0"]) < min(a["t1"], b["t1"]), "the two runs overlapped"
    for split, res in results.items():
        assert res["success"], res["steps"]
        for name, step in res["steps"].items():
            assert step["retries"] == [] and step["failures"] == [], (split, name, step)
        assert res["embeddings"]["status"] == "built"

    for split in CONCURRENT:
        want, got = solo_rows(fault_env["CPROX_CORPORA"], split), stored_rows(store, split)
        assert got["documents"] == want["documents"] and len(want["documents"]) > 0, split
        assert got["chunks"] == want["chunks"], split
        n = {"raw_corpus": len(want["documents"]), "chunks": len(want["chunks"]), "embeddings": len(want["chunks"])}
        assert got["partitions"] == n, split
        assert got["vector_ids"] == [c[0] for c in want["chunks"]], split
        cosine = min(float(np.dot(got["vectors"][i], v)) for i, v in want["vectors"].items())
        assert cosine > 0.9999, (split, cosine)
    other = set(stored_rows(store, CONCURRENT[0])["vector_ids"]) & set(stored_rows(store, CONCURRENT[1])["vector_ids"])
    assert other == set(), "no chunk in both splits"
