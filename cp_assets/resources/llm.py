"""`LLMResource`: every model of the models registry behind one `backend(model_id)` / `generate()`."""


import dagster as dg

from cp_assets.lib.evals.generation import Backend
from cp_assets.lib.evals.model_registry import ModelRegistry, load_models
from cp_assets.lib.evals.rollouts import backend_for


class LLMResource(dg.ConfigurableResource):
    """`models_file`: the models registry (CPROX_MODELS; default models.yaml). `device`: for local models."""

    models_file: str | None = None
    device: str | None = None

    def registry(self) -> ModelRegistry:
        return load_models(self.models_file or None)

    def backend(self, model_id: str) -> Backend:
        return backend_for(self.registry().get(model_id), device=self.device)
