"""benchmarks/markov_corpus.py, the synthetic corpus of the n-gram scale benchmark (issue 15): same seed, same bytes;
shard k the same whatever the number of shards; text that is not mostly repeats; readable by the corpus registry."""

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cp_assets.lib.corpus.registry import load_registry
from cp_assets.lib.corpus.sources import ReadStats, read_split
from cp_assets_tests.test_sources import make_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import markov_corpus as mc  # noqa: E402

SHARD = 60_000  # tokens per shard: small, so a run takes well under a second once the model is fitted


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-shard runs (twice, same seed), a three-shard run, and a run with another seed."""
    mc.load_model(log=lambda s: None)  # fit (~10-15 s) or load the cached model
    out = {}
    for name, tokens, seed in (("a", 2 * SHARD, 0), ("b", 2 * SHARD, 0), ("c", 3 * SHARD, 0), ("d", 2 * SHARD, 1)):
        path = tmp_path_factory.mktemp(name)
        out[name] = (path, mc.generate(path, tokens, seed=seed, shard_tokens=SHARD, log=lambda s: None))
    return out


def test_same_seed_same_bytes_and_shards_independent_of_their_number(runs):
    (a, fig), (b, _), (c, fig_c), (d, _) = runs["a"], runs["b"], runs["c"], runs["d"]
    assert fig["files"] == 2 and fig_c["files"] == 3
    # a shard stops at the document that reaches its target: past it by less than one document (~3,700 tokens mean)
    assert 2 * SHARD <= fig["tokens_est"] < 1.5 * 2 * SHARD
    for part in ("part-00000.parquet", "part-00001.parquet"):
        assert (a / part).read_bytes() == (b / part).read_bytes()
    assert (a / "part-00000.parquet").read_bytes() == (c / "part-00000.parquet").read_bytes()
    assert pq.read_table(a / "part-00000.parquet") != pq.read_table(d / "part-00000.parquet")


def test_shorter_last_shard_is_a_prefix_of_the_full_one(tmp_path, runs):
    mc.generate(tmp_path, SHARD + SHARD // 3, shard_tokens=SHARD, log=lambda s: None)
    full = pq.read_table(runs["a"][0] / "part-00001.parquet").to_pylist()
    short = pq.read_table(tmp_path / "part-00001.parquet").to_pylist()
    assert 0 < len(short) < len(full) and short == full[:len(short)]


# The floor of the distinct 8-gram share was chosen on some seeds and is checked on others. Chosen on seeds 0-9 (the
# first 200k tokens of each, measured 2026-12-05): 0.9941-0.9956, mean 0.9950, sd 0.0005 (three random 200k-token
# samples of the source text gave 0.991-0.994). If a share x of the text were repeats, the figure would fall by about
# x, so 0.99, nine sds under the tuning mean, fails a generator that repeats ~0.5% more of its text than this one.
# Checked on held-out seeds 10-13, which played no part in choosing it: with the floor fixed, seed 12 gave 0.982 (a
# document caught in a two-state loop of `??` lines for 2,700 tokens), which is how `markov_corpus.open_traps` came
# about; the floor was not moved.
DISTINCT_8GRAM_FLOOR, HELD_OUT_SEEDS = 0.99, (10, 11, 12, 13)


def first_tokens(tmp_path: Path, seed: int, n: int = 200_000) -> list[np.ndarray]:
    """WordPiece ids of the first `n` tokens of a run of `n` (estimated) tokens of `seed`, per document."""
    mc.generate(tmp_path / f"s{seed}", n, seed=seed, shard_tokens=n, log=lambda s: None)
    texts = pq.read_table(tmp_path / f"s{seed}" / "part-00000.parquet").column("text").to_pylist()
    ids = [np.array(e.ids, np.int64) for e in mc.tokenizer().encode_batch(texts, add_special_tokens=False)]
    # the estimate from words is 0.3% high on average (markov_corpus's figures), so a run may fall a little short
    # (seed 10: 199,649 of 200,000); 2% short would be a broken estimate, not one run's ~55 documents
    assert sum(map(len, ids)) >= 0.98 * n
    ends = np.cumsum([len(x) for x in ids])
    return [x[:max(0, n - (e - len(x)))] for x, e in zip(ids, ends)]


def distinct_share(ids: list[np.ndarray], n: int = 8) -> float:
    h = mc.ngram_hashes(ids, n)
    return len(np.unique(h)) / len(h)


@pytest.mark.parametrize("seed", HELD_OUT_SEEDS)
def test_distinct_8grams_of_200k_tokens_on_held_out_seeds(tmp_path, seed):
    ids = first_tokens(tmp_path, seed)
    assert distinct_share(ids) > DISTINCT_8GRAM_FLOOR
    # the check can fail: the same text with 1% of it repeated (a copy of its first 2,000 tokens) falls under it
    assert distinct_share(ids + [np.concatenate(ids)[:2000]]) < DISTINCT_8GRAM_FLOOR


def test_no_trap_in_the_chain():
    """`open_traps` redirects the way into a trap (a closed set of states the chain reaches from its sentence start,
    state 0, and cannot leave) to state 0 and changes nothing else: on a toy chain (0 -> 1 -> {2, 3}, 3 -> 0; 2 <-> 4
    a trap) and on the fitted model, which has no trap left (it had one before version 4)."""
    state = np.array([0, 1, 1, 2, 4, 3])
    nxt = np.array([1, 2, 3, 4, 2, 0])
    assert mc.open_traps(state, nxt, 5).tolist() == [1, 0, 3, 4, 2, 0]
    m = mc.load_model(log=lambda s: None)
    count = np.rint(m["states"][:, 1]).astype(np.int64)  # occurrences are sorted by state
    nxt = m["occurrences"][:, 1].astype(np.int64)
    assert np.array_equal(mc.open_traps(np.repeat(np.arange(len(count)), count), nxt, len(count)), nxt)


def test_registry_reads_the_shards(tmp_path, runs):
    folder = runs["c"][0]
    reg = load_registry(make_registry(tmp_path, {"markov": {"sources": [
        {"path": f"{folder}/", "name": "markov", "text_field": "text", "id_field": "id"}]}}), tmp_path)
    stats = ReadStats()
    docs = list(read_split(reg, "markov", stats))
    rows = [r for part in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(part).to_pylist()]
    assert len(docs) == len(rows) == runs["c"][1]["documents"] and not stats.skipped
    assert [d.text for d in docs] == [r["text"] for r in rows]
    assert docs[0].doc_id.endswith("markov-s0-00000-0000000")
