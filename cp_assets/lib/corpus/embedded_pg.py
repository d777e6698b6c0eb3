"""The embedded Postgres + pgvector default: PyPI `pgserver` (Postgres 16, pgvector 0.6) with data under CPROX_HOME.

It listens on a Unix socket only (no TCP port at all), stays up between processes, and is stopped with
`cprox db stop`. Set CPROX_DATABASE_URL to use any other Postgres that has the `vector` extension instead.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from pathlib import Path

from cp_assets.lib.core import settings

START_HINT = ("start the embedded database with `make db` (or `cprox db start`) and unset CPROX_DATABASE_URL, "
              "or point CPROX_DATABASE_URL at a running Postgres that has pgvector")


def pgdata(home: Path | None = None) -> Path:
    return (home or settings.home()) / "pg"


_start_lock = threading.Lock()  # pgserver's lock is a file lock: it serializes processes, not threads


def start(home: Path | None = None) -> str:
    """Start (or find running) the embedded server; return its connection URL.

    Also restarts a server stopped (`stop`, `cprox db stop`) or crashed since this process first started it:
    pgserver keeps one handle per data directory per process and would otherwise return the stale one."""
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    import pgserver

    path = pgdata(home)
    path.mkdir(parents=True, exist_ok=True)
    with _start_lock:
        server = pgserver.get_server(path, cleanup_mode=None)
        with server._lock:  # re-reads postmaster.pid; starts the server when it is not running
            server.ensure_postgres_running()
        return server.get_uri()


def stop(home: Path | None = None) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    import subprocess

    from pgserver._commands import POSTGRES_BIN_PATH

    path = pgdata(home)
    if not (path / "postmaster.pid").exists():
        return False
    cmd = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(path), "-w", "stop", "-m", "fast"]
    # pgserver runs the server as the system user `pgserver` when we are root.
    subprocess.run(cmd, check=True, capture_output=True, user="pgserver" if os.geteuid() == 0 else None)
    return True


def redact(url: str) -> str:
    """A URL safe to print: the password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
