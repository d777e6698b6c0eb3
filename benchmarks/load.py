"""Load benchmark: N concurrent search clients against pgvector for a fixed time; queries/s, latency, errors.

Store: a private embedded Postgres (fresh temporary CPROX_HOME, Unix socket only; deleted at the end unless --keep)
holding a real split: `--n` random chunks of a registry split (`--from-split`, default pretrain), chunked with the
project's chunker (128/16 tokens) and embedded with the project's encoder (`encoder.encode`, all-MiniLM-L6-v2 by
default; vectors cached under /tmp with the same name and sample as `search.py --real`, so a re-run embeds nothing),
loaded the way the `embeddings` asset stores them (replace_chunks, ensure_embedding_table, prepare_build,
write_build, publish_build: HNSW m=16, ef_construction=64), then VACUUM ANALYZE so that autovacuum does not run in
the middle of the measurements. Queries: `--nq` further chunks of the same split, held out of the store (real text,
encoded once up front), cycled by every client from its own offset.

Clients: each is a separate process (multiprocessing, spawn), like separate `cprox search` users:
  --mode store  (default) its own PgStore on the same server and its own connection; loops
                `PgStore.search(slug, one query vector, split, k, ef_search)` (what `cprox search` runs after
                encoding: HNSW, the store's long-lived reader connection). Warm-up (connect, schema check, 3 queries)
                happens before the clock starts; all clients start together.
  --mode cli    loops real `cprox search TEXT --split S --k K --engine pgvector --json` subprocesses (each pays
                Python start-up, model load, encoding, connect), latency = the subprocess's wall-clock time.
Each client runs for `--duration` seconds (a query in flight at the end is finished and counted). An error is an
exception, a non-zero exit, a timeout, or a result with fewer than k hits; any error makes the exit status 1.

Phases, one after the other on the same store: a baseline with 1 client (`--baseline-duration`, default = --duration),
then `--clients` clients. Printed per phase: queries, queries/s, p50/p95/p99/max latency (ms), errors, queries per
client (min-max), queries/s per time window, CPU seconds of the clients, of Postgres and of everything else on the
machine (from /proc/stat: other processes' load skews the figures), HNSW index scans vs queries (from
pg_stat_user_indexes); then the scaling ratio (N clients' queries/s / 1 client's).

    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/load.py --quick   # 10 s, 2 clients
    .venv/bin/python benchmarks/load.py                                   # 8 clients x 60 s + 1-client baseline
    .venv/bin/python benchmarks/load.py --mode cli --clients 4 --duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C

SPLIT = "bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- data -------------------------------------------------------------------------------------------------------------
def real_chunks(split: str, n: int, nq: int, seed: int, model: str):
    """(base chunks, query chunks, base vectors, query vectors): a seeded random sample of n + nq chunks of a
    registry split, embedded with the project's encoder. Same sample and cache file as search.py --real."""
    import random

    import numpy as np

    from cp_assets.lib.corpus.chunking import ChunkConfig, chunk_documents
    from cp_assets.lib.corpus.encoder import encode, load_tokenizer, model_slug
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.sources import read_split

    with C.Timer() as t:
        chunks = list(chunk_documents(read_split(load_registry(), split), load_tokenizer(model), ChunkConfig()))
    log(f"split {split!r}: {len(chunks):,} chunks (chunked in {t.s:.1f}s)")
    total = min(n + nq, len(chunks))
    if total < n + nq:
        n = total - nq
        log(f"split {split!r} has only {len(chunks):,} chunks: n = {n:,}")
    picked = random.Random(seed).sample(chunks, total)
    cache = Path(f"/tmp/cprox_bench_real_{model_slug(model)}_{split}_{total}_{seed}.npy")
    vecs = None
    if cache.exists():
        vecs = np.load(cache)
        if vecs.shape[0] != total:
            vecs = None
        else:
            log(f"vectors from cache {cache}")
    if vecs is None:
        log(f"embedding {total:,} chunks of {split!r} with {model} (cached to {cache}; ~35 chunks/s on 2 cores)")
        with C.Timer() as t:
            vecs = encode(model, [c.text for c in picked], batch_size=32)
        log(f"embedded in {t.s:.0f}s ({total / t.s:.1f} chunks/s)")
        np.save(cache, vecs)
    return picked[:n], picked[n:], vecs[:n], vecs[n:]


def load_store(store, slug: str, model: str, base, vecs) -> list[list]:
    """The chunks and vectors into pgvector as the `embeddings` asset stores them; returns build rows."""
    rows = []
    with C.Timer() as t:
        store.replace_chunks(SPLIT, base)
        store.ensure_embedding_table(slug, model, vecs.shape[1])
        store.prepare_build(slug, SPLIT, vecs.shape[1])
        store.write_build(slug, SPLIT, [c.chunk_id for c in base], [c.text_hash for c in base], vecs)
    rows.append(["chunk rows + vectors (replace_chunks, write_build COPY)", t.s])
    with C.Timer() as t:
        store.publish_build(slug, SPLIT, expected=len(base))
    rows.append(["HNSW index + swap (publish_build, m=16, ef_construction=64)", t.s])
    from cp_assets.lib.corpus.pgvector_store import shard_table

    with store.connect(autocommit=True) as conn, C.Timer() as t:
        conn.execute(f'VACUUM ANALYZE "{shard_table(slug, SPLIT, "00000")}"')
        conn.execute("VACUUM ANALYZE cprox_chunks")
    rows.append(["VACUUM ANALYZE partition + chunks (else autovacuum's job, mid-run)", t.s])
    return rows


def check_local(dsn: str) -> str:
    """Refuse anything but a Unix socket or loopback; return where it is."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(dsn)
    host = str(info.get("host") or "")
    hosts = [h for h in host.split(",") if h] or ["(default socket)"]
    for h in hosts:
        if not (h.startswith("/") or h == "(default socket)" or h in ("localhost", "127.0.0.1", "::1")):
            raise SystemExit(f"refusing to load-test a non-local Postgres host {h!r}")
    return f"unix socket {host}" if host.startswith("/") else f"loopback {host}"


# -- clients ----------------------------------------------------------------------------------------------------------
def timed_loop(idx: int, items: list, one, duration: float, start_at, errors: list):
    """Call `one(item)` (raising on a bad answer) until `duration` s after the common start, cycling `items` from a
    per-client offset: (latencies, end times since the start) as arrays; failures go to `errors` (stop after 20)."""
    import numpy as np

    lat, ends = [], []
    t0 = start_at.value
    stop = t0 + duration
    qi = (idx * 7919) % len(items)  # each client cycles from its own offset
    while time.monotonic() < stop and len(errors) <= 20:
        item = items[qi]
        qi = (qi + 1) % len(items)
        s = time.monotonic()
        try:
            one(item)
        except Exception as exc:  # noqa: BLE001 - reported, counted
            errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            continue
        e = time.monotonic()
        lat.append(e - s)
        ends.append(e - t0)
    return np.array(lat), np.array(ends)


def store_client(idx: int, dsn: str, slug: str, queries, k: int, ef: int, duration: float, ready, go, start_at,
                 results, release) -> None:
    """One client process: its own PgStore (own connection), warm-up, then PgStore.search in a loop."""
    import numpy as np

    from cp_assets.lib.corpus.pgvector_store import PgStore

    errors, store = [], None
    try:
        store = PgStore(url=dsn)
        for i in range(3):  # connect, ensure_schema, register_vector, first plans: not timed
            store.search(slug, queries[(idx + i) % len(queries)][None], split=SPLIT, k=k, ef_search=ef)
    except Exception as exc:  # noqa: BLE001 - reported, counted
        errors.append(f"warm-up: {type(exc).__name__}: {exc}")
        store = None
    ready.put(idx)
    if not go.wait(timeout=600):
        errors.append("never started")

    def one(q):
        hits = store.search(slug, q[None], split=SPLIT, k=k, ef_search=ef)[0]
        if len(hits) != k:
            raise RuntimeError(f"{len(hits)} hits, expected {k}")

    lat, ends = timed_loop(idx, queries, one, duration, start_at, errors) if store is not None else (
        np.array([]), np.array([]))
    results.put((idx, lat, ends, errors))
    release.wait(timeout=300)  # keep the process (and its Postgres backend) alive until the CPU figures are read


def cli_client(idx: int, cprox: str, env: dict, texts: list[str], k: int, ef: int, duration: float, ready, go,
               start_at, results, release) -> None:
    """One client process that runs `cprox search` subprocesses in a loop."""
    errors = []
    ready.put(idx)
    if not go.wait(timeout=600):
        errors.append("never started")

    def one(text):
        p = subprocess.run([cprox, "search", text, "--split", SPLIT, "--k", str(k), "--engine", "pgvector",
                            "--ef-search", str(ef), "--json"], env=env, capture_output=True, text=True,
                           timeout=max(120.0, duration))
        if p.returncode != 0:
            raise RuntimeError(f"exit {p.returncode}: {p.stderr.strip()[-300:]}")
        if len(json.loads(p.stdout)) != k:
            raise RuntimeError(f"wrong number of hits, expected {k}")

    lat, ends = timed_loop(idx, texts, one, duration, start_at, errors)
    results.put((idx, lat, ends, errors))
    release.wait(timeout=300)  # keep the process (and its Postgres backend) alive until the CPU figures are read


# -- measurement helpers --------------------------------------------------------------------------------------------
def proc_stat() -> tuple[float, float]:
    """(busy CPU seconds, steal seconds) of the whole machine so far, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    busy = f[0] + f[1] + f[2] + f[5] + f[6]  # user nice system irq softirq (not idle, iowait, steal)
    return busy / hz, (f[7] if len(f) > 7 else 0) / hz


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of processes and all their live descendants (a `cprox search` still running included), plus what
    each of them has reaped of its exited children."""
    hz, kids = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                f = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            kids.setdefault(int(f[1]), []).append((int(entry.name), sum(int(x) for x in f[11:15]) / hz))
    own = {pid: cpu for lst in kids.values() for pid, cpu in lst}
    total, todo = 0.0, [r for r in roots if r in own]
    while todo:
        pid = todo.pop()
        total += own[pid]
        todo += [c for c, _ in kids.get(pid, [])]
    return total


def hnsw_scans(store, slug: str) -> tuple[int, int]:
    """(idx_scan of the partition's HNSW index, seq_scan of the partition) from pg_stat_user_*."""
    from cp_assets.lib.corpus.pgvector_store import shard_table

    with store.connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        i = conn.execute("SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes WHERE indexrelname = %s",
                         (shard_table(slug, SPLIT, "00000") + "_hnsw",)).fetchone()[0]
        s = conn.execute("SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables WHERE relname = %s",
                         (shard_table(slug, SPLIT, "00000"),)).fetchone()[0]
    return int(i), int(s)


def run_phase(args, home: Path, store, slug: str, nclients: int, duration: float, payload) -> dict:
    import multiprocessing as mp

    import numpy as np

    ctx = mp.get_context("spawn")
    ready, results, go, release = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Event()
    start_at = ctx.Value("d", 0.0)
    if args.mode == "store":
        target, extra = store_client, (store.dsn(), slug, payload)
    else:
        target, extra = cli_client, payload
    procs = [ctx.Process(target=target, args=(i, *extra, args.k, args.ef, duration, ready, go, start_at, results,
                                                       release),
                         daemon=True) for i in range(nclients)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 300
    import queue

    try:
        for _ in procs:  # wait until every client is connected and warmed up
            ready.get(timeout=max(1.0, deadline - time.monotonic()))
    except queue.Empty:
        raise RuntimeError(f"not all {nclients} clients started within 300 s "
                           f"(exit codes {[p.exitcode for p in procs]})") from None
    scans0 = hnsw_scans(store, slug)
    pids = [p.pid for p in procs]
    ours = lambda: tree_cpu(pids)  # noqa: E731
    time.sleep(0.2)
    load0 = C.loadavg()
    busy0, steal0, cli0, pg0 = *proc_stat(), ours(), C.pg_cpu_seconds(home)
    start_at.value = time.monotonic() + 0.05
    go.set()
    time.sleep(max(0.0, start_at.value + duration - time.monotonic()))
    busy1, steal1, cli1, pg1 = *proc_stat(), ours(), C.pg_cpu_seconds(home)
    load1 = C.loadavg()
    release.set()
    got, errors = {}, []
    end_deadline = time.monotonic() + (max(180.0, duration) if args.mode == "cli" else 60.0)
    while len(got) < nclients and time.monotonic() < end_deadline:
        try:
            idx, lat, ends, errs = results.get(timeout=max(0.1, end_deadline - time.monotonic()))
        except queue.Empty:  # a client hung or died
            break
        got[idx] = (lat, ends)
        errors += [f"client {idx}: {e}" for e in errs]
    for i, p in enumerate(procs):
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
            p.join(5)
            errors.append(f"client {i}: still running after the deadline, terminated")
        elif p.exitcode != 0:
            errors.append(f"client {i}: exit code {p.exitcode}")
        if i not in got:
            errors.append(f"client {i}: no result")
    time.sleep(0.6)  # backends flush their statistics when they exit
    scans1 = hnsw_scans(store, slug)
    lat = np.concatenate([v[0] for v in got.values()]) if got else np.zeros(0)
    ends = np.concatenate([v[1] for v in got.values()]) if got else np.zeros(0)
    wall = max(duration, float(ends.max()) if len(ends) else duration)
    window = args.window or float(max(1, round(duration / 6)))
    edges = np.arange(0, duration + 1e-9, window)
    timeline = [float(((ends >= a) & (ends < a + window)).sum()) / window for a in edges if a < duration - 1e-9]
    busy, steal, cli_cpu, pg_cpu = busy1 - busy0, steal1 - steal0, cli1 - cli0, pg1 - pg0
    return {
        "clients": nclients, "duration": duration, "wall": wall, "queries": int(len(lat)), "qps": len(lat) / wall,
        "lat_ms": lat * 1e3, "errors": errors, "per_client": sorted(len(v[0]) for v in got.values()),
        "timeline": timeline, "window": window, "load": (load0, load1),
        "cpu": {"clients": cli_cpu, "postgres": pg_cpu, "other": max(0.0, busy - cli_cpu - pg_cpu), "busy": busy,
                "steal": steal},
        "hnsw_scans": scans1[0] - scans0[0], "seq_scans": scans1[1] - scans0[1],
    }


def num(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def phase_line(name: str, r: dict) -> list:
    lat = list(r["lat_ms"])
    pc = r["per_client"]
    return [name, r["clients"], f"{r['wall']:.1f}", f"{r['queries']:,}", num(r["qps"]),
            f"{C.pct(lat, 50):.2f}", f"{C.pct(lat, 95):.2f}", f"{C.pct(lat, 99):.2f}",
            f"{max(lat):.1f}" if lat else "nan", len(r["errors"]),
            f"{pc[0]:,}-{pc[-1]:,}" if pc else "-"]


# -- main -------------------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=None, help="concurrent clients (default 8; --quick: 2)")
    ap.add_argument("--duration", type=float, default=None, help="seconds of load per phase (default 60; --quick: 10)")
    ap.add_argument("--baseline-duration", type=float, default=None,
                    help="seconds of the 1-client baseline (default = --duration; 0 skips it)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 s, 2 clients (explicit flags still win)")
    ap.add_argument("--mode", choices=("store", "cli"), default="store",
                    help="store: PgStore.search per process (default); cli: `cprox search` subprocesses")
    ap.add_argument("--k", type=int, default=10, help="top-k (default 10)")
    ap.add_argument("--ef", type=int, default=100, help="hnsw.ef_search (default 100, as `cprox search`)")
    ap.add_argument("--n", type=int, default=4000, help="chunks in the store (default 4000)")
    ap.add_argument("--nq", type=int, default=400, help="held-out query chunks, cycled (default 400)")
    ap.add_argument("--from-split", default="pretrain", help="registry split to sample chunks from (default pretrain)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, default=None, help="seconds per timeline window (default duration/6)")
    ap.add_argument("--keep", action="store_true", help="keep the private CPROX_HOME (default: delete it)")
    args = ap.parse_args()
    args.clients = args.clients or (2 if args.quick else 8)
    args.duration = args.duration or (10.0 if args.quick else 60.0)
    if args.baseline_duration is None:
        args.baseline_duration = args.duration
    if args.clients < 1 or args.duration <= 0 or args.k < 1:
        ap.error("--clients, --duration and --k must be positive")
    sys.stdout.reconfigure(line_buffering=True)
    return C.run_in_private_home("cprox_bench_load_", run, args)


def run(args, home: Path) -> int:
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.encoder import model_slug
    from cp_assets.lib.corpus.pgvector_store import PgStore

    model = settings.embed_model()
    slug = model_slug(model)
    print(f"== load benchmark: concurrent `{'cprox search' if args.mode == 'cli' else 'PgStore.search'}` clients "
          f"against pgvector HNSW ==")
    base, qchunks, vecs, qvecs = real_chunks(args.from_split, args.n, args.nq, args.seed, model)
    store = PgStore(home=home)
    with C.Timer() as t:
        store.ensure_schema()
    where = check_local(store.dsn())
    build = [["embedded Postgres start + schema", t.s]] + load_store(store, slug, model, base, vecs)
    with store.connect() as conn:
        maxconn = conn.execute("SHOW max_connections").fetchone()[0]
        reserved = conn.execute("SHOW superuser_reserved_connections").fetchone()[0]
        in_use = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                              ).fetchone()[0]
    if args.clients + int(in_use) + 1 > int(maxconn) - int(reserved):
        print(f"WARNING: {args.clients} clients + {in_use} open connections exceed max_connections {maxconn} "
              f"- {reserved} reserved: expect connection errors")
    for line in C.machine_lines({
        "database": f"{C.pg_versions(store)}, max_connections {maxconn} ({reserved} reserved); {where}; private "
                    f"CPROX_HOME {home}",
        "store": f"split {SPLIT!r}: {len(base):,} chunks of {args.from_split!r} embedded with {model} "
                 f"({vecs.shape[1]} dims), HNSW m=16, ef_construction=64",
        "load": f"mode {args.mode}; k={args.k}, ef_search={args.ef}; {len(qchunks):,} held-out query chunks, cycled",
    }):
        print(line)
    for what, s in build:
        log(f"{what}: {s:.2f}s")

    if args.mode == "store":
        payload = qvecs
    else:
        cprox = str(Path(sys.executable).with_name("cprox"))
        if not Path(cprox).exists():
            raise SystemExit(f"{cprox} not found (pip install -e . in the venv)")
        env = {k: v for k, v in os.environ.items() if k != "CPROX_DATABASE_URL"}
        env.update(CPROX_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        payload = (cprox, env, [c.text for c in qchunks])

    phases = []
    if args.baseline_duration > 0 and args.clients > 1:
        phases.append(("baseline", 1, args.baseline_duration))
    phases.append((f"{args.clients} clients", args.clients, args.duration))
    results = []
    for name, n, dur in phases:
        log(f"phase {name}: {n} client(s) x {dur:g}s ...")
        r = run_phase(args, home, store, slug, n, dur, payload)
        results.append((name, r))
        lat = list(r["lat_ms"])
        log(f"  {r['queries']:,} queries, {num(r['qps'])} q/s, p50 {C.pct(lat, 50):.2f} ms, p95 {C.pct(lat, 95):.2f} "
            f"ms, p99 {C.pct(lat, 99):.2f} ms, {len(r['errors'])} errors")

    # -- report -----------------------------------------------------------------------------------------------------
    print(f"\nload: mode {args.mode}, split {SPLIT!r} {len(base):,} chunks x {vecs.shape[1]}, k={args.k}, "
          f"ef_search={args.ef}; latency = "
          + ("one PgStore.search call per query (each client its own process and connection)" if args.mode == "store"
             else "one whole `cprox search` process per query (start-up, model load, encode, connect, search)"))
    print(C.table(["phase", "clients", "seconds", "queries", "queries/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
                   "errors", "per client"], [phase_line(name, r) for name, r in results]))
    print("\nmachine during each phase (CPU seconds; 'others' = busy CPU of the whole machine minus clients and "
          "Postgres; ours ms/query = (clients + Postgres) CPU per query; HNSW/seq scans of the partition from pg_stat, "
          "may include the 3 warm-up queries per client)")
    rows = []
    for name, r in results:
        c, d = r["cpu"], r["wall"]
        rows.append([name, f"{c['clients']:.1f}", f"{c['postgres']:.1f}", f"{c['other']:.1f}",
                     f"{(c['clients'] + c['postgres']) * 1e3 / max(1, r['queries']):.2f}",
                     f"{c['busy'] / d:.2f} of {os.cpu_count()}", f"{c['steal']:.1f}", f"{r['load'][0]} -> "
                     f"{r['load'][1].split()[0]}", f"{r['hnsw_scans']:,} / {r['queries']:,}", r["seq_scans"]])
    print(C.table(["phase", "clients CPU", "Postgres CPU", "others CPU", "ours ms/query", "cores busy", "steal",
                   "loadavg", "HNSW scans / queries", "seq scans"], rows))
    print("\nqueries/s per window (s from start):")
    for name, r in results:
        w = r["window"]
        print(f"  {name:<12} " + "  ".join(f"{i * w:.0f}-{(i + 1) * w:.0f}: {num(x)}"
                                         for i, x in enumerate(r["timeline"])))
    if len(results) == 2:
        b, m = results[0][1], results[1][1]
        ratio = m["qps"] / b["qps"] if b["qps"] else float("nan")
        ideal = min(m["clients"], os.cpu_count() or 1)
        print(f"\nscaling: {m['clients']} clients {num(m['qps'])} q/s / 1 client {num(b['qps'])} q/s = {ratio:.2f}x "
              f"(client processes and Postgres backends share {os.cpu_count()} cores: at most ~{ideal}x when the "
              f"machine is otherwise idle); p50 {C.pct(list(b['lat_ms']), 50):.2f} -> "
              f"{C.pct(list(m['lat_ms']), 50):.2f} ms")
    errors = [e for _, r in results for e in r["errors"]]
    print(f"\nerrors: {len(errors)}")
    for e in errors[:20]:
        print(f"  {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
