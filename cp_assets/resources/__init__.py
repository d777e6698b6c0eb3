"""Every external system as a ConfigurableResource, bound in one place: `local_resources()` or
`production_resources()`, chosen by CPROX_DEPLOYMENT (`local`, the default, or `production`).

- local: every setting optional. Settings come from the environment through `dg.EnvVar` when the variable is set,
  else the embedded defaults (embedded Postgres under CPROX_HOME, corpora.yaml, ../shared/data, models.yaml).
- production: the shared systems must be named. CPROX_DATABASE_URL (Postgres + pgvector), CPROX_HOME (a volume
  every worker mounts), CPROX_CORPORA, CPROX_DATA_DIR, CPROX_MODELS are `dg.EnvVar`s: read on the worker when a step
  starts, so a URL or key never enters the definitions, the UI, run config or logs; a missing one fails the step
  naming the variable.
Switching systems is choosing one of the two, never a branch inside an asset.
"""



import dagster as dg

from cp_assets.lib.core import settings
from cp_assets.lib.core.settings import DEFAULT_EMBED_MODEL
from cp_assets.resources.corpus_registry import CorpusRegistry
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


def _env(name: str, default=None):
    return dg.EnvVar(name) if settings.is_set(name) else default


def production_resources() -> dict:
    return {
        "pg": PgVectorStore(database_url=dg.EnvVar("CPROX_DATABASE_URL"), home=dg.EnvVar("CPROX_HOME")),
        "encoder": SentenceEncoder(model=_env("CPROX_EMBED_MODEL", DEFAULT_EMBED_MODEL), device=_env("CPROX_DEVICE"),
                                   precision=_env("CPROX_EMBED_PRECISION", "auto")),
        "registry": CorpusRegistry(corpora_file=dg.EnvVar("CPROX_CORPORA"), data_dir=dg.EnvVar("CPROX_DATA_DIR")),
        "llm": LLMResource(models_file=dg.EnvVar("CPROX_MODELS"), device=_env("CPROX_DEVICE")),
        "results": ResultsStore(path=_env("CPROX_RESULTS_DB")),
    }


DEPLOYMENTS = {"local": lambda: local_resources(), "production": production_resources}


def deployment_resources(name: str | None = None) -> dict:
    """The resource set of CPROX_DEPLOYMENT (default `local`)."""
    name = settings.deployment(name)
    if name not in DEPLOYMENTS:
        raise ValueError(f"CPROX_DEPLOYMENT={name!r}: choose one of {', '.join(DEPLOYMENTS)}")
    return DEPLOYMENTS[name]()


def local_resources() -> dict:
    return {
        "pg": PgVectorStore(database_url=_env("CPROX_DATABASE_URL"), home=_env("CPROX_HOME")),
        "encoder": SentenceEncoder(model=_env("CPROX_EMBED_MODEL", DEFAULT_EMBED_MODEL), device=_env("CPROX_DEVICE"),
                                   precision=_env("CPROX_EMBED_PRECISION", "auto")),
        "registry": CorpusRegistry(corpora_file=_env("CPROX_CORPORA"), data_dir=_env("CPROX_DATA_DIR")),
        "llm": LLMResource(models_file=_env("CPROX_MODELS"), device=_env("CPROX_DEVICE")),
        "results": ResultsStore(path=_env("CPROX_RESULTS_DB")),
    }
