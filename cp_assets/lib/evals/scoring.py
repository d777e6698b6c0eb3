"""Teacher-forced token scores of a text under a model: what membership inference (loss, zlib, Min-K%, Min-K%++)
is computed from.

A backend that can score implements `score(texts, max_tokens=...) -> list[TokenScores]`:
- `logprobs[i]` = log p(token_i | tokens_<i) for every token of the text after the first (the first has no context;
  a BOS token, where the tokenizer adds one, is context, not a scored token);
- `mu[i]`, `sigma[i]` = mean and standard deviation of log p(z | tokens_<i) over the whole vocabulary, z ~ p (Min-K%++
  needs them). Backends that only see the chosen token's logprob (OpenAI-compatible servers, vLLM prompt logprobs)
  leave them None, and Min-K%++ is then reported as unavailable rather than approximated.
A backend that cannot score at all raises `ScoringUnavailable` naming the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from cp_assets.lib.evals.generation import GenerationError


class ScoringUnavailable(GenerationError):
    """This model (or its server) gives no token logprobs for a given text, so membership scores cannot be computed."""


@dataclass(frozen=True)
class TokenScores:
    text: str
    token_ids: list[int]  # the scored tokens (len == len(logprobs))
    logprobs: np.ndarray  # float64, log p(token_i | prefix)
    mu: np.ndarray | None = None  # float64, E_z[log p(z | prefix)] per position
    sigma: np.ndarray | None = None  # float64, std_z[log p(z | prefix)] per position
    truncated: bool = False  # the text was longer than max_tokens (or the context) and was cut

    def __post_init__(self):
        n = len(self.logprobs)
        if len(self.token_ids) != n:
            raise ValueError(f"{len(self.token_ids)} token ids but {n} logprobs")
        for name in ("mu", "sigma"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} values for {n} tokens")

    @property
    def n_tokens(self) -> int:
        return len(self.logprobs)

    @property
    def has_distribution(self) -> bool:
        return self.mu is not None and self.sigma is not None


class Scorer(Protocol):
    model_id: str

    def score(self, texts: Sequence[str], *, max_tokens: int = 512) -> list[TokenScores]:
        """Token scores of each text (at most `max_tokens` tokens scored per text, the rest cut and flagged)."""
        ...


def distribution_stats(logits) -> tuple["np.ndarray", "np.ndarray", "np.ndarray"]:
    """From next-token logits (torch, [T, V]): log-softmax, and mu/sigma of log p under p per position."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    sigma = ((p * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
    return logp, mu, sigma
