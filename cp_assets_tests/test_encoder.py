"""The encoder's precision: `CPROX_EMBED_PRECISION` picks fp32 or bfloat16 autocast, `auto` follows the hardware, and
the two agree closely on real text (benchmarks/precision.py measures the trade at scale)."""

import gzip
import json

import numpy as np
import pytest

from cp_assets.lib.core import settings
from cp_assets.lib.corpus import encoder

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def texts():
    with gzip.open(settings.data_dir() / "gsm8k" / "train.jsonl.gz", "rt") as fh:
        rows = [json.loads(line) for _, line in zip(range(16), fh)]
    return [f"User: {r['question']}\nAssistant: {r['answer']}" for r in rows]


def test_precision_setting_is_validated(monkeypatch):
    monkeypatch.setenv("CPROX_EMBED_PRECISION", "fp16")
    with pytest.raises(ValueError, match="CPROX_EMBED_PRECISION='fp16': choose one of auto, fp32, bf16"):
        settings.embed_precision()
    with pytest.raises(ValueError, match="embedding precision 'int8'"):
        encoder.resolve_precision("int8", "cpu")


def test_auto_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("CPROX_EMBED_PRECISION", raising=False)
    assert encoder.resolve_precision(None, "cpu") == ("bf16" if encoder.cpu_has_bf16() else "fp32")
    assert encoder.resolve_precision("fp32", "cpu") == "fp32" and encoder.resolve_precision("bf16", "cpu") == "bf16"
    assert encoder.resolve_precision("auto", "mps") == "fp32"
    monkeypatch.setenv("CPROX_EMBED_PRECISION", "fp32")
    assert encoder.resolve_precision(None, "cpu") == "fp32"


def test_bf16_runs_and_agrees_with_fp32(texts, monkeypatch):
    fp32 = encoder.encode(MODEL, texts, precision="fp32")
    bf16 = encoder.encode(MODEL, texts, precision="bf16")
    cos = (fp32 * bf16).sum(axis=1)
    assert not np.array_equal(fp32, bf16), "bf16 gave fp32's exact bits: autocast did not run"
    assert cos.min() > 0.9995, cos  # benchmarks/precision.py: min 0.999966 over 4,499 chunks
    assert np.allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-5) and bf16.dtype == np.float32
    monkeypatch.setenv("CPROX_EMBED_PRECISION", "fp32")
    assert np.array_equal(encoder.encode(MODEL, texts), fp32), "the setting is what encode() uses by default"
