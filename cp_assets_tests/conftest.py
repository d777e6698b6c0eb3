"""Test set-up: a private CPROX_HOME (its own embedded Postgres) and a tiny corpus registry over the shared data.

The environment is set before anything imports cp_assets, because the split partitions are read from the registry
when the definitions load.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

TEST_HOME = Path(tempfile.mkdtemp(prefix="cprox_test_"))
REGISTRY = TEST_HOME / "corpora.yaml"
REGISTRY.write_text("""
splits:
  tiny:
    description: a few FineWeb-Edu documents, sonnets and Austen chapters
    sources:
      - path: fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz
        name: fineweb
        text_field: text
        id_field: id
        limit: 12
      - path: public_domain_texts/shakespeare_sonnets.txt.gz
        name: sonnets
        split_on: '^\\s*$'
        limit: 20
      - path: public_domain_texts/austen_pride_and_prejudice.txt.gz
        name: austen
        split_on: '^Chapter \\d+'
        limit: 3
  math:
    description: GSM8K train conversations
    sources:
      - path: gsm8k/train.jsonl.gz
        name: gsm8k
        template: "User: {question}\\nAssistant: {answer}"
        limit: 40
  contam:
    description: GSM8K test items planted in web text (contamination acceptance test; written by its fixture)
    sources:
      - path: %s
        name: contam
        text_field: text
        id_field: id
""" % (TEST_HOME / "contam.jsonl.gz") + "".join(f"""
  {split}:
    description: {about}{shard_bytes}
    sources:
      - path: {TEST_HOME / "gsm_shards"}/
        name: gsm
        text_field: text
        id_field: id""" for split, about, shard_bytes in (
    ("sharded", "eight small JSONL files, each its own shard (test_shard_equivalence.py)", "\n    shard_bytes: 1"),
    ("sharded_celery", "the same eight files, eight shards, run by dagster-celery workers (test_shard_equivalence.py)",
     "\n    shard_bytes: 1"),
    ("sharded_kill", "the same eight files, eight shards, killed mid-shard and rerun (test_shard_kill.py)",
     "\n    shard_bytes: 1"),
    ("whole", "the same eight files as one shard", ""))) + "\n")
TRAINING = TEST_HOME / "training.yaml"
TRAINING.write_text("""
base: {split: tiny, size: test, optimizers: [adamw, muon], seeds: [0], member_chars: 20000, epochs: 2,
       heldout_documents: 12, include_recall_documents: true}
sft: {split: math, epochs: 1, max_chars: 20000}
""")
os.environ.update(
    CPROX_HOME=str(TEST_HOME),
    CPROX_TRAINING=str(TRAINING),
    CPROX_CORPORA=str(REGISTRY),
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
    DAGSTER_HOME=str(TEST_HOME / "dagster_home"),
    # converted GGUF checkpoints outlive the test run (converting SmolLM2 takes ~20 s)
    CPROX_MODEL_CACHE=str(Path(__file__).resolve().parents[1] / ".cprox" / "models"),
)
os.environ.pop("CPROX_DATABASE_URL", None)
# Under pytest-xdist (`make test` runs 2 workers) each worker, and every process its tests start, gets its share of the
# cores for torch's OpenMP threads: set before anything imports torch, so two workers do not oversubscribe 2 cores.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))
(TEST_HOME / "dagster_home").mkdir(exist_ok=True)
SPLITS = ("tiny", "math")  # materialized once for the session by `materialized`
# contam: built and dropped by test_contamination; sharded, sharded_celery and whole by test_shard_equivalence,
# sharded_kill by test_shard_kill
REGISTRY_SPLITS = SPLITS + ("contam", "sharded", "sharded_celery", "sharded_kill", "whole")
SHARD_FILES = 8


def _write_gsm_shards() -> None:
    """Eight JSONL files of GSM8K train conversations (lines 1000-1239), five of them with a GSM8K test question
    planted verbatim: the `sharded` and `whole` splits read them (the registry needs them to exist)."""
    import gzip
    import json

    from cp_assets.lib.core import settings

    data = settings.data_dir()
    with gzip.open(data / "gsm8k" / "train.jsonl.gz", "rt") as fh:
        train = [json.loads(line) for _, line in zip(range(1240), fh)][1000:]
    with gzip.open(data / "gsm8k" / "test.jsonl.gz", "rt") as fh:
        test = [json.loads(line) for _, line in zip(range(5), fh)]
    folder = TEST_HOME / "gsm_shards"
    folder.mkdir(exist_ok=True)
    for f in range(SHARD_FILES):
        rows = [{"id": f"t{1000 + 30 * f + i}", "text": f"User: {r['question']}\nAssistant: {r['answer']}"}
                for i, r in enumerate(train[30 * f:30 * f + 30])]
        if f < len(test):
            rows.append({"id": f"planted{f}", "text": f"Worked example. {test[f]['question']} {test[f]['answer']}"})
        (folder / f"part-{f:02d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


_write_gsm_shards()
# the longest files first, so `--dist loadfile` does not leave one of them for the end (durations from `make test`)
LONGEST_FIRST = ("test_contamination.py", "test_shard_equivalence.py", "test_train.py", "test_shard_kill.py",
                 "test_crash_resume.py", "test_backfill.py",
                 "test_ui_browser.py", "test_cli_kill_rerun.py", "test_cache_faults.py", "test_assets.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def store():
    from cp_assets.lib.corpus import embedded_pg
    from cp_assets.lib.corpus.pgvector_store import PgStore

    s = PgStore(home=TEST_HOME)
    s.ensure_schema()
    yield s
    embedded_pg.stop(TEST_HOME)
    shutil.rmtree(TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def resources(store):
    from cp_assets.resources import local_resources

    return local_resources()


def shard_instance(instance=None):
    """`instance` (default: a new ephemeral one) with the shard partition `00000`: every test split is one shard."""
    import dagster as dg

    inst = instance or dg.DagsterInstance.ephemeral()
    if "00000" not in inst.get_dynamic_partitions("corpus_shards"):
        inst.add_dynamic_partitions("corpus_shards", ["00000"])
    return inst


def corpus_key(split: str, shard: str = "00000"):
    """The corpus assets' partition key of one shard of a split."""
    from cp_assets.defs.core.partitions import corpus_key as key

    return key(split, shard)


@pytest.fixture(scope="session")
def materialized(store, resources):
    """Every corpus asset and check, materialized once for each test split (each is one shard)."""
    import dagster as dg

    from cp_assets.definitions import corpus_assets, corpus_checks

    results = {}
    for split in SPLITS:
        results[split] = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key(split),
                                        instance=shard_instance(), resources=resources)
        assert results[split].success
    return results


def metadata(result, asset: str) -> dict:
    [ev] = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in ev.materialization.metadata.items()}


@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib figure the code under test closes, kept open so a test can read what it drew."""
    from cp_assets.lib.core.plots import pyplot

    plt = pyplot()
    kept, real_close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        real_close(fig)


def png_size(path) -> tuple[int, int]:
    """(width, height) of a PNG file, from its IHDR chunk; fails on anything that is not a PNG."""
    import struct

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])
