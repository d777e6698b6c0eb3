"""A split cut into 8 shards, each materialized as its own partition, gives what the same files give as one shard:
the same documents, chunks, vectors (within bf16 tolerance), n-gram counts and contamination rows; re-materializing
one shard touches no other."""

import numpy as np
import pytest

import dagster as dg

from cp_assets_tests.conftest import SHARD_FILES, corpus_key, metadata, shard_instance

SLUG = "all_minilm_l6_v2"


@pytest.fixture(scope="module")
def built(store, resources):
    from cp_assets.definitions import corpus_assets, corpus_checks
    from cp_assets.lib.corpus.ngram_split import drop_split_index
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.shards import shard_keys

    plans = shard_keys(load_registry())
    assert len(plans["sharded"]) == SHARD_FILES and plans["whole"] == ["00000"]
    instance = shard_instance()
    instance.add_dynamic_partitions("corpus_shards", plans["sharded"][1:])
    results = {}
    for split, shards in (("sharded", plans["sharded"]), ("whole", ["00000"])):
        for shard in shards:
            res = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key(split, shard),
                                 instance=instance, resources=resources)
            assert res.success and all(c.passed for c in res.get_asset_check_evaluations())
            results[split, shard] = res
    # `whole` has no shard 00001..00007: those partitions are empty shards, and pass their checks
    empty = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key("whole", "00003"),
                           instance=instance, resources=resources)
    assert empty.success and all(c.passed for c in empty.get_asset_check_evaluations())
    assert metadata(empty, "raw_corpus")["status"] == "empty_shard" and store.count("raw_corpus", "whole") == 245
    yield instance, results
    for split in ("sharded", "whole"):
        store.drop_split(split)
        drop_split_index(split)


def test_eight_shards_equal_one(built, store):
    from cp_assets.lib.corpus.ngram_split import SplitIndex, open_index

    docs = {s: [(d.doc_id, d.text) for d in store.iter_documents(s)] for s in ("sharded", "whole")}
    assert docs["sharded"] == docs["whole"] and len(docs["whole"]) == 8 * 30 + 5
    per_shard = [store.count("raw_corpus", "sharded", shard=f"{i:05d}") for i in range(SHARD_FILES)]
    assert per_shard == [31] * 5 + [30] * 3
    chunks = {s: [(c, h) for c, h, _, _ in store.chunk_rows(s)] for s in ("sharded", "whole")}
    assert chunks["sharded"] == chunks["whole"]
    ids_a, a = store.load_matrix(SLUG, "sharded")
    ids_b, b = store.load_matrix(SLUG, "whole")
    assert ids_a == ids_b and len(ids_a) == len(chunks["whole"])
    assert float(np.min(np.sum(a * b, axis=1))) > 0.999  # bf16 autocast: batches differ, vectors agree
    sharded, whole = open_index("sharded"), open_index("whole")
    assert isinstance(sharded, SplitIndex) and len(sharded.shards) == SHARD_FILES
    for key in ("n_docs", "n_tokens", "n_postings"):
        assert sharded.stats()[key] == whole.stats()[key], key


def test_contamination_rows_are_the_same(built, store):
    import gzip
    import json

    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.ngram_split import open_index
    from cp_assets.lib.corpus.search import search
    from cp_assets.lib.reports.contamination import contamination_rows

    with gzip.open(settings.data_dir() / "gsm8k" / "test.jsonl.gz", "rt") as fh:
        items = [(f"gsm8k:{i}", json.loads(line)["question"]) for i, line in zip(range(10), fh)]
    rows = {}
    for split in ("sharded", "whole"):
        hits = search(store, [t for _, t in items], split=split, k=1, exact=True, engine="pgvector")
        nearest = {sid: (h[0].distance, None) for (sid, _), h in zip(items, hits)}
        corpus = (d.text for d in store.iter_documents(split))
        rows[split] = contamination_rows("gsm8k", split, items, open_index(split), corpus, nearest)
    # (eval_set, sample_id, split, n, n_tokens, overlap, share, longest, bucket, substrings, distance, percentile,
    #  flagged, reason, rare_share): the distance within bf16 tolerance, everything else equal
    assert [r[1] for r in rows["whole"] if r[12]] == [f"gsm8k:{i}" for i in range(5)], "the planted five, only"
    for a, b in zip(rows["sharded"], rows["whole"], strict=True):
        assert a[:2] + a[3:10] + a[11:] == b[:2] + b[3:10] + b[11:]
        assert abs(a[10] - b[10]) < 2e-3


def test_rematerializing_one_shard_touches_no_other(built, store, resources):
    from cp_assets.definitions import corpus_assets, corpus_checks

    instance, _ = built
    before = {(p["kind"], p["model_slug"], p["shard"]): (p["version"], p["updated_at"])
              for p in store.shard_partitions() if p["split"] == "sharded"}
    res = dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key("sharded", "00003"),
                         instance=instance, resources=resources)
    assert res.success and metadata(res, "embeddings")["status"] == "up_to_date"
    after = {(p["kind"], p["model_slug"], p["shard"]): (p["version"], p["updated_at"])
             for p in store.shard_partitions() if p["split"] == "sharded"}
    changed = sorted(k for k in after if after[k] != before[k])
    assert {shard for _, _, shard in changed} == {"00003"}, changed
    assert {kind for kind, _, _ in changed} == {"raw_corpus", "chunks"}  # replaced; the vectors were up to date
