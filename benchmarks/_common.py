"""Shared set-up for the benchmarks: a private CPROX_HOME (its own embedded Postgres), machine facts, tables.

Import this module before anything from cp_assets: `private_home()` must set CPROX_HOME first, like
cp_assets_tests/conftest.py does, so a benchmark never touches the user's database.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def private_home(prefix: str) -> Path:
    """A fresh temporary CPROX_HOME; the embedded server and all state live under it."""
    if "cp_assets" in sys.modules:
        raise RuntimeError("private_home() must run before cp_assets is imported")
    home = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(home, 0o755)  # as root, pgserver runs Postgres as the system user `pgserver`
    os.environ["CPROX_HOME"] = str(home)
    os.environ.pop("CPROX_DATABASE_URL", None)  # never an external database
    return home


def cleanup(home: Path, keep: bool = False) -> None:
    from cp_assets.lib.corpus import embedded_pg

    try:
        stopped = embedded_pg.stop(home)
        print(f"\nembedded Postgres under {home} {'stopped' if stopped else 'was not running'}")
    finally:
        if keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def install_sigterm() -> None:
    """SIGTERM raises SystemExit, so `finally: cleanup(...)` stops the embedded server (kill PID, not kill -9)."""
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _proc_cpu(pid: int, with_children: bool = False) -> tuple[int, float]:
    """(ppid, CPU seconds) of a process from /proc; waited-for children's CPU too when asked."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return -1, 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_children else 0)
    return int(fields[1]), ticks / os.sysconf("SC_CLK_TCK")


def pg_cpu_seconds(home: Path) -> float:
    """CPU seconds used so far by the embedded Postgres under `home`: postmaster (with its exited backends) plus its
    live children (backends, parallel workers)."""
    try:
        postmaster = int((home / "pg" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = _proc_cpu(postmaster, with_children=True)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid, cpu = _proc_cpu(int(entry.name))
            if ppid == postmaster:
                total += cpu
    return total


def cpu_seconds(home: Path | None = None) -> float:
    """CPU seconds of this process (all threads) plus, given `home`, of its embedded Postgres. Less sensitive than
    wall-clock time to other processes competing for the cores."""
    t = os.times()
    return t.user + t.system + (pg_cpu_seconds(home) if home else 0.0)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_lines(extra: dict[str, str] | None = None) -> list[str]:
    mem = mem_gib()
    lines = [
        f"CPU        {cpu_model()}, {os.cpu_count()} logical cores"
        + (f", affinity {len(os.sched_getaffinity(0))}" if hasattr(os, "sched_getaffinity") else ""),
        f"memory     {mem:.1f} GiB" if mem else "memory     unknown",
        f"platform   {platform.platform()}, Python {platform.python_version()}",
        f"loadavg    {loadavg()} (1/5/15 min; other processes share this machine)",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"{k:<10} {v}")
    return lines


def pg_versions(store) -> str:
    with store.connect() as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        vec = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        shm = conn.execute("SHOW shared_buffers").fetchone()[0]
        workers = conn.execute("SHOW max_parallel_maintenance_workers").fetchone()[0]
    return (f"Postgres {pg}, pgvector {vec[0] if vec else '?'}, shared_buffers {shm}, "
            f"max_parallel_maintenance_workers {workers}")


def pct(values: list[float], q: float) -> float:
    """Percentile (0-100) by linear interpolation."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A plain-text table; `align` is one char per column, 'l' or 'r' (default: first left, rest right)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def fmt(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), sep] + [fmt(r) for r in cells[1:]])


class Timer:
    """Wall-clock seconds `.s`; with `home`, also CPU seconds `.cpu` (this process + that embedded Postgres)."""

    def __init__(self, home: Path | None = None, cpu: bool = False):
        self.home, self.track_cpu = home, cpu or home is not None

    def __enter__(self):
        self.c0 = cpu_seconds(self.home) if self.track_cpu else 0.0
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
        self.cpu = cpu_seconds(self.home) - self.c0 if self.track_cpu else float("nan")


def run_in_private_home(prefix: str, run, args) -> int:
    """`run(args, home)` with a fresh private CPROX_HOME, cleaned up on exit or SIGTERM (unless args.keep)."""
    home = private_home(prefix)
    install_sigterm()
    try:
        return run(args, home)
    finally:
        cleanup(home, keep=args.keep)
