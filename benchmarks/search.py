"""Search benchmark: recall@k, queries/s and per-query latency of every search path, on the same vectors.

Vectors (unit length, cosine = inner product):
  default  synthetic, of low intrinsic dimension: a Gaussian mixture in a `--latent`-dim space, projected to `--dim`
           by a random matrix, normalized, plus a little isotropic noise, normalized again. (HNSW recall on pure
           Gaussian random vectors is meaningless: ~0.05; real sentence embeddings have low intrinsic dimension.)
  --real   MiniLM embeddings of chunks of a registry split (slow: ~35 chunks/s on 2 cores; cached under /tmp).
Queries are fresh draws from the same distribution (held-out chunks with --real), never base vectors.
Ground truth: exact inner product (numpy matmul + argpartition, float32).

Loaded into a private embedded Postgres through PgStore exactly like the `embeddings` asset does: chunk rows
(replace_chunks, needed because search joins cprox_chunks), ensure_embedding_table, prepare_build, write_build
(binary COPY, in batches), publish_build (HNSW cosine index, m / ef_construction, then the partition swap).

Measured, all with k = `--k`:
  pgvector, not analyzed  PgStore.search right after publish_build, before any ANALYZE. The planner then guesses
                     0.5% of the rows for `split = ...` and, below a few tens of thousands of rows (20k: yes, 100k:
                     no), prefers a bitmap scan + sort (exact, slow) to the HNSW index; the row is shown only when
                     the plan has no HNSW scan. Then the benchmark runs ANALYZE and VACUUM itself (timed), so that
                     autovacuum does not do it in the middle of the measurements.
  pgvector HNSW      PgStore.search (pipelined batch; per-query latency = one call per query, on the store's
                     long-lived reader connection; a fresh process pays one connect more), for each --ef value
  pgvector raw SQL   `ORDER BY embedding <=> q LIMIT k` on the partition over one open connection (the index alone)
  pgvector exact     PgStore.search(exact=True): sequential scan (a sample of queries at large n)
  FAISS IndexFlatIP, FAISS IndexHNSWFlat (M=--m, efConstruction=--efc, like pgvector), for each --ef
  memory engine      cp_assets.lib.corpus.search.memory_search (what search(engine='memory') calls after encoding): FAISS
                     HNSW (M=32, efC=80, its own settings) or flat (exact=True) over the split copied out of pgvector,
                     all queries in one call; the first call (copy + build + cache write) is reported as a build.

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/search.py              # 100k
    .venv/bin/python benchmarks/search.py --n 1000000 --maintenance-work-mem 4GB                    # 1M
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

import _common as C

SLUG, SPLIT = "synthetic_bench", "synth"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def chunk_id(i: int) -> str:
    return f"v{i:08d}"


def ids_to_rows(hits_per_query) -> list[list[int]]:
    return [[int(h.chunk_id[1:]) for h in hits] for hits in hits_per_query]


# -- vectors ------------------------------------------------------------------------------------------------------------
def synthetic(n: int, nq: int, dim: int, latent: int, clusters: int, spread: float, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)
    proj = (rng.standard_normal((latent, dim)) / np.sqrt(latent)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 100_000):
            b = min(s + 100_000, m) - s
            z = centers[rng.integers(clusters, size=b)] + spread * rng.standard_normal((b, latent), dtype=np.float32)
            x = z @ proj
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x += (noise / np.sqrt(dim)) * rng.standard_normal((b, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s:s + b] = x
        return out

    return draw(n), draw(nq)


def real_vectors(split: str, n: int, nq: int, seed: int, model: str):
    """MiniLM embeddings of n + nq random chunks of a registry split (cached under /tmp)."""
    import random
    from pathlib import Path

    from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_documents
    from cp_assets.lib.corpus.encoder import encode, load_tokenizer, model_slug
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.sources import read_split

    chunks = list(chunk_documents(read_split(load_registry(), split), load_tokenizer(model), ChunkConfig()))
    total = min(n + nq, len(chunks))
    if total < n + nq:
        n = total - nq
        log(f"split {split!r} has only {len(chunks):,} chunks: n = {n:,}")
    cache = Path(f"/tmp/cprox_bench_real_{model_slug(model)}_{split}_{total}_{seed}.npy")
    if cache.exists():
        vecs = np.load(cache)
        log(f"real vectors from cache {cache}")
    else:
        picked = random.Random(seed).sample(chunks, total)
        log(f"embedding {total:,} chunks of {split!r} with {model} (cached to {cache})")
        t0 = time.perf_counter()
        vecs = encode(model, [c.text for c in picked], batch_size=32)
        log(f"embedded in {time.perf_counter() - t0:.0f}s")
        np.save(cache, vecs)
    return vecs[:n], vecs[n:n + nq]


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, block: int = 50_000) -> np.ndarray:
    """Row indices of the k largest inner products per query, best first."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for s in range(0, len(base), block):
        sims = queries @ base[s:s + block].T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        cand_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, top, 1), np.take_along_axis(cand_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def recall(found, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(list(f)[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


# -- the store ----------------------------------------------------------------------------------------------------------
def make_store(home, mwm: str | None):
    import psycopg

    from cp_assets.lib.corpus.pgvector_store import PgStore

    class BenchConnection(psycopg.Connection):
        """Remembers PgStore.search's last query (to EXPLAIN it) and, with --maintenance-work-mem, replaces
        publish_build's hard-coded `SET maintenance_work_mem = '512MB'` (publish_build has no parameter for it)."""
        __slots__ = ()

        def execute(self, query, params=None, **kw):
            if mwm and isinstance(query, str) and query.startswith("SET maintenance_work_mem"):
                query = f"SET maintenance_work_mem = '{mwm}'"
            if isinstance(params, dict) and "cand" in params:
                BenchStore.last_search = (query, params)
            return super().execute(query, params, **kw)

    class BenchStore(PgStore):
        """PgStore that records server notices (e.g. the HNSW graph outgrowing maintenance_work_mem)."""
        notices: list[str] = []
        last_search = None

        def connect(self, autocommit: bool = False):
            conn = super().connect(autocommit)
            conn.add_notice_handler(lambda d: self.notices.append(
                f"{d.severity}: {d.message_primary}" + (f" / {d.message_detail}" if d.message_detail else "")
                + (f" / {d.message_hint}" if d.message_hint else "")))
            conn.__class__ = BenchConnection  # same layout (no slots added): only execute() differs
            return conn

        def search_plan(self, ef_search: int, exact: bool = False) -> str:
            """The plan of the last PgStore.search query, in short: its scan and sort nodes, outermost first."""
            from psycopg import sql

            query, params = self.last_search
            with self.connect() as conn:
                conn.execute(f"SET hnsw.ef_search = {int(ef_search)}")
                conn.execute(f"SET enable_indexscan = {'off' if exact else 'on'}")  # as PgStore.search does
                lines = [r[0].strip().removeprefix("->").strip() for r in conn.execute(sql.SQL("EXPLAIN ") + query,
                                                                                        params)]
            return " > ".join(ln.split("  (")[0] for ln in lines
                              if "Scan" in ln or (ln.startswith("Sort") and not ln.startswith(("Sort Key", "Sort Meth"))))

    return BenchStore(home=home)


def timed_calls(fn, items) -> tuple[list[float], list]:
    """Per-call seconds and results of fn(item) for each item."""
    secs, out = [], []
    for it in items:
        t0 = time.perf_counter()
        out.append(fn(it))
        secs.append(time.perf_counter() - t0)
    return secs, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="base vectors (default 100000)")
    ap.add_argument("--nq", type=int, default=1000, help="queries (default 1000)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the synthetic data (default 32)")
    ap.add_argument("--clusters", type=int, default=100, help="mixture components (default 100)")
    ap.add_argument("--spread", type=float, default=1.5, help="within-component sd relative to the centers' (1.5)")
    ap.add_argument("--noise", type=float, default=0.1, help="norm of the isotropic 384-dim noise (default 0.1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real", nargs="?", const="pretrain", default=None, metavar="SPLIT",
                    help="real MiniLM embeddings of chunks of SPLIT (default pretrain) instead of synthetic vectors")
    ap.add_argument("--ef", default="40,100,200", help="ef_search / efSearch values (default 40,100,200)")
    ap.add_argument("--m", type=int, default=16, help="HNSW m for pgvector and FAISS HNSW (publish_build default 16)")
    ap.add_argument("--efc", type=int, default=64, help="HNSW ef_construction (publish_build default 64)")
    ap.add_argument("--maintenance-work-mem", default=None, metavar="SIZE",
                    help="override publish_build's hard-coded SET maintenance_work_mem = '512MB' (e.g. 4GB)")
    ap.add_argument("--exact-queries", type=int, default=None,
                    help="queries for pgvector exact (default: all up to 2e7/n, at least 10)")
    ap.add_argument("--latency-queries", type=int, default=200, help="single-query calls per method (default 200)")
    ap.add_argument("--batch-repeats", type=int, default=3,
                    help="runs of each all-queries call, median reported (default 3; 1 for exact pgvector)")
    ap.add_argument("--faiss-threads", type=int, default=None,
                    help="FAISS OpenMP threads (default: all cores; 1 is steadier when other processes compete)")
    ap.add_argument("--copy-batch", type=int, default=50_000, help="rows per write_build call (default 50000)")
    ap.add_argument("--skip", default="", help="comma list of: pgvector, pg-exact, faiss-hnsw, memory")
    ap.add_argument("--keep", action="store_true", help="keep the private CPROX_HOME (default: delete it)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    return C.run_in_private_home("cprox_bench_search_", run, args)


def run(args, home) -> int:
    import faiss

    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.chunking import Chunk
    from cp_assets.lib.corpus.pgvector_store import shard_table
    from cp_assets.lib.corpus.search import memory_search

    if args.faiss_threads:
        faiss.omp_set_num_threads(args.faiss_threads)
    k, efs, skip = args.k, [int(x) for x in args.ef.split(",") if x], set(filter(None, args.skip.split(",")))
    build: list[list] = []    # [what, seconds, note]
    results: list[list] = []  # [method, setting, queries, q/s, p50 ms, p95 ms, recall]
    notes: list[str] = []     # query plans and the like

    def add(method, setting, nq, batch_s, lat_s, rec):
        results.append([method, setting, f"{nq:,}", f"{nq / batch_s:,.1f}" if batch_s else "",
                        f"{C.pct(lat_s, 50) * 1e3:.2f}" if lat_s else "", f"{C.pct(lat_s, 95) * 1e3:.2f}" if lat_s else "",
                        f"{rec:.4f}"])
        log(f"{method} [{setting}]: {nq / batch_s if batch_s else float('nan'):,.1f} q/s, recall@{k} {rec:.4f}"
            + (f", p50 {C.pct(lat_s, 50) * 1e3:.2f} ms, p95 {C.pct(lat_s, 95) * 1e3:.2f} ms" if lat_s else ""))

    print("== search benchmark: pgvector HNSW / exact, FAISS flat / HNSW, the memory engine ==")
    # -- vectors and ground truth -----------------------------------------------------------------------------------
    with C.Timer() as t:
        if args.real:
            base, queries = real_vectors(args.real, args.n, args.nq, args.seed, settings.embed_model())
            desc = f"real {settings.embed_model()} embeddings of split {args.real!r} chunks"
        else:
            base, queries = synthetic(args.n, args.nq, args.dim, args.latent, args.clusters, args.spread,
                                      args.noise, args.seed)
            desc = (f"synthetic: {args.clusters}-component Gaussian mixture in {args.latent} dims (spread "
                    f"{args.spread}) -> random projection to {args.dim}, noise {args.noise}, unit norm, seed {args.seed}")
    n, nq, dim = len(base), len(queries), base.shape[1]
    build.append(["vectors generated" if not args.real else "vectors (real)", t.s, f"{n:,} x {dim} + {nq:,} queries"])
    log(f"{n:,} base vectors, {nq:,} queries, dim {dim}: {desc}")

    with C.Timer() as t:
        truth, truth_s = exact_topk(base, queries, k)
    gt_s = t.s
    log(f"ground truth (numpy exact) in {gt_s:.1f}s; cosine similarity of top-1 mean {truth_s[:, 0].mean():.3f}, "
        f"of top-{k} mean {truth_s[:, -1].mean():.3f}; random pair mean {float((queries[:200] @ base[:200].T).mean()):.3f}")
    add("numpy matmul + argpartition", "exact (ground truth)", nq, gt_s, None, 1.0)

    lat_idx = list(range(min(args.latency_queries, nq)))
    nex = args.exact_queries or max(10, min(nq, int(2e7 / n)))
    lat_brute = list(range(min(args.latency_queries, nq, max(20, int(2e7 / n)))))  # single calls of brute force

    def batch(fn, reps: int = args.batch_repeats):
        """Median seconds of `reps` runs of fn() (all queries in one call), and the last result."""
        secs, out = [], None
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn()
            secs.append(time.perf_counter() - t0)
        return C.median(secs), out

    store = make_store(home, args.maintenance_work_mem)
    with C.Timer() as t:
        store.ensure_schema()
    for line in C.machine_lines({
        "database": f"{C.pg_versions(store)}; private CPROX_HOME {home} (started in {t.s:.1f}s)",
        "faiss": f"{faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads; numpy {np.__version__}",
        "HNSW": f"pgvector and FAISS HNSW m={args.m}, ef_construction={args.efc}; memory engine M=32, efC=80 "
                f"(its own); maintenance_work_mem {args.maintenance_work_mem or '512MB (publish_build default)'}",
    }):
        print(line)

    # -- pgvector: load and index -----------------------------------------------------------------------------------
    if "pgvector" not in skip:
        with C.Timer() as t:
            store.replace_chunks(SPLIT, (Chunk(chunk_id(i), f"d{i // 1000:05d}", SPLIT, i % 1000, 0, 0, 0, "")
                                         for i in range(n)))
        build.append(["pgvector: chunk rows (replace_chunks COPY)", t.s, f"{n / t.s:,.0f} rows/s (search joins them)"])
        log(f"chunk rows in {t.s:.1f}s")
        store.ensure_embedding_table(SLUG, "synthetic", dim)
        store.prepare_build(SLUG, SPLIT, dim)
        with C.Timer() as t:
            for s in range(0, n, args.copy_batch):
                e = min(s + args.copy_batch, n)
                store.write_build(SLUG, SPLIT, [chunk_id(i) for i in range(s, e)], ["-"] * (e - s), base[s:e])
        build.append(["pgvector: vectors (write_build binary COPY)", t.s,
                      f"{n / t.s:,.0f} rows/s, batches of {args.copy_batch:,}"])
        log(f"vectors COPY in {t.s:.1f}s; building the HNSW index (publish_build) ...")
        store.notices.clear()
        with C.Timer() as t:
            store.publish_build(SLUG, SPLIT, expected=n, m=args.m, ef_construction=args.efc)
        with store.connect() as conn:
            isz = conn.execute("SELECT pg_relation_size(%s)", (shard_table(SLUG, SPLIT, "00000") + "_hnsw",)).fetchone()[0]
            tsz = conn.execute("SELECT pg_table_size(%s)", (shard_table(SLUG, SPLIT, "00000"),)).fetchone()[0]
        pg_notes = "; ".join(x for x in dict.fromkeys(store.notices) if "does not exist, skipping" not in x) \
            or "no server notices"
        build.append(["pgvector: HNSW index + swap (publish_build)", t.s,
                      f"index {isz / 2**20:,.0f} MiB, table {tsz / 2**20:,.0f} MiB; {pg_notes}"])
        log(f"HNSW index built in {t.s:.1f}s ({isz / 2**20:,.0f} MiB); {pg_notes}")

        # -- pgvector: search ---------------------------------------------------------------------------------------
        with C.Timer() as t:
            for _ in range(20):
                store.connect().close()
        build.append(["PgStore.connect() (connect + register_vector)", t.s / 20, f"{t.s / 20 * 1e3:.1f} ms per "
                      "connection; memory_search opens two per call (partition_version, chunk_texts), PgStore.search "
                      "reuses its reader connection"])
        with store.connect() as conn:
            st = conn.execute("SELECT c.reltuples::bigint, s.last_analyze, s.last_autoanalyze, s.n_mod_since_analyze "
                              "FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = %s",
                              (shard_table(SLUG, SPLIT, "00000"),)).fetchone()
        notes.append(f"partition statistics right after publish_build: reltuples {st[0]}, last_analyze {st[1]}, "
                     f"last_autoanalyze {st[2]}, rows modified since analyze {st[3]}")
        store.search(SLUG, queries[:1], split=SPLIT, k=k, ef_search=100)
        plan = store.search_plan(100)
        notes.append(f"PgStore.search right after publish_build: {plan}")
        if "hnsw" not in plan:  # what a search right after publish_build gets, until (auto)ANALYZE runs
            secs, hits = batch(lambda: store.search(SLUG, queries[:nex], split=SPLIT, k=k, ef_search=100), 1)
            lat, _ = timed_calls(lambda i: store.search(SLUG, queries[i:i + 1], split=SPLIT, k=k, ef_search=100),
                                 lat_brute[:50])
            add("pgvector, PgStore.search, not analyzed", "ef_search=100", nex, secs, lat,
                recall(ids_to_rows(hits), truth[:nex], k))
        # publish_build runs neither ANALYZE nor VACUUM; autovacuum would, in the background, in the middle of the
        # measurements below (an insert-triggered VACUUM also scans the HNSW index). Do both now, timed.
        with store.connect(autocommit=True) as conn:
            with C.Timer() as t:
                conn.execute(f'ANALYZE "{shard_table(SLUG, SPLIT, "00000")}"')
            build.append(["pgvector: ANALYZE the partition (publish_build does not)", t.s, ""])
            with C.Timer() as t:
                conn.execute(f'VACUUM "{shard_table(SLUG, SPLIT, "00000")}"')
                conn.execute("VACUUM ANALYZE cprox_chunks")
            build.append(["pgvector: VACUUM partition + chunks (else autovacuum's job)", t.s,
                          "run now so that autovacuum does not compete with the measurements"])
        store.search(SLUG, queries[:1], split=SPLIT, k=k, ef_search=100)
        notes.append(f"PgStore.search after ANALYZE: {store.search_plan(100)}")
        store.search(SLUG, queries[:200], split=SPLIT, k=k, ef_search=max(efs))  # warm caches
        for ef in efs:
            secs, hits = batch(lambda: store.search(SLUG, queries, split=SPLIT, k=k, ef_search=ef))
            lat, _ = timed_calls(lambda i: store.search(SLUG, queries[i:i + 1], split=SPLIT, k=k, ef_search=ef),
                                 lat_idx)
            add("pgvector HNSW, PgStore.search", f"ef_search={ef}", nq, secs, lat, recall(ids_to_rows(hits), truth, k))
        with store.connect() as conn:
            q_sql = f'SELECT chunk_id FROM "{shard_table(SLUG, SPLIT, "00000")}" ORDER BY embedding <=> %s LIMIT {k}'
            plan = " > ".join(r[0].strip().removeprefix("->").strip().split("  (")[0]
                              for r in conn.execute("EXPLAIN " + q_sql, (queries[0],)) if "Scan" in r[0])
            notes.append(f"raw SQL `{q_sql.replace('%s', 'q')}`: {plan}")
            for ef in efs:
                conn.execute(f"SET hnsw.ef_search = {ef}")
                lat, rows = timed_calls(lambda q: conn.execute(q_sql, (q,)).fetchall(), queries)
                add("pgvector HNSW, raw SQL, 1 connection", f"ef_search={ef}", nq, sum(lat), lat,
                    recall([[int(r[0][1:]) for r in rr] for rr in rows], truth, k))
        if "pg-exact" not in skip:
            secs, hits = batch(lambda: store.search(SLUG, queries[:nex], split=SPLIT, k=k, exact=True), 1)
            notes.append(f"PgStore.search(exact=True): {store.search_plan(100, exact=True)}")
            lat, _ = timed_calls(lambda i: store.search(SLUG, queries[i:i + 1], split=SPLIT, k=k, exact=True),
                                 lat_brute[:50])
            add("pgvector exact (seq scan), PgStore.search", "exact=True", nex, secs, lat,
                recall(ids_to_rows(hits), truth[:nex], k))

    # -- FAISS --------------------------------------------------------------------------------------------------------
    with C.Timer() as t:
        flat = faiss.IndexFlatIP(dim)
        flat.add(base)
    build.append(["FAISS IndexFlatIP add", t.s, ""])
    flat.search(queries[:50], k)  # warm-up
    secs, (_, found) = batch(lambda: flat.search(queries, k))
    lat, _ = timed_calls(lambda q: flat.search(q[None], k), queries[lat_brute])
    add("FAISS IndexFlatIP", "exact", nq, secs, lat, recall(found, truth, k))
    del flat
    gc.collect()

    if "faiss-hnsw" not in skip:
        log(f"building FAISS IndexHNSWFlat(M={args.m}, efC={args.efc}) ...")
        with C.Timer() as t:
            hnsw = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = args.efc
            hnsw.add(base)
        build.append([f"FAISS IndexHNSWFlat(M={args.m}, efC={args.efc}) add", t.s, ""])
        log(f"FAISS HNSW built in {t.s:.1f}s")
        for ef in efs:
            hnsw.hnsw.efSearch = ef
            secs, (_, found) = batch(lambda: hnsw.search(queries, k))
            lat, _ = timed_calls(lambda q: hnsw.search(q[None], k), queries[lat_idx])
            add(f"FAISS IndexHNSWFlat M={args.m}", f"efSearch={ef}", nq, secs, lat, recall(found, truth, k))
        del hnsw
        gc.collect()

    # -- the project's memory engine -------------------------------------------------------------------------------------
    if "memory" not in skip and "pgvector" not in skip:
        cache = home / "cache" / "indexes"
        with C.Timer() as t:
            ids, _mat = store.load_matrix(SLUG, SPLIT)
        build.append(["memory engine: PgStore.load_matrix alone", t.s, f"{len(ids):,} vectors out of pgvector"])
        del ids, _mat
        gc.collect()
        for exact in (False, True):
            name = "memory engine (memory_search), " + ("flat" if exact else "HNSW M=32")
            log(f"{name}: first call (load_matrix + index build + cache write + {nq:,} queries) ...")
            with C.Timer() as t:
                memory_search(store, SLUG, queries, [SPLIT], k=k, metric="cosine", exact=exact,
                              ef_search=100, cache_dir=cache)
            build.append([f"{name}: first call", t.s, f"copy out of pgvector + build + cache write + {nq:,} queries"])
            for ef in ([100] if exact else efs):
                secs, hits = batch(lambda: memory_search(store, SLUG, queries, [SPLIT], k=k, metric="cosine",
                                                         exact=exact, ef_search=ef, cache_dir=cache))
                lat, _ = timed_calls(lambda i: memory_search(store, SLUG, queries[i:i + 1], [SPLIT], k=k,
                                                             metric="cosine", exact=exact, ef_search=ef,
                                                             cache_dir=cache), lat_brute if exact else lat_idx)
                add(name, "exact=True" if exact else f"ef_search={ef}", nq, secs, lat,
                    recall(ids_to_rows(hits), truth, k))

    # -- report -------------------------------------------------------------------------------------------------------
    print(f"\nn = {n:,} vectors x {dim}, {nq:,} queries, k = {k}; {desc}")
    import resource

    print(f"loadavg at the end {C.loadavg()}; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB\n")
    print("build / load times")
    print(C.table(["step", "seconds", "note"], [[a, f"{b:,.1f}" if b >= 1 else f"{b:.3f}", c] for a, b, c in build], "lrl"))
    print(f"\nsearch (queries/s: all queries in one call, median of {args.batch_repeats} runs, pipelined for pgvector, "
          f"one serial pass for raw SQL; p50/p95: one query per call, {len(lat_idx)} calls, {len(lat_brute)} for "
          f"brute force (flat, exact), {len(lat_brute[:50])} for pgvector exact / not analyzed)")
    print(C.table(["method", "setting", "queries", "queries/s", "p50 ms", "p95 ms", f"recall@{k}"], results,
                  "llrrrrr"))
    print("\nplans (scan and sort nodes):")
    for line in notes:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
