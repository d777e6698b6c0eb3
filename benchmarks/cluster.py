"""Cluster-tree benchmark: seconds and peak memory of `build_tree` over 100k and 1M embeddings, vs scikit-learn.

Vectors: `search.synthetic` (a 100-component Gaussian mixture in 32 dims, random projection to 384, noise 0.1, unit
norm), chunk ids `d<doc>#<n>` spread over three splits (70 / 20 / 10 %), so the tree is an "all" tree.

Each measurement runs in its own forked child (the vectors, made once by the parent, are shared copy-on-write), so
its peak RSS (VmHWM, the vectors included: ~1.5 GiB at 1M x 384) and CPU seconds are its own:
  build_tree          cp_assets.lib.clusters.tree.build_tree with its defaults (max_depth 4, min_size 25, k in 2..8
                      by silhouette, 20k-member samples, PCA 64, 1 thread); then, in the same child, the storage
                      path of the asset: save_tree (Postgres, binary COPY, one transaction), load_tree,
                      nearest_leaves from the store, export_to_duckdb (the store in a private embedded Postgres)
  BisectingKMeans     sklearn.cluster.BisectingKMeans with as many clusters as the tree has leaves (defaults:
                      biggest_inertia, n_init 1, max_iter 300), on the full matrix
  KMeans (flat)       sklearn.cluster.KMeans with as many clusters as leaves (k-means++, n_init 1, max_iter 300)
The baselines run on the same number of threads as build_tree (--threads), and stop at --baseline-timeout.
Quality, for all three on the same rows: mean cosine distance of a vector to its leaf's (cluster's) unit mean
(lower is tighter), and the silhouette of the leaf labels on a 5,000-vector sample (Euclidean).

    .venv/bin/python benchmarks/cluster.py                         # 100k and 1M (~20 min on 2 cores)
    .venv/bin/python benchmarks/cluster.py --sizes 100000 --skip flat
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SPLITS = ["pretrain"] * 7 + ["midtrain"] * 2 + ["sft"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def gib(kib: int) -> str:
    return f"{kib / 2**20:.2f}"


def in_child(fn, timeout: float):
    """fn() -> dict in a forked child, with its wall/CPU seconds and memory; None when it ran past `timeout`."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def target():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's handler would wait for Python code to run
        rss0, t0, c0 = proc_kib("VmRSS"), time.perf_counter(), C.cpu_seconds()
        out = fn()
        out.update(wall=time.perf_counter() - t0, cpu=C.cpu_seconds() - c0, rss0=rss0,
                   hwm=out.get("hwm", proc_kib("VmHWM")), hwm_all=proc_kib("VmHWM"))
        send.send(out)

    p = ctx.Process(target=target)
    p.start()
    got = recv.recv() if recv.poll(timeout) else None
    if got is None:
        p.terminate()
    p.join()
    if got is None and p.exitcode not in (None, 0, -signal.SIGTERM):
        raise RuntimeError(f"child failed with exit code {p.exitcode}")
    return got


def quality(X: np.ndarray, labels: np.ndarray, n_labels: int, sample: np.ndarray) -> dict:
    """Mean cosine distance to the unit mean of the vector's cluster; silhouette of the labels on `sample`."""
    from sklearn.metrics import silhouette_score

    order = np.argsort(labels, kind="stable")
    ends = np.cumsum(np.bincount(labels, minlength=n_labels))
    sums = np.stack([X[order[e - c:e]].sum(0, dtype=np.float64) for e, c in
                     zip(ends, np.bincount(labels, minlength=n_labels))])
    cent = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    dist = sum(float((1 - np.einsum("ij,ij->i", X[s:s + 65536], cent[labels[s:s + 65536]])).sum())
               for s in range(0, len(X), 65536)) / len(X)
    sil = silhouette_score(X[sample], labels[sample]) if len(np.unique(labels[sample])) > 1 else float("nan")
    return {"spread": dist, "silhouette": float(sil)}


def bench_tree(X, ids, splits, args, home, sample) -> dict:
    from cp_assets.lib.clusters import store as cluster_store
    from cp_assets.lib.clusters.tree import build_tree
    from cp_assets.lib.corpus.pgvector_store import PgStore

    t0 = time.perf_counter()
    tree = build_tree(X, ids, splits, seed=args.seed, threads=args.threads,
                      log=lambda m: log(f"  build_tree: {m}"))
    out = {"build_s": time.perf_counter() - t0, "hwm": proc_kib("VmHWM"), "summary": tree.summary(), "steps": []}
    out.update(quality(X, tree.leaf_of, len(tree.leaf_ids), sample))
    if "store" in args.skip:
        return out
    store = PgStore(home=home)
    with C.Timer() as t:
        store.ensure_schema()
        cluster_store.ensure_schema(store)
    out["steps"].append(["Postgres start + schema", t.s, ""])
    with C.Timer() as t:
        cluster_store.save_tree(store, "all", "bench", tree)
    out["steps"].append(["save_tree (Postgres)", t.s, f"{len(tree.nodes):,} nodes, {len(ids):,} members"])
    with C.Timer() as t:
        back = cluster_store.load_tree(store, "all", "bench")
    same = back.chunk_ids == tree.chunk_ids and np.array_equal(back.leaf_of, tree.leaf_of) and \
        [n.member_hash for n in back.nodes.values()] == [n.member_hash for n in tree.nodes.values()]
    out["steps"].append(["load_tree (Postgres)", t.s, "equal to the built tree" if same else "DIFFERS"])
    q = X[:1000]
    with C.Timer() as t:
        cluster_store.nearest_leaves(store, q, k=3, tree="all", embed_slug="bench")
    out["steps"].append(["nearest_leaves (store, 1,000 queries, k=3)", t.s, ""])
    import duckdb

    with tempfile.TemporaryDirectory(prefix="cprox_bench_cluster_db_") as tmp, \
            duckdb.connect(str(Path(tmp) / "results.duckdb")) as con, C.Timer() as t:
        cluster_store.export_to_duckdb(tree, con, tree="all", embed_model="synthetic")
    out["steps"].append(["export_to_duckdb (results DuckDB)", t.s, ""])
    return out


def bench_sklearn(X, kind: str, n_clusters: int, args, sample) -> dict:
    from sklearn.cluster import BisectingKMeans, KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=args.threads):
        model = (BisectingKMeans if kind == "bisecting" else KMeans)(n_clusters, random_state=args.seed, n_init=1)
        t0 = time.perf_counter()
        model.fit(X)
        out = {"build_s": time.perf_counter() - t0, "hwm": proc_kib("VmHWM")}
        out.update(quality(X, model.labels_.astype(np.int64), n_clusters, sample))
    return out


def run(args, home) -> int:
    from search import synthetic

    print("== cluster tree benchmark: build_tree vs sklearn BisectingKMeans / KMeans ==")
    for line in C.machine_lines({"threads": f"{args.threads} (build_tree and the baselines)"}):
        print(line)
    rows, steps = [], []
    for n in [int(x) for x in args.sizes.split(",") if x]:
        with C.Timer() as t:
            X, _ = synthetic(n, 0, args.dim, args.latent, args.clusters, 1.5, 0.1, args.seed)
            ids = [f"d{i // 5:07d}#{i % 5}" for i in range(n)]
            splits = [SPLITS[i] for i in np.random.default_rng(args.seed).integers(len(SPLITS), size=n)]
        sample = np.sort(np.random.default_rng(args.seed + 1).choice(n, min(n, 5000), replace=False))
        log(f"n = {n:,}: vectors generated in {t.s:.1f}s; parent RSS {gib(proc_kib('VmRSS'))} GiB "
            f"(the {X.nbytes / 2**30:.2f} GiB matrix, ids, splits)")
        log(f"build_tree over {n:,} x {args.dim} ...")
        r = in_child(lambda: bench_tree(X, ids, splits, args, home, sample), args.timeout)
        if r is None:
            rows.append([f"{n:,}", "build_tree", f"> {args.timeout:.0f}", "", "", "", "", "", ""])
            continue
        s = r["summary"]
        log(f"build_tree: {r['build_s']:.1f}s, peak RSS {gib(r['hwm'])} GiB, {s}")
        rows.append([f"{n:,}", "build_tree", f"{r['build_s']:.1f}", f"{r['cpu']:.0f}", gib(r["hwm"]),
                     gib(r["hwm"] - r["rss0"]), f"{s['leaves']} ({s['nodes']} nodes, depth {s['max_depth']})",
                     f"{r['spread']:.4f}", f"{r['silhouette']:.4f}"])
        steps += [[f"{n:,}", a, b, c] for a, b, c in r["steps"]]
        if r["steps"]:
            steps.append([f"{n:,}", "(peak RSS of the child with the storage steps)", None,
                          f"{gib(r['hwm_all'])} GiB"])
        for kind, name in (("bisecting", "BisectingKMeans"), ("flat", "KMeans (flat)")):
            if kind in args.skip:
                continue
            log(f"{name}({s['leaves']}) over {n:,} x {args.dim} (timeout {args.baseline_timeout:.0f}s) ...")
            b = in_child(lambda: bench_sklearn(X, kind, s["leaves"], args, sample), args.baseline_timeout)
            if b is None:
                log(f"{name}: stopped after {args.baseline_timeout:.0f}s")
                rows.append([f"{n:,}", f"sklearn {name}", f"> {args.baseline_timeout:.0f}", "", "", "",
                             str(s["leaves"]), "", ""])
                continue
            log(f"{name}: {b['build_s']:.1f}s, peak RSS {gib(b['hwm'])} GiB")
            rows.append([f"{n:,}", f"sklearn {name}", f"{b['build_s']:.1f}", f"{b['cpu']:.0f}", gib(b["hwm"]),
                         gib(b["hwm"] - b["rss0"]), str(s["leaves"]), f"{b['spread']:.4f}", f"{b['silhouette']:.4f}"])
        del X, ids, splits

    print(f"\nloadavg at the end {C.loadavg()}; vectors: synthetic, {args.clusters}-component mixture in "
          f"{args.latent} dims -> {args.dim}, unit norm, seed {args.seed}")
    print("\nbuild (seconds: wall clock of the fit alone; CPU s: the whole child; peak RSS: VmHWM of the child, the "
          "shared input matrix included; above input: peak minus the child's RSS at the start)")
    print(C.table(["n", "method", "seconds", "CPU s", "peak RSS GiB", "above input GiB", "leaves",
                   "cos dist to leaf mean", "silhouette (5k)"], rows, "llrrrrrrr"))
    if steps:
        print("\nstorage (in the build_tree child, private embedded Postgres)")
        print(C.table(["n", "step", "seconds", "note"],
                      [[a, b, "" if c is None else f"{c:.2f}", d] for a, b, c, d in steps], "llrl"))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="numbers of vectors (default 100000,1000000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the synthetic data (default 32)")
    ap.add_argument("--clusters", type=int, default=100, help="mixture components (default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for every method (default 1)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds for build_tree + storage (default 1800)")
    ap.add_argument("--baseline-timeout", type=float, default=900, help="seconds per baseline fit (default 900)")
    ap.add_argument("--skip", default="", help="comma list of: store, bisecting, flat")
    ap.add_argument("--keep", action="store_true", help="keep the private CPROX_HOME (default: delete it)")
    args = ap.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    sys.stdout.reconfigure(line_buffering=True)
    return C.run_in_private_home("cprox_bench_cluster_", run, args)


if __name__ == "__main__":
    sys.exit(main())
