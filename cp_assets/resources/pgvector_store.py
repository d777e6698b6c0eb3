"""`PgVectorStore`: the Dagster resource for Postgres + pgvector. All SQL lives behind it (in `lib/corpus/pgvector_store.py`)."""


from functools import lru_cache
from pathlib import Path

import dagster as dg

from cp_assets.lib.corpus.pgvector_store import PgStore


@lru_cache(maxsize=8)
def _store(url: str | None, home: str | None) -> PgStore:
    return PgStore(url=url, home=Path(home) if home else None)


class PgVectorStore(dg.ConfigurableResource):
    """Postgres with pgvector. No `database_url` means the embedded pgserver under `home` (CPROX_HOME)."""

    database_url: str | None = None
    home: str | None = None

    def store(self) -> PgStore:
        return _store(self.database_url or None, self.home or None)
