"""What a running process tree really listens on (psutil, a dependency of pgserver), for test_security: the UI's
TCP sockets must all be on loopback and the embedded Postgres must have none. Also the Makefile's recipe lines, so a
test launches exactly the command `make <target>` runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psutil

LOOPBACK = {"127.0.0.1", "::1"}


@dataclass(frozen=True)
class Listener:
    pid: int
    process: str  # the process's command line, shortened
    ip: str
    port: int


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def listening_tcp(pid: int) -> list[Listener]:
    """Every listening TCP socket (IPv4 and IPv6) of the process `pid` and its descendants."""
    found = []
    for proc in process_tree(pid):
        try:
            conns, cmd = proc.net_connections(kind="tcp"), " ".join(proc.cmdline())[:120]
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        found += [Listener(proc.pid, cmd, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def stop_tree(proc, timeout_s: float = 15) -> None:
    """Terminate a subprocess and every descendant still alive (a webserver's code server, `dagster dev`'s daemon)."""
    try:
        tree = process_tree(proc.pid)
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=timeout_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout_s)
    proc.wait()  # reap the Popen handle


def postmaster_pid(pgdata: Path) -> int:
    """The running Postgres server's pid: the first line of its data directory's postmaster.pid."""
    pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    assert psutil.pid_exists(pid), f"postmaster.pid names {pid}, which is not running"
    return pid


def make_recipe(makefile: Path, target: str) -> list[str]:
    """The recipe lines of `target` (tab-indented lines after `target:`), unexpanded."""
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile.read_text(), re.M)
    assert match, f"no `{target}` target in {makefile}"
    return [line.strip() for line in match.group(1).splitlines()]
