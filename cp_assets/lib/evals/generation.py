"""The generation types every backend and caller shares: `SamplingParams` (decoding settings; their hash keys a
rollout with its sample id and model, so a rerun with the same parameters generates nothing), `GenerationRequest`,
`Rollout` (what one model said to one prompt, with everything needed to reproduce and score it), the `Backend`
protocol, `GenerationError` (what every backend raises) and `make_rollout` (the fields backends share).

No generation happens here: `cp_assets.lib.evals.rollouts` picks a backend and runs eval sets. pydantic models
round-trip losslessly through JSON, DuckDB and Parquet (see `cp_assets/lib/reports/results_db.py`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """Decoding settings. temperature 0 = greedy. `seed` makes sampling reproducible where the backend allows."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, gt=0)
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = True

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def key(self, system_prompt: str | None = None) -> str:
        """Stable hash of the parameters (and the system prompt, which changes what is generated)."""
        blob = json.dumps({"params": self.model_dump(mode="json"), "system": system_prompt}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sample_id: str
    prompt: str
    system_prompt: str | None = None
    eval_set: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Rollout(BaseModel):
    """One completion. Token ids and logprobs are None where the backend does not give them."""

    model_config = ConfigDict(extra="forbid")
    sample_id: str
    eval_set: str | None = None
    model_id: str
    backend: str
    prompt: str
    system_prompt: str | None = None
    rendered_prompt: str | None = None  # the text the model saw (chat template applied), where known
    completion: str
    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None  # one per completion token: log p(token | prefix)
    params: SamplingParams
    params_hash: str
    finish_reason: str  # "stop" | "length" | backend-specific
    latency_s: float
    started_at: datetime
    finished_at: datetime
    correct: bool | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return self.sample_id, self.model_id, self.params_hash

    @property
    def n_completion_tokens(self) -> int | None:
        """From the token ids, else the server's usage count (OpenAI-compatible servers rarely return ids)."""
        if self.completion_token_ids is not None:
            return len(self.completion_token_ids)
        usage = self.metadata.get("usage") or {}
        return usage.get("completion_tokens") if isinstance(usage, dict) else None


class GenerationError(RuntimeError):
    """A generation failed; the message names the model and (where known) the sample."""

    def __init__(self, model_id: str, message: str, sample_id: str | None = None):
        where = f"model {model_id!r}" + (f", sample {sample_id!r}" if sample_id else "")
        super().__init__(f"{where}: {message}")
        self.model_id, self.sample_id = model_id, sample_id


class Backend(Protocol):
    """What `generate()` dispatches to: local transformers, an OpenAI-compatible server, or vLLM."""

    model_id: str
    backend: str

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> Iterator[Rollout]:
        """Yield each rollout as it completes (order not guaranteed), so callers persist as they go."""
        ...

    def stream(self, request: GenerationRequest, params: SamplingParams,
               on_text: Callable[[str], None]) -> Rollout:
        """Generate one completion, calling `on_text` with each piece of text as it arrives."""
        ...


def now() -> datetime:
    return datetime.now(timezone.utc)


def make_rollout(backend: Backend, req: GenerationRequest, params: SamplingParams, *, completion: str,
                 finish_reason: str, started_at: datetime, latency_s: float, **extra: Any) -> Rollout:
    """Fill the fields every backend shares; `extra` carries token ids, logprobs, rendered prompt, metadata."""
    meta = dict(req.metadata) | extra.pop("metadata", {})
    return Rollout(sample_id=req.sample_id, eval_set=req.eval_set, model_id=backend.model_id, backend=backend.backend,
                   prompt=req.prompt, system_prompt=req.system_prompt, completion=completion, params=params,
                   params_hash=params.key(req.system_prompt), finish_reason=finish_reason, latency_s=latency_s,
                   started_at=started_at, finished_at=now(), metadata=meta, **extra)
