"""k-extractability of training text (Carlini et al. 2021/2023): prompt a model with P tokens taken from a training
document and check whether its greedy continuation reproduces the next S tokens exactly (no Dagster).

- `make_prompts(token_ids_per_text, n=..., seed=...)`: picks up to `n` documents with at least P + S tokens (seeded,
  without replacement, at most one window per document; fewer than `n` come back when fewer documents are long
  enough) and a seeded random window offset inside each; the prompt is the window's first P tokens and the target
  the next S. The same inputs and seed always give the same prompts.
- `score_extraction(target_ids, generated_ids, target_text, generated_text)`: `exact` when the first S generated
  token ids equal the target ids (a shorter generation is never exact), plus the length of the matching token prefix,
  the fraction of target positions matched, and the character edit distance / normalized similarity (rapidfuzz) of
  the decoded texts. `generated_text` should be the decoding of the first S generated tokens only.
- `summarize_extraction(rows)`: n, exact-match rate with its 95% Wilson interval, edit-distance mean and quantiles,
  mean matching prefix; `distance_histogram` draws the edit distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein

from cp_assets.lib.core.stats import wilson

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class ExtractionPrompt:
    text_index: int  # which input text the window comes from
    offset: int  # first token of the window in that text
    prefix_ids: tuple[int, ...]  # P tokens given to the model
    target_ids: tuple[int, ...]  # the S tokens that follow in the text


def make_prompts(token_ids_per_text: Sequence[Sequence[int]], *, n: int, seed: int, prefix_tokens: int = 32,
                 suffix_tokens: int = 32) -> list[ExtractionPrompt]:
    """Up to `n` (prefix, target) windows, one per sampled text, in sampling order."""
    if prefix_tokens < 1 or suffix_tokens < 1:
        raise ValueError(f"prefix_tokens and suffix_tokens must be >= 1 (got {prefix_tokens}, {suffix_tokens})")
    window = prefix_tokens + suffix_tokens
    eligible = np.array([i for i, ids in enumerate(token_ids_per_text) if len(ids) >= window], dtype=int)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(n, len(eligible)), replace=False) if len(eligible) else []
    prompts = []
    for i in chosen:
        ids = list(token_ids_per_text[int(i)])
        offset = int(rng.integers(0, len(ids) - window + 1))
        prompts.append(ExtractionPrompt(
            text_index=int(i), offset=offset,
            prefix_ids=tuple(int(t) for t in ids[offset:offset + prefix_tokens]),
            target_ids=tuple(int(t) for t in ids[offset + prefix_tokens:offset + window])))
    return prompts


def score_extraction(target_ids: Sequence[int], generated_ids: Sequence[int], target_text: str,
                     generated_text: str) -> dict:
    """exact, matching_prefix (tokens), token_match_fraction, char_distance, char_similarity, n_target, n_generated.

    Only the first len(target_ids) generated tokens count; missing positions count as mismatches."""
    target = [int(t) for t in target_ids]
    gen = [int(t) for t in generated_ids][:len(target)]
    prefix = 0
    for a, b in zip(target, gen):
        if a != b:
            break
        prefix += 1
    matched = sum(a == b for a, b in zip(target, gen))
    return {
        "exact": len(gen) == len(target) and gen == target,
        "matching_prefix": prefix,
        "token_match_fraction": matched / len(target) if target else 1.0,
        "char_distance": Levenshtein.distance(target_text, generated_text),
        "char_similarity": float(Levenshtein.normalized_similarity(target_text, generated_text)),
        "n_target": len(target),
        "n_generated": len(gen),
    }


def summarize_extraction(rows: Sequence[dict]) -> dict:
    """n, exact_k, exact_rate, exact_ci_low/high (95% Wilson), char_distance_mean, char_distance_q10/q25/q50/q75/q90,
    char_similarity_mean, mean_matching_prefix, mean_token_match_fraction (NaN where there are no rows)."""
    n = len(rows)
    k = sum(bool(r["exact"]) for r in rows)
    lo, hi = wilson(k, n)
    nan = float("nan")
    d = np.asarray([r["char_distance"] for r in rows], dtype=float)
    out = {"n": n, "exact_k": k, "exact_rate": k / n if n else nan, "exact_ci_low": lo, "exact_ci_high": hi,
           "char_distance_mean": float(d.mean()) if n else nan}
    qs = np.quantile(d, QUANTILES) if n else [nan] * len(QUANTILES)
    for q, v in zip(QUANTILES, qs):
        out[f"char_distance_q{round(q * 100)}"] = float(v)
    for key, name in (("char_similarity", "char_similarity_mean"), ("matching_prefix", "mean_matching_prefix"),
                      ("token_match_fraction", "mean_token_match_fraction")):
        out[name] = float(np.mean([r[key] for r in rows])) if n else nan
    return out


def distance_histogram(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Histogram of the character edit distance between target and generation (0 = extracted verbatim)."""
    from cp_assets.lib.core.plots import histogram

    d = [r["char_distance"] for r in rows]
    bins = max(1, min(40, (max(d) if d else 0) + 1))
    return histogram(d, Path(path), title, "character edit distance to the true continuation", bins=bins)
