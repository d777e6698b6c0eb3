"""Every external system as a ConfigurableResource, bound in one place: `local_resources()`.

Settings come from the environment through `dg.EnvVar` when the variable is set, so a deployment switches systems by
setting CPROX_DATABASE_URL / CPROX_HOME / CPROX_CORPORA / CPROX_DATA_DIR / CPROX_EMBED_MODEL / CPROX_MODELS /
CPROX_DEVICE / CPROX_RESULTS_DB, never by code.
"""


import os

import dagster as dg

from cp_assets.lib.settings import DEFAULT_EMBED_MODEL
from cp_assets.resources.corpus_registry import CorpusRegistry
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


def _env(name: str, default=None):
    return dg.EnvVar(name) if os.environ.get(name) else default


def local_resources() -> dict:
    return {
        "pg": PgVectorStore(database_url=_env("CPROX_DATABASE_URL"), home=_env("CPROX_HOME")),
        "encoder": SentenceEncoder(model=_env("CPROX_EMBED_MODEL", DEFAULT_EMBED_MODEL)),
        "registry": CorpusRegistry(corpora_file=_env("CPROX_CORPORA"), data_dir=_env("CPROX_DATA_DIR")),
        "llm": LLMResource(models_file=_env("CPROX_MODELS"), device=_env("CPROX_DEVICE")),
        "results": ResultsStore(path=_env("CPROX_RESULTS_DB")),
    }
