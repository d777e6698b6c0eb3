"""Shards over workers: wall time of one split of 16 shards materialized four ways, in one run on one machine.

The split: 16 JSONL files (GSM8K train conversations, `--docs` per file, written under a private CPROX_HOME), each its
own shard (`shard_bytes: 1`). Every mode materializes the same files as its own split (bench_<mode>), so no mode
reuses another's vectors; each builds raw_corpus, chunks, embeddings and ngram_index with their checks (6 steps per
shard: the 4 assets, the n-gram check, one step for the 3 embedding checks; 8 before 2026-12-04's merge of those):

  inprocess  `cprox materialize` without --workers: the shards one after another, in this process (the baseline)
  workers1   `--workers 1`: each shard a Dagster run through the multiprocess executor (a forked step process per
             step), one run at a time: the per-step cost of process isolation against `inprocess`
  workers2   `--workers 2`: the same, two runs at a time (2 processes; the `gpu` pool keeps embedding steps one at a time)
  celery     CPROX_EXECUTOR=celery: the runs' steps as Celery tasks on two single-process dagster-celery workers
             (`cpu` on queue dagster, `gpu` on queue gpu), Redis on loopback, Postgres run storage; 2 runs in flight

Printed: wall seconds, shards/min, speedup against workers1, overhead per step against inprocess, and the documents,
chunks and vectors each mode wrote (equal across modes, or the run fails).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/shards.py            # 16 shards x 100 documents, ~10 min here
    .venv/bin/python benchmarks/shards.py --modes inprocess,workers2  # a subset
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import _common as C

MODES = ("inprocess", "workers1", "workers2", "celery")
STEPS_PER_SHARD = 6  # 4 assets, the n-gram check, one step of the 3 embedding checks


def write_shards(folder: Path, shards: int, docs: int, data_dir: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(data_dir / "gsm8k" / "train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(shards * docs), fh)]
    if len(rows) < shards * docs:
        raise SystemExit(f"GSM8K train has {len(rows)} items, fewer than {shards} x {docs}")
    for f in range(shards):
        part = rows[f * docs:(f + 1) * docs]
        (folder / f"part-{f:02d}.jsonl").write_text("".join(
            json.dumps({"id": f"g{f * docs + i}", "text": f"User: {r['question']}\nAssistant: {r['answer']}"}) + "\n"
            for i, r in enumerate(part)))


def write_registry(path: Path, folder: Path) -> None:
    path.write_text("splits:\n" + "".join(
        f"  bench_{mode}:\n    shard_bytes: 1\n    sources:\n      - path: {folder}/\n        name: gsm\n"
        "        text_field: text\n        id_field: id\n" for mode in MODES))


def run_mode(mode: str, home: Path, store) -> dict:
    import dagster as dg

    from cp_assets.cli.common import materialize
    from cp_assets.cli.fanout import run_many
    from cp_assets.defs.core.partitions import corpus_key
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.shards import shard_keys
    from cp_assets_tests.celery_cluster import celery_cluster, local_instance

    split = f"bench_{mode}"
    shards = shard_keys(load_registry())[split]
    keys = [corpus_key(split, s) for s in shards]
    names = ["raw_corpus", "chunks", "embeddings", "ngram_index"]
    t0 = time.perf_counter()
    if mode == "celery":
        from cp_assets.lib.corpus import embedded_pg

        saved = dict(os.environ)
        with celery_cluster(home / "celery", embedded_pg.start(home)) as cluster:
            os.environ.update({k: cluster.env[k] for k in ("CPROX_EXECUTOR", "CPROX_CELERY_BROKER",
                                                           "CPROX_CELERY_BACKEND", "DAGSTER_HOME")})
            try:
                inst = dg.DagsterInstance.from_config(str(cluster.dagster_home))
                inst.add_dynamic_partitions("corpus_shards", shards)
                t0 = time.perf_counter()  # the workers are up: time the runs, not the cluster's start
                outcomes = run_many(inst, keys, workers=2)
                wall = time.perf_counter() - t0
            finally:
                os.environ.clear()
                os.environ.update(saved)
    else:
        inst = local_instance(home / f"dagster_{mode}")
        inst.add_dynamic_partitions("corpus_shards", shards)
        if mode == "inprocess":
            outcomes = {str(k): materialize(inst, names, k) for k in keys}
        else:
            outcomes = run_many(inst, keys, workers=int(mode[-1]))
        wall = time.perf_counter() - t0
    bad = [k for k, o in outcomes.items() if not o.ok or not all(o.checks.values())]
    if bad:
        raise SystemExit(f"{mode}: shard runs failed: {bad}")
    return {"mode": mode, "wall": wall, "shards": len(keys), "documents": store.count("raw_corpus", split),
            "chunks": store.count("chunks", split), "vectors": len(store.load_matrix("all_minilm_l6_v2", split)[0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--docs", type=int, default=100, help="documents per shard (GSM8K conversations)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown modes {sorted(unknown)}: choose from {MODES}")
    return C.run_in_private_home("cprox_bench_shards_", lambda a, home: _run(home, a, modes), args)


def _run(home: Path, args, modes: list[str]) -> int:
    from cp_assets.lib.core import settings

    data_dir = settings.data_dir()
    folder = home / "shards"
    write_shards(folder, args.shards, args.docs, data_dir)
    os.environ["CPROX_CORPORA"] = str(home / "corpora.yaml")
    os.environ["CPROX_DATA_DIR"] = str(data_dir)
    write_registry(home / "corpora.yaml", folder)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # cp_assets_tests (the celery cluster)
    from cp_assets.lib.corpus.pgvector_store import PgStore

    store = PgStore(home=home)
    store.ensure_schema()
    print("\n".join(C.machine_lines({"shards": f"{args.shards} x {args.docs} GSM8K conversations"})))
    results = []
    for mode in modes:
        print(f"\n{mode} ...", flush=True)
        results.append(run_mode(mode, home, store))
        print(f"{mode}: {results[-1]['wall']:.1f} s (load {C.loadavg()})", flush=True)
    by = {r["mode"]: r for r in results}
    counts = {(r["documents"], r["chunks"], r["vectors"]) for r in results}
    if len(counts) != 1:
        raise SystemExit(f"modes wrote different rows: {[(r['mode'], r['documents'], r['chunks'], r['vectors']) for r in results]}")
    rows = []
    for r in results:
        speedup = by["workers1"]["wall"] / r["wall"] if "workers1" in by else None
        overhead = ((r["wall"] - by["inprocess"]["wall"]) / (r["shards"] * STEPS_PER_SHARD)
                    if "inprocess" in by and r["mode"] != "inprocess" else None)
        rows.append([r["mode"], f"{r['wall']:.1f}", f"{r['shards'] / r['wall'] * 60:.1f}",
                     f"{speedup:.2f}" if speedup else "-", f"{overhead:+.2f}" if overhead is not None else "-",
                     str(r["documents"]), str(r["chunks"]), str(r["vectors"])])
    print()
    print(C.table(["mode", "wall s", "shards/min", "speedup vs workers1", "overhead s/step vs inprocess",
                   "documents", "chunks", "vectors"], rows))
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load {C.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
