"""`CorpusRegistry`: which registry file (corpora.yaml) and data directory the corpus assets read."""


import dagster as dg

from cp_assets.lib.corpus.registry import Registry, load_registry


class CorpusRegistry(dg.ConfigurableResource):
    """Unset fields fall back to CPROX_CORPORA / CPROX_DATA_DIR defaults (corpora.yaml, ../shared/data)."""

    corpora_file: str | None = None
    data_dir: str | None = None

    def load(self) -> Registry:
        return load_registry(self.corpora_file, self.data_dir)
