"""Parity with the peer: on real text (WikiText-2 and FineWeb-Edu from the shared data, with planted GSM8K
questions), this project's suffix-array index and infini-gram 2.6.0 (PyPI), fed the same MiniLM WordPiece ids, agree
on infini-gram's `count` for every span `trace` reports and on the longest match at every position of every query
(from infini-gram's own counts), with the index cut into several segments so that the merge across them is checked."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from cp_assets.lib.core import settings

infini_gram = pytest.importorskip("infini_gram.engine", reason="pip install infini-gram==2.6.0 (the peer)")


def _corpus() -> tuple[list[tuple[str, str]], list[str]]:
    data = settings.data_dir()
    wiki = gzip.open(data / "wikitext2_raw" / "wiki.test.raw.gz", "rt").read().split("\n = ")
    web = [json.loads(x)["text"] for x in gzip.open(data / "fineweb_edu_sample" /
                                                    "fineweb_edu_sample10bt_150.jsonl.gz", "rt")]
    gsm = [json.loads(x)["question"] for x in gzip.open(data / "gsm8k" / "test.jsonl.gz", "rt")]
    docs = [(f"wiki{i}", t) for i, t in enumerate(wiki[:120])] + [(f"web{i}", t) for i, t in enumerate(web[:100])]
    docs += [(f"planted{i}", web[100 + i] + " " + gsm[i]) for i in range(20)]  # GSM8K items 0-19 are in the corpus
    queries = gsm[:40] + [t[500:1500] for _, t in docs[:40:4]] + \
        [" ".join(p) for p in zip(gsm[40:60], (t[:300] for _, t in docs[60:80]))]
    return docs, queries


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from cp_assets.lib.corpus.exact import infini_gram_peer
    from cp_assets.lib.corpus.exact.ngram_index import NgramIndex

    root = tmp_path_factory.mktemp("parity")
    docs, queries = _corpus()
    ours = NgramIndex(root / "ours" / "00000.json", n=8)
    ours.update(docs, max_segment_tokens=60_000, log=lambda m: None)  # several segments
    peer = infini_gram_peer.export(ours, root / "peer")
    infini_gram_peer.build(peer, mem_gb=1, cpus=1)
    return ours, infini_gram_peer.engine(peer), queries, len(docs)


def test_the_index_has_several_segments_and_every_document(both):
    ours, _, _, n_docs = both
    assert len(ours.segments) >= 3 and ours.stats()["n_docs"] == n_docs > 100


def test_longest_match_at_every_position_equals_infini_gram(both):
    from cp_assets.lib.corpus.exact import infini_gram_peer
    from cp_assets.lib.corpus.exact.ngram_index import tokenize
    from cp_assets.lib.corpus.exact.ngram_search import longest_many

    ours, peer, queries, _ = both
    toks = tokenize(ours.tokenizer, queries)
    positions = 0
    for tk, lg in zip(toks, longest_many(ours.segments, [t.ids for t in toks])):
        assert lg.length.tolist() == infini_gram_peer.longest(peer, tk.ids)
        positions += len(tk)
    assert positions > 5000


def test_every_reported_span_count_equals_infini_gram(both):
    from cp_assets.lib.corpus.exact import infini_gram_peer
    from cp_assets.lib.corpus.exact.ngram_index import tokenize
    from cp_assets.lib.reports.trace import trace_many

    ours, peer, queries, _ = both
    toks = tokenize(ours.tokenizer, queries)
    checked = 0
    for rule in (False, True):
        for tk, spans in zip(toks, trace_many(ours, queries, min_tokens=4, olmotrace=rule)):
            for s in spans:
                assert s.count == infini_gram_peer.count(peer, tk.ids[s.token_start:s.token_end]), s.text
                checked += 1
    assert checked > 100
    planted = trace_many(ours, queries[:20], min_tokens=8)
    assert all(max((s.n_tokens for s in spans), default=0) >= 20 for spans in planted)  # the planted questions


def test_counts_of_random_spans_equal_infini_gram(both):
    from cp_assets.lib.corpus.exact import infini_gram_peer
    from cp_assets.lib.corpus.exact.ngram_search import count

    ours, peer, _, _ = both
    rng = np.random.default_rng(0)
    seg = ours.segments[1]
    for _ in range(300):
        a = int(rng.integers(0, len(seg.tok) - 20))
        ids = np.asarray(seg.tok[a:a + int(rng.integers(1, 12))], dtype=np.int64)
        if (ids == 0xFFFF).any():
            continue
        assert count(ours.segments, ids) == infini_gram_peer.count(peer, ids)


def test_index_files_are_smaller_than_infini_gram_s(both):
    ours, _, _, _ = both
    peer_dir = Path(ours.path).parent.parent / "peer"
    peer_bytes = sum(p.stat().st_size for p in peer_dir.glob("*.0"))
    assert ours.stats()["bytes"] < peer_bytes
