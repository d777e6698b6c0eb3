"""`kill -9` of `cprox materialize --workers 2` over three shards of a split, once one shard is done and another is
embedding, then the same command again: the rerun reaps the dead runs and completes
every other shard exactly once (one document per record, one vector per chunk, the n-gram index equal to the corpus).
The finished shards' vectors are kept; their documents and chunks are read again (the same rows)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from cp_assets_tests.celery_cluster import local_instance
from cp_assets_tests.test_cli_kill_rerun import gpu_holder, kill_group_when

CPROX = Path(sys.executable).parent / "cprox"
SPLIT, SHARDS = "sharded_kill", ["00000", "00001", "00002"]
SLUG = "all_minilm_l6_v2"


def shard_rows(store, table: str, key: str, shard: str) -> list[str]:
    with store.connect() as conn:
        return [r[0] for r in conn.execute(f"SELECT {key} FROM {table} WHERE split = %s AND shard = %s "
                                           f"ORDER BY {key}", (SPLIT, shard))]


def versions(store) -> dict:
    return {(p["kind"], p["shard"]): (p["version"], p["updated_at"]) for p in store.shard_partitions()
            if p["split"] == SPLIT}


@pytest.mark.slow
def test_kill_9_mid_shard_then_rerun_completes_each_shard_once(store, tmp_path):
    from cp_assets.lib.corpus.exact.ngram_split import drop_split_index

    home = tmp_path / "dagster_home"
    local_instance(home).dispose()  # the storage exists before two processes open it
    env = dict(os.environ, DAGSTER_HOME=str(home))
    cmd = [str(CPROX), "materialize", "--split", SPLIT, "--workers", "2", "--log-level", "WARNING"]
    cmd += [a for s in SHARDS for a in ("--shard", s)]
    inst = dg.DagsterInstance.from_config(str(home))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    done = lambda: inst.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))  # noqa: E731
    kill_group_when(proc, lambda: done() and gpu_holder(inst), "never had one shard done and one embedding",
                    timeout_s=300)
    finished = {r.tags["dagster/partition/shard"] for r in done()}
    killed = gpu_holder(inst)
    assert inst.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED and finished
    before = versions(store)

    try:
        rerun = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired as exc:  # say who holds the gpu slot and what the rerun printed (its watcher)
        info = inst.event_log_storage.get_concurrency_info("gpu")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        pytest.fail(f"rerun still running after 400 s; gpu slots {info.claimed_slots}, pending {info.pending_steps}; "
                    f"its stderr ends:\n{err[-3000:]}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"marked run {killed} failed: its process is gone" in rerun.stderr
    assert inst.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE and gpu_holder(inst) is None
    rows = {r["shard"]: r for r in json.loads(rerun.stdout)}
    assert sorted(rows) == SHARDS
    for shard, row in rows.items():
        assert row["ok"] and len(row["checks"]) == 4 and all(row["checks"].values()), (shard, row)
        docs = shard_rows(store, "cprox_documents", "doc_id", shard)
        assert len(docs) == len(set(docs)) == (31 if int(shard) < 5 else 30), shard
        chunks = shard_rows(store, "cprox_chunks", "chunk_id", shard)
        assert shard_rows(store, f"emb_{SLUG}", "chunk_id", shard) == chunks, f"one vector per chunk of {shard}"
        emb = row["embeddings"]
        if shard in finished:
            assert emb["status"] == "up_to_date", (shard, emb)  # left alone
        else:
            assert emb["embedded"] + emb["reused"] == len(chunks), (shard, emb)
    # the finished shards' vectors were kept (their documents and chunks are read again: same rows, new versions)
    after = versions(store)
    kept = lambda v: {k: x for k, x in v.items() if k[1] in finished and k[0] == "embeddings"}  # noqa: E731
    assert kept(after) == kept(before) and len(kept(before)) == len(finished)
    store.drop_split(SPLIT)
    drop_split_index(SPLIT)
