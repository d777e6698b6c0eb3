"""Rollouts of an eval set: the backend of a model id (`backend_for`), `generate()` / `stream()` over any backend,
and the resumable eval run behind asset `rollouts`: `generate_and_store` (what is missing, persisted as it completes),
`run_eval` (one eval set x model: generated, graded, stored), `accuracy_by` (graded rollouts per difficulty) and
`eval_rollouts` (the asset's work: `run_eval` with its metadata and data version).

The types these pass around (`SamplingParams`, `GenerationRequest`, `Rollout`, the `Backend` protocol) are in
`cp_assets.lib.evals.generation`; the backends themselves in `cp_assets.lib.evals.backends`.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterator, Sequence

from cp_assets.lib.evals.generation import (
    Backend,
    GenerationRequest,
    Rollout,
    SamplingParams,
)
from cp_assets.lib.evals.model_registry import ModelRegistry, ModelSpec, load_models


def backend_for(spec: ModelSpec, device: str | None = None) -> Backend:
    """The backend object for a model spec; heavy imports (torch, openai, vllm) happen only here, when needed."""
    if spec.backend == "local":
        from cp_assets.lib.evals.backends.local import LocalBackend

        return LocalBackend(spec, device=device)
    if spec.backend == "tiny":
        from cp_assets.lib.evals.backends.tiny import TinyBackend

        return TinyBackend(spec, device=device)
    if spec.backend == "openai":
        from cp_assets.lib.evals.backends.openai_compat import OpenAIBackend

        return OpenAIBackend(spec)
    from cp_assets.lib.evals.backends.vllm_engine import VLLMBackend

    return VLLMBackend(spec)


def generate(model_id: str, requests: Sequence[GenerationRequest], params: SamplingParams | None = None, *,
             registry: ModelRegistry | None = None, device: str | None = None) -> Iterator[Rollout]:
    backend = backend_for((registry or load_models()).get(model_id), device=device)
    return backend.generate(list(requests), params or SamplingParams())


def stream(model_id: str, request: GenerationRequest, on_text: Callable[[str], None],
           params: SamplingParams | None = None, *, registry: ModelRegistry | None = None) -> Rollout:
    backend = backend_for((registry or load_models()).get(model_id))
    return backend.stream(request, params or SamplingParams(), on_text)


def generate_and_store(backend: Backend, requests: Sequence[GenerationRequest], params: SamplingParams, db,
                       *, grade: Callable[[Rollout], bool | None] | None = None, flush_every: int = 1,
                       log: Callable[[str], None] = print) -> dict:
    """Generate what is missing for (model, params) and persist rollouts as they complete.

    Requests whose (sample id, model, params hash) already has a rollout are skipped, so a killed run resumes and
    a rerun with the same parameters generates nothing. Returns figures for asset metadata."""
    import time

    eval_sets = {r.eval_set for r in requests}
    key = params.key(requests[0].system_prompt) if requests else params.key()
    done: set[str] = set()
    for es in eval_sets:
        done |= db.done_sample_ids(backend.model_id, key, es)
    todo = [r for r in requests if r.sample_id not in done]
    log(f"{backend.model_id}: {len(requests)} samples, {len(done & {r.sample_id for r in requests})} already "
        f"generated, {len(todo)} to generate (params {key})")
    pending: list[Rollout] = []
    n = tokens = 0
    t0 = last = time.perf_counter()
    for rollout in backend.generate(todo, params):
        if grade is not None:
            rollout = rollout.model_copy(update={"correct": grade(rollout)})
        pending.append(rollout)
        n += 1
        tokens += rollout.n_completion_tokens or 0
        if len(pending) >= flush_every or time.perf_counter() - last > 30:
            db.write_rollouts(pending)
            pending, last = [], time.perf_counter()
            rate = n / (last - t0)
            log(f"{backend.model_id}: {n}/{len(todo)} rollouts ({rate:.2f}/s, {tokens / (last - t0):.1f} tokens/s)")
    db.write_rollouts(pending)
    secs = time.perf_counter() - t0
    return {"requested": len(requests), "generated": n, "skipped_existing": len(requests) - len(todo),
            "params_hash": key, "seconds": round(secs, 2), "completion_tokens": tokens,
            "tokens_per_s": round(tokens / secs, 1) if secs and tokens else None}


def run_eval(backend: Backend, eval_set: str, params: SamplingParams, db, *, limit: int | None = None,
             system_prompt: str | None = None, log: Callable[[str], None] = print) -> tuple[dict, list[Rollout]]:
    """Generate and grade what is missing of one eval set for one model; return figures and every stored rollout of
    the set's (first `limit`) samples under these parameters."""
    from cp_assets.lib.evals.eval_registry import load_evals, to_request
    from cp_assets.lib.evals.grading import grade

    registry = load_evals()
    samples = registry.load_samples(eval_set, limit)
    by_id = {s.id: s for s in samples}
    definition = registry.get(eval_set)
    requests = [to_request(s, definition).model_copy(update={"system_prompt": system_prompt}) for s in samples]
    figures = generate_and_store(backend, requests, params, db, log=log,
                                 grade=lambda r: grade(by_id[r.sample_id], r.completion))
    stored = [r for r in db.rollouts(eval_set=eval_set, model_id=backend.model_id, params_hash=figures["params_hash"])
              if r.sample_id in by_id]
    graded = [r.correct for r in stored if r.correct is not None]
    figures |= {"model": backend.model_id, "backend": backend.backend, "eval_set": eval_set, "rollouts": len(stored),
                "accuracy": round(sum(graded) / len(graded), 4) if graded else None,
                "finish_reasons": dict(collections.Counter(r.finish_reason for r in stored)),
                "params": params.model_dump(mode="json"),
                "mean_latency_s": round(sum(r.latency_s for r in stored) / len(stored), 3) if stored else None}
    return figures, stored


def accuracy_by(rollouts: Sequence[Rollout], groups: Sequence[str] = ("level", "category", "n_steps")
                ) -> tuple[str | None, dict[Any, tuple[float, int]]]:
    """Accuracy of graded rollouts per value of the first metadata field present (difficulty level for MATH,
    category for recall, solution steps for GSM8K): (field, {value: (accuracy, n)})."""
    graded = [r for r in rollouts if r.correct is not None]
    field = next((g for g in groups if any(g in r.metadata for r in graded)), None)
    if field is None:
        return None, {}
    by: dict[Any, list[bool]] = {}
    for r in graded:
        by.setdefault(r.metadata.get(field), []).append(bool(r.correct))
    return field, {k: (sum(v) / len(v), len(v)) for k, v in sorted(by.items(), key=lambda kv: (kv[0] is None,
                                                                                             str(kv[0]).zfill(8)))}


def eval_rollouts(backend: Backend, eval_set: str, params: SamplingParams, db, *, limit: int | None = None,
                  system_prompt: str | None = None, log: Callable[[str], None] = print) -> tuple[dict, str]:
    """The `rollouts` asset's work: `run_eval`, then the metadata (its figures and a bar plot of accuracy by level,
    category or solution steps) and the content version of the stored rollouts."""
    from cp_assets.lib.core import plots, settings
    from cp_assets.lib.core.metadata import image
    from cp_assets.lib.core.versions import rollouts_version

    figures, stored = run_eval(backend, eval_set, params, db, limit=limit, system_prompt=system_prompt, log=log)
    extra = {}
    field, by = accuracy_by(stored)
    if by:
        png = plots.bars([str(k) for k in by], [a for a, _ in by.values()],
                         settings.home() / "plots" / f"rollouts_{eval_set}_{backend.model_id}.png",
                         f"{backend.model_id} on {eval_set}: accuracy by {field}", "accuracy",
                         [n for _, n in by.values()])
        extra[f"accuracy_by_{field}"] = image(png, f"accuracy by {field}")
    return extra | figures, rollouts_version(stored)


def rollouts_consistent(db, eval_set: str, model_id: str) -> tuple[bool, dict]:
    """The `rollouts` partition's blocking check: it has rows, and where a rollout records both its completion's
    token ids and logprobs (local, tiny and vLLM backends; an OpenAI-compatible server may return neither), there is
    one logprob per token: membership and provenance read them token by token. Also counted, not failed on: rollouts
    of samples `eval_samples` no longer holds (an eval set re-read, or rollouts asked past its `limit`), and completions
    without token ids."""
    with db.connect() as con:
        n, orphans, bad_logprobs, no_ids = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE s.sample_id IS NULL), "
            "count(*) FILTER (WHERE coalesce(len(r.completion_token_ids), 0) > 0 AND r.logprobs IS NOT NULL "
            "AND len(r.logprobs) <> len(r.completion_token_ids)), "
            "count(*) FILTER (WHERE r.completion <> '' AND coalesce(len(r.completion_token_ids), 0) = 0) "
            "FROM rollouts r LEFT JOIN eval_samples s ON s.sample_id = r.sample_id AND s.eval_set = r.eval_set "
            "WHERE r.eval_set = ? AND r.model_id = ?", [eval_set, model_id]).fetchone()
    figures = {"rollouts": n, "logprobs_not_one_per_token": bad_logprobs, "not_in_eval_samples": orphans,
               "completion_without_token_ids": no_ids}
    return n > 0 and bad_logprobs == 0, figures
