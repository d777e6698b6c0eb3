"""Generation over HTTP from any OpenAI-compatible server: OpenAI itself, `vllm serve`, llama.cpp
(`python -m llama_cpp.server`), `transformers serve`.

Uses the official `openai` client. `spec.endpoint` picks /v1/chat/completions (the server applies the chat template)
or /v1/completions (the prompt is sent as plain text). Requests run `spec.max_concurrency` at a time on a thread pool
and each Rollout is yielded as it completes. The client itself retries 408, 409, 429, 5xx, timeouts and connection
errors `spec.max_retries` times (default 5), with no retry loop of ours on top: it waits 0.5 s doubling up to 8 s
(less 0-25 % jitter), or what Retry-After / retry-after-ms asks for up to 2 min (a longer Retry-After is not retried:
the error surfaces at once); each request waits `spec.timeout_s`. `metadata["retries"]` counts the retries taken.

Logprobs are asked for when `params.logprobs` (chat: `logprobs=True, top_logprobs=1`; completion: `logprobs=1`) and
stored where the server gives them (llama.cpp does; `transformers serve` ignores the field); a server that refuses the
field is asked again without it. Token ids are kept only where the server
returns them (vLLM's `token_ids`), else None. The API key comes from `spec.api_key()` only, and is scrubbed from every
error message; it never reaches Rollout metadata.

`score(texts)` (membership inference) asks /v1/completions for the prompt's own token logprobs (`echo=True,
logprobs=1, max_tokens=1`), which `vllm serve` and OpenAI's echo-capable completion models return; a server that
ignores echo/logprobs (`transformers serve`) or refuses them (chat-only models) raises `ScoringUnavailable`.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cp_assets.lib.evals.generation import (
    GenerationError,
    GenerationRequest,
    Rollout,
    SamplingParams,
    make_rollout,
    now,
)
from cp_assets.lib.evals.model_registry import ModelRegistryError, ModelSpec
from cp_assets.lib.evals.scoring import ScoringUnavailable, TokenScores

_CONTEXT_WORDS = ("context length", "context window", "maximum context", "too long", "exceed", "max_model_len",
                  "maximum length", "too many tokens")
_MODEL_WORDS = ("model_not_found", "does not exist", "unknown model", "no such model", "not found", "pinned to")
MAX_RETRY_AFTER_S = 120  # the openai client's ceiling: a longer Retry-After is not waited for
_NO_ECHO_WORDS = ("echo", "logprob", "chat model", "not supported", "unsupported")  # a refusal of scoring requests


class _Refused(Exception):
    """The reply (or the server's model list) cannot be used: the message says why."""


class OpenAIBackend:
    """An OpenAI-compatible server at `spec.base_url`, serving `spec.served_name`."""

    backend = "openai"

    def __init__(self, spec: ModelSpec):
        self.spec, self.model_id = spec, spec.id
        self._client = None
        self._client_lock = threading.Lock()
        self._logprobs_refused = False  # the server rejected the logprobs field once: stop asking
        self._model_checked = False

    # -- client ---------------------------------------------------------------------------------------------------
    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=self.spec.base_url, api_key=self.spec.api_key(),
                                             timeout=self.spec.timeout_s, max_retries=self.spec.max_retries)
            return self._client

    def _check_model(self) -> None:
        """Once: if GET /models answers with a list that lacks the served name, say so (llama.cpp's server silently
        answers with its default model). Any failure here is left to the real request to report."""
        if self._model_checked:
            return
        try:
            served = [m.id for m in self.client.with_options(max_retries=0, timeout=10).models.list().data]
        except Exception:  # noqa: BLE001 - unreachable, no /models, malformed: the request itself will tell
            return
        self._model_checked = True
        if served and self.spec.served_name not in served:
            raise _Refused(f"the server at {self.spec.base_url} does not serve a model named "
                           f"{self.spec.served_name!r}; it serves {_short(served, 200)} (set `model:` in models.yaml)")

    # -- Backend protocol -----------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> Iterator[Rollout]:
        """Yield rollouts as they complete. On a failure, requests not yet started are cancelled, those in flight
        are finished and yielded, then the first error is raised."""
        if not requests:
            return
        pool = ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, len(requests)),
                                  thread_name_prefix=f"openai-{self.model_id}")
        try:
            pending = {pool.submit(self._one, r, params, None) for r in requests}
            error: BaseException | None = None
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut.cancelled():
                        continue
                    if fut.exception() is not None:
                        if error is None:
                            error = fut.exception()
                            for other in pending:
                                other.cancel()
                        continue
                    yield fut.result()
            if error is not None:
                raise error
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def stream(self, request: GenerationRequest, params: SamplingParams,
               on_text: Callable[[str], None]) -> Rollout:
        return self._one(request, params, on_text)

    # -- membership inference -------------------------------------------------------------------------------------
    def score(self, texts: Sequence[str], *, max_tokens: int = 512) -> list[TokenScores]:
        """Prompt-token logprobs of each text (in input order; `spec.max_concurrency` requests at a time) from the
        legacy completions endpoint with echo. The first token (the server's BOS where it adds one, else the text's
        first token) has no logprob and is not scored; an empty text has no tokens and is not sent. At most
        `max_tokens` tokens are kept (`truncated=True`, `text` cut at the server's text offsets where its tokens are
        strings, else left whole). mu/sigma are None: only the chosen token's logprob is known. token_ids are the
        server's where it gives them (vLLM's `--return-tokens-as-token-ids`, `prompt_token_ids`), else -1 (OpenAI
        gives only token strings)."""
        if not texts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, len(texts)),
                                thread_name_prefix=f"score-{self.model_id}") as pool:
            futures = [pool.submit(self._score_one, t, max_tokens) for t in texts]
            try:
                return [f.result() for f in futures]
            finally:
                for f in futures:
                    f.cancel()

    def _score_one(self, text: str, max_tokens: int) -> TokenScores:
        if not text:
            return TokenScores(text, [], np.zeros(0))
        try:
            self._check_model()
            reply = self.client.completions.create(model=self.spec.served_name, prompt=text, echo=True, logprobs=1,
                                                   max_tokens=1, temperature=0.0)
        except Exception as exc:  # noqa: BLE001 - a refusal of echo/logprobs is ScoringUnavailable, the rest as usual
            body = _body_text(exc)
            if _status(exc) in (400, 404, 422) and any(w in body.lower() for w in _NO_ECHO_WORDS):
                raise self._unavailable(f"refused the request (HTTP {_status(exc)}: {body})") from None
            raise GenerationError(self.model_id, self._explain(exc)) from None
        choices = getattr(reply, "choices", None)
        if not choices:
            raise GenerationError(self.model_id, self._scrub(f"malformed reply from {self.spec.base_url}: no choices "
                                                             f"in {_short(reply)}"))
        c, usage = choices[0], getattr(reply, "usage", None)
        lp = getattr(c, "logprobs", None)
        values, tokens = getattr(lp, "token_logprobs", None), getattr(lp, "tokens", None) or []
        if not values:
            raise self._unavailable("returned no logprobs for the prompt (it ignores echo/logprobs)")
        n = getattr(usage, "prompt_tokens", None)
        if n is None:  # no usage: the prompt's tokens are those that start inside the prompt text
            n = sum(1 for off in (getattr(lp, "text_offset", None) or []) if off < len(text))
        if not n or len(values) < n or (c.text is not None and not c.text.startswith(text)):
            raise self._unavailable("returned logprobs for the generated token only (it ignores echo)")
        scored = values[1:n]
        if any(v is None for v in scored):
            raise GenerationError(self.model_id, f"malformed reply from {self.spec.base_url}: a prompt token after "
                                  f"the first has no logprob")
        ids = _token_ids(tokens[:n], (getattr(c, "model_extra", None) or {}).get("prompt_token_ids"), n)[1:]
        cut = len(scored) > max_tokens
        if cut:
            scored, ids = scored[:max_tokens], ids[:max_tokens]
            offsets = list(getattr(lp, "text_offset", None) or [])
            as_text = not any(str(t).startswith("token_id:") for t in tokens)  # else the offsets count "token_id:.."
            end = offsets[max_tokens + 1] if as_text and len(offsets) > max_tokens + 1 else None
            text = text[:end] if end is not None and 0 < end <= len(text) and offsets == sorted(offsets) else text
        return TokenScores(text, ids, np.asarray(scored, dtype=np.float64), truncated=cut)

    def _unavailable(self, why: str) -> ScoringUnavailable:
        return ScoringUnavailable(self.model_id, self._scrub(
            f"cannot score texts: the server at {self.spec.base_url} (model {self.spec.served_name!r}) {why}; "
            f"membership inference needs the prompt tokens' logprobs (legacy /completions with echo=True and "
            f"logprobs): serve the model with `vllm serve`, use an OpenAI model that supports echo (davinci-002, "
            f"babbage-002), or score it with the local backend"))

    # -- one request ----------------------------------------------------------------------------------------------
    def _one(self, req: GenerationRequest, params: SamplingParams,
             on_text: Callable[[str], None] | None) -> Rollout:
        chat = self.spec.endpoint == "chat"
        want_lp = params.logprobs and not self._logprobs_refused
        started, t0 = now(), time.perf_counter()
        try:
            self._check_model()
            try:
                raw = self._call(req, params, chat, want_lp, stream=on_text is not None)
            except Exception as exc:  # noqa: BLE001 - a server that refuses logprobs: ask again without
                if not (want_lp and _status(exc) in (400, 422) and "logprob" in _body_text(exc).lower()):
                    raise
                self._logprobs_refused, want_lp = True, False
                raw = self._call(req, params, chat, False, stream=on_text is not None)
            reply = raw.parse()
            if on_text is None:
                out = self._read_reply(reply, chat, params.stop)
            else:
                out = self._read_stream(reply, chat, on_text, t0, params.stop)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a GenerationError naming model and sample
            raise GenerationError(self.model_id, self._explain(exc), req.sample_id) from None
        latency = time.perf_counter() - t0
        usage = out.pop("usage")
        self._check_context(usage, req)
        meta = {"endpoint": self.spec.endpoint, "base_url": self.spec.base_url, "served_model": self.spec.served_name,
                "usage": usage, "retries": raw.retries_taken, "logprobs_requested": want_lp} | out.pop("meta")
        return make_rollout(self, req, params, started_at=started, latency_s=round(latency, 4),
                            rendered_prompt=None if chat else _plain_prompt(req), metadata=meta, **out)

    def _call(self, req: GenerationRequest, params: SamplingParams, chat: bool, logprobs: bool, stream: bool):
        kw: dict[str, Any] = dict(model=self.spec.served_name, max_tokens=params.max_tokens,
                                  temperature=params.temperature, top_p=params.top_p)
        if params.seed is not None:
            kw["seed"] = params.seed
        if params.stop:
            kw["stop"] = list(params.stop)
        if stream:
            kw["stream"] = True
        if chat:
            messages = ([{"role": "system", "content": req.system_prompt}] if req.system_prompt else [])
            messages.append({"role": "user", "content": req.prompt})
            if logprobs:  # llama.cpp's server returns chat logprobs only when top_logprobs is set too
                kw.update(logprobs=True, top_logprobs=1)
            return self.client.chat.completions.with_raw_response.create(messages=messages, **kw)
        if logprobs:
            kw["logprobs"] = 1
        return self.client.completions.with_raw_response.create(prompt=_plain_prompt(req), **kw)

    def _read_reply(self, reply: Any, chat: bool, stop: tuple[str, ...]) -> dict:
        choices = getattr(reply, "choices", None)
        if not choices:
            raise _Refused(f"malformed reply from {self.spec.base_url}: no choices in {_short(reply)}")
        c = choices[0]
        if chat:
            text = getattr(getattr(c, "message", None), "content", None)
            lps = _chat_logprobs(getattr(c, "logprobs", None))
        else:
            text = getattr(c, "text", None)
            lps = _completion_logprobs(getattr(c, "logprobs", None))
        if text is None and c.finish_reason is None:
            raise _Refused(f"malformed reply from {self.spec.base_url}: a choice with no text ({_short(c)})")
        return self._fields(_cut_at_stop(text or "", stop), c, lps, getattr(reply, "usage", None))

    def _read_stream(self, chunks: Any, chat: bool, on_text: Callable[[str], None], t0: float,
                     stop: tuple[str, ...]) -> dict:
        pieces: list[str] = []
        lps: list[float] = []
        last, usage, ttft, cut, so_far = None, None, None, False, ""
        for chunk in chunks:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            for c in getattr(chunk, "choices", None) or []:
                piece = (getattr(c.delta, "content", None) if chat else getattr(c, "text", None)) or ""
                lp = getattr(c, "logprobs", None)
                lps += (_chat_logprobs(lp) if chat else _completion_logprobs(lp)) or []
                if piece and not cut:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    text = _cut_at_stop(so_far + piece, stop)
                    cut = len(text) < len(so_far) + len(piece)
                    piece, so_far = text[len(so_far):], text
                    if piece:
                        pieces.append(piece)
                        on_text(piece)
                if c.finish_reason:
                    last = c
        if last is None and not pieces:
            raise _Refused(f"malformed stream from {self.spec.base_url}: no choices")
        out = self._fields(so_far, last, lps or None, usage)
        out["meta"] |= {"stream_pieces": len(pieces), "ttft_s": round(ttft, 4) if ttft is not None else None}
        return out

    def _fields(self, text: str, choice: Any, lps: list[float] | None, usage: Any) -> dict:
        extra = (getattr(choice, "model_extra", None) or {}) if choice is not None else {}
        ids = extra.get("token_ids")
        return {"completion": text, "finish_reason": getattr(choice, "finish_reason", None) or "unknown",
                "logprobs": lps, "completion_token_ids": list(ids) if ids else None,
                "prompt_token_ids": extra.get("prompt_token_ids") or None,
                "usage": usage.model_dump(exclude_none=True) if hasattr(usage, "model_dump") else None, "meta": {}}

    def _check_context(self, usage: dict | None, req: GenerationRequest) -> None:
        """Servers that do not enforce the context (transformers serve) run past it silently: refuse the result."""
        limit = self.spec.context_length
        if not (limit and usage and usage.get("prompt_tokens") is not None):
            return
        n, m = usage["prompt_tokens"], usage.get("completion_tokens") or 0
        if n + m > limit:
            raise GenerationError(self.model_id, f"prompt of {n} tokens + {m} generated exceed the context length "
                                  f"{limit} (the server did not refuse it; output past the context is unreliable): "
                                  f"shorten the prompt or lower max_tokens", req.sample_id)

    # -- errors ---------------------------------------------------------------------------------------------------
    def _explain(self, exc: BaseException) -> str:
        import openai

        url, name, tries = self.spec.base_url, self.spec.served_name, self.spec.max_retries
        if isinstance(exc, openai.APITimeoutError):
            msg = f"no reply from {url} within {self.spec.timeout_s:g} s (after {tries} retries)"
        elif isinstance(exc, openai.APIConnectionError):
            msg = (f"cannot connect to the server at {url} (after {tries} retries): the server must be started "
                   f"first (e.g. `python -m llama_cpp.server --model <file.gguf> --port <port>` or "
                   f"`transformers serve <model dir>`) or base_url fixed in models.yaml")
        elif isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            env = self.spec.api_key_env or "api_key_env"
            msg = f"the server at {url} refused the API key (HTTP {_status(exc)}): check ${env}"
        elif isinstance(exc, openai.APIStatusError):
            body, code = _body_text(exc), _status(exc)
            low = body.lower()
            if code in (400, 413, 422) and any(w in low for w in _CONTEXT_WORDS):
                limit = f" ({self.spec.context_length} tokens in models.yaml)" if self.spec.context_length else ""
                msg = (f"the prompt is longer than the model's context{limit}: the server at {url} refused it "
                       f"(HTTP {code}): {body}")
            elif code in (400, 404) and "model" in low and any(w in low for w in _MODEL_WORDS):
                msg = (f"the server at {url} does not serve a model named {name!r} (HTTP {code}): {body}; "
                       f"GET {url.rstrip('/')}/models lists what it serves (set `model:` in models.yaml)")
            elif code == 404:
                msg = (f"{url} answered 404 for the {self.spec.endpoint} endpoint (wrong base_url, or the server "
                       f"does not offer it): {body}")
            elif (code == 429 or code >= 500) and (_retry_after(exc) or 0) > MAX_RETRY_AFTER_S:
                msg = (f"the server at {url} answered HTTP {code} asking to retry after {_retry_after(exc):g} s, over "
                       f"the client's {MAX_RETRY_AFTER_S} s ceiling: not retried: {body}")
            elif code == 429 or code >= 500:
                msg = f"the server at {url} answered HTTP {code} after {tries} retries: {body}"
            else:
                msg = f"the server at {url} refused the request (HTTP {code}): {body}"
        elif isinstance(exc, openai.APIResponseValidationError):
            msg = f"malformed reply from {url}: {exc}"
        elif isinstance(exc, (_Refused, ModelRegistryError)):  # our findings; a missing key
            msg = str(exc)
        else:
            msg = f"request to {url} failed: {type(exc).__name__}: {exc}"
        return self._scrub(msg)

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.spec.api_key_env) if self.spec.api_key_env else None
        return text.replace(key, "<redacted>") if key else text


def _plain_prompt(req: GenerationRequest) -> str:
    return f"{req.system_prompt}\n\n{req.prompt}" if req.system_prompt else req.prompt


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """OpenAI leaves the stop sequence out; some servers (transformers serve) keep it."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text


def _chat_logprobs(lp: Any) -> list[float] | None:
    content = getattr(lp, "content", None)
    return [float(t.logprob) for t in content] if content else None


def _completion_logprobs(lp: Any) -> list[float] | None:
    values = getattr(lp, "token_logprobs", None)
    return [float(x) for x in values if x is not None] if values else None


def _token_ids(tokens: Sequence[str], prompt_ids: Any, n: int) -> list[int]:
    """The prompt's token ids: from vLLM's "token_id:<id>" tokens or its `prompt_token_ids`, else -1 each."""
    if len(tokens) == n and all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return [int(t.split(":", 1)[1]) for t in tokens]
    if isinstance(prompt_ids, list) and len(prompt_ids) == n:
        return [int(t) for t in prompt_ids]
    return [-1] * n


def _retry_after(exc: BaseException) -> float | None:
    """The Retry-After of an error reply, in seconds (None: absent or a date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return float(headers.get("retry-after-ms")) / 1000 if headers.get("retry-after-ms") else \
            float(headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status_code", None)


def _body_text(exc: BaseException) -> str:
    """The server's own error message ({"error": {"message"}} for OpenAI and llama.cpp, {"detail"} for FastAPI)."""
    body = getattr(exc, "body", None)
    for _ in range(2):
        if isinstance(body, dict):
            body = body.get("error") or body.get("message") or body.get("detail") or body
    return _short(body if body else exc)


def _short(obj: Any, n: int = 300) -> str:
    s = str(obj)
    return s if len(s) <= n else s[:n] + "..."
