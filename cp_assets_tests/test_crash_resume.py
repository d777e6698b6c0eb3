"""kill -9 in the middle of embedding a split, then rerun: the split completes with no duplicate or missing rows, and
the published partition is never half-written (a first build publishes nothing until done; a rebuild leaves the old
vectors serving until the new ones are swapped in)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cp_assets_tests.conftest import TEST_HOME

SLUG = "all_minilm_l6_v2"
SPLIT = "crash"

RUNNER = textwrap.dedent("""
    import sys
    import dagster as dg
    from cp_assets.definitions import corpus_assets
    from cp_assets.resources import local_resources
    from cp_assets.resources.encoder import SentenceEncoder

    assets, max_tokens = sys.argv[1].split(","), int(sys.argv[2])
    resources = dict(local_resources(), encoder=SentenceEncoder(batch_size=16, commit_every=16))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus_shards", ["00000"])
    result = dg.materialize(corpus_assets, selection=assets, partition_key=dg.MultiPartitionKey(
                                {"split": "crash", "shard": "00000"}), resources=resources, instance=instance,
                            run_config={"ops": {"chunks": {"config": {"max_tokens": max_tokens}}}}
                            if "chunks" in assets else None)
    for ev in result.get_asset_materialization_events():
        if ev.asset_key.to_user_string() == "embeddings":
            md = ev.materialization.metadata
            print("EMBEDDED", md["embedded"].value, "REUSED", md["reused"].value, "STATUS", md["status"].value)
    sys.exit(0 if result.success else 1)
""")


@pytest.fixture(scope="module")
def crash_env(store, tmp_path_factory):
    """A registry with a `crash` split big enough to be killed mid-way (a few hundred chunks)."""
    registry = tmp_path_factory.mktemp("crash") / "corpora.yaml"
    registry.write_text(textwrap.dedent("""
        splits:
          crash:
            sources:
              - path: gsm8k/train.jsonl.gz
                name: gsm8k
                template: "User: {question}\\nAssistant: {answer}"
                limit: 150
    """))
    yield dict(os.environ, CPROX_CORPORA=str(registry), CPROX_HOME=str(TEST_HOME))
    store.drop_split(SPLIT)
    assert store.count("chunks", SPLIT) == 0 and published(store) == []


def start(env, assets: str, max_tokens: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER, assets, str(max_tokens)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def build_rows(store) -> int:
    with store.connect() as conn:
        if not conn.execute("SELECT to_regclass(%s)", (f"emb_{SLUG}__{SPLIT}__00000__build",)).fetchone()[0]:
            return 0
        return conn.execute(f'SELECT count(*) FROM "emb_{SLUG}__{SPLIT}__00000__build"').fetchone()[0]


def published(store) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return conn.execute(f"SELECT chunk_id, text_hash FROM emb_{SLUG} WHERE split = %s ORDER BY chunk_id",
                            (SPLIT,)).fetchall()


def chunk_keys(store) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return conn.execute("SELECT chunk_id, text_hash FROM cprox_chunks WHERE split = %s ORDER BY chunk_id",
                            (SPLIT,)).fetchall()


def kill_mid_embedding(store, proc: subprocess.Popen, at_least: int = 48, timeout: float = 240) -> int:
    """SIGKILL the run once some batches are committed to the build table (and before it finishes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = build_rows(store)
        if n >= at_least:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return n
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no embedding batch was committed in time")


def finish(env, assets: str, max_tokens: int) -> str:
    proc = start(env, assets, max_tokens)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


@pytest.mark.slow
def test_kill_9_mid_embedding_then_rerun_completes_the_split(store, crash_env):
    # 1. first build, killed: nothing is published, committed batches stay in the build table
    proc = start(crash_env, "raw_corpus,chunks,embeddings", 128)
    done_before_kill = kill_mid_embedding(store, proc)
    assert proc.returncode == -signal.SIGKILL
    n_chunks = len(chunk_keys(store))
    assert 0 < done_before_kill < n_chunks
    assert published(store) == [], "a killed first build publishes nothing"

    # 2. rerun: resumes from the committed batches and publishes every chunk exactly once
    out = finish(crash_env, "embeddings", 128)
    embedded = int(out.split("EMBEDDED ")[1].split()[0])
    reused = int(out.split("REUSED ")[1].split()[0])
    assert reused >= done_before_kill and embedded + reused == n_chunks
    assert published(store) == chunk_keys(store), "no duplicate or missing rows"
    assert build_rows(store) == 0
    old = published(store)

    # 3. a rebuild (new chunk size) killed mid-way leaves the old vectors serving, untouched
    finish(crash_env, "chunks", 96)
    unchanged = len(set(old) & set(chunk_keys(store)))  # chunks the rebuild may reuse without encoding
    proc = start(crash_env, "embeddings", 96)
    kill_mid_embedding(store, proc, at_least=unchanged + 32)
    assert published(store) == old
    assert store.count("embeddings", SPLIT, SLUG) == len(old)

    # 4. rerun the rebuild: the split now matches the new chunks exactly
    out = finish(crash_env, "embeddings", 96)
    assert "STATUS built" in out and int(out.split("REUSED ")[1].split()[0]) >= unchanged + 32
    new = published(store)
    assert new == chunk_keys(store) and new != old and len(new) == len(set(new))
    assert build_rows(store) == 0
