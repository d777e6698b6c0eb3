"""Search validation on real data, like the seed's test_search: copied sentences find their own chunk at rank 1,
unrelated sentences sit further away (AUROC of the top-1 distance >= 0.95); engines and metrics agree; the CLI."""

import gzip
import json
import random
import re

import pytest
from sklearn.metrics import roc_auc_score

from cp_assets.lib.core import settings
from cp_assets.lib.corpus.search import search

SENTENCE = re.compile(r"(?<=[.!?])\s+")


def norm(text: str) -> str:
    return " ".join(text.split())


def sentences(text: str, lo: int = 8, hi: int = 40) -> list[str]:
    return [norm(s) for s in SENTENCE.split(text) if lo <= len(s.split()) <= hi]


def known_sentences(store, split: str, n: int, seed: int = 0) -> list[str]:
    return [s for s, _ in known_sentence_spans(store, split, n, seed)]


def known_sentence_spans(store, split: str, n: int, seed: int = 0) -> list[tuple[str, tuple[str, int, int]]]:
    """(sentence, (doc_id, char_start, char_end)) sampled from the split's documents."""
    pool = []
    for d in store.iter_documents(split):
        for m in re.finditer(r"[^.!?]+[.!?]", d.text):
            if 8 <= len(m.group().split()) <= 40:
                pool.append((norm(m.group()), (d.doc_id, m.start() + len(m.group()) - len(m.group().lstrip()),
                                               m.end())))
    return random.Random(seed).sample(pool, n)


def unrelated_sentences(n: int, seed: int = 0) -> list[str]:
    """Sentences from documents that are not in the test splits: held-out FineWeb-Edu docs and GSM8K test items."""
    data = settings.data_dir()
    with gzip.open(data / "fineweb_edu_sample" / "fineweb_edu_sample10bt_150.jsonl.gz", "rt") as fh:
        held_out = [json.loads(line)["text"] for line in fh][100:]
    with gzip.open(data / "gsm8k" / "test.jsonl.gz", "rt") as fh:
        gsm = [json.loads(line)["question"] for line in fh][:200]
    pool = [s for t in held_out for s in sentences(t)] + [norm(q) for q in gsm if 8 <= len(q.split()) <= 40]
    return random.Random(seed).sample(pool, n)


def test_copied_sentences_find_their_chunk_and_beat_unrelated_ones(materialized, store):
    spans = known_sentence_spans(store, "tiny", 60)
    known, unknown = [s for s, _ in spans], unrelated_sentences(60)
    hits = search(store, known + unknown, split="tiny", k=3, engine="pgvector")
    with store.connect() as conn:
        where = {c: (d, a, b) for c, d, a, b in conn.execute(
            "SELECT chunk_id, doc_id, char_start, char_end FROM cprox_chunks WHERE split = 'tiny'")}

    def overlaps(hit, span):  # the hit is (one of) the chunk(s) the sentence was copied from
        doc, a, b = where[hit.chunk_id]
        return doc == span[0] and a < span[2] and span[1] < b

    own = [overlaps(h[0], span) for h, (_, span) in zip(hits, spans)]
    own3 = [any(overlaps(x, span) for x in h) for h, (_, span) in zip(hits, spans)]
    own_doc = [h[0].doc_id == span[0] for h, (_, span) in zip(hits, spans)]
    d_known = [h[0].distance for h in hits[:60]]
    d_unknown = [h[0].distance for h in hits[60:]]
    auroc = roc_auc_score([1] * 60 + [0] * 60, [-d for d in d_known + d_unknown])
    print(f"\nsearch validation on split 'tiny': own chunk at rank 1 for {sum(own)}/60 copied sentences "
          f"(in the top 3 for {sum(own3)}/60), "
          f"own document at rank 1 for {sum(own_doc)}/60; "
          f"median top-1 cosine distance {sorted(d_known)[30]:.3f} (copied) vs {sorted(d_unknown)[30]:.3f} "
          f"(unrelated); AUROC {auroc:.3f}")
    assert auroc >= 0.95
    # A short sentence inside a 128-token chunk shares it with other content; its neighbour chunks from the same
    # document are the usual rank-1 miss (measured: 49/60 at rank 1, 57/60 in the top 3, 56/60 own document).
    assert sum(own) >= 45, "at least 75% of copied sentences find their own chunk at rank 1"
    assert sum(own3) >= 54, "at least 90% find their own chunk in the top 3"
    assert sum(own_doc) >= 51, "at least 85% find their own document at rank 1"


@pytest.mark.parametrize("metric", ["cosine", "l2", "inner_product", "l1"])
def test_engines_agree(materialized, store, metric):
    queries = known_sentences(store, "math", 8, seed=1) + unrelated_sentences(4, seed=1)
    exact = search(store, queries, k=5, metric=metric, exact=True, engine="pgvector")
    ann = search(store, queries, k=5, metric=metric, exact=False, engine="pgvector", ef_search=200)
    mem = search(store, queries, k=5, metric=metric, exact=True, engine="memory")
    mem_ann = search(store, queries, k=5, metric=metric, exact=False, engine="memory")
    for e, a, m, h in zip(exact, ann, mem, mem_ann):
        assert [x.rank for x in e] == [1, 2, 3, 4, 5]
        assert [x.distance for x in e] == sorted(x.distance for x in e)
        assert [x.chunk_id for x in m] == [x.chunk_id for x in e]
        # float32 sums in pgvector against float64 in numpy: equal within a tolerance, never by rounding
        assert [x.distance for x in m] == pytest.approx([x.distance for x in e], rel=1e-4, abs=1e-5)
        assert a[0].chunk_id == e[0].chunk_id and h[0].chunk_id == e[0].chunk_id
        assert {x.split for x in e} <= {"tiny", "math"}


@pytest.mark.parametrize("engine", ["pgvector", "memory"])
def test_a_search_reads_the_partition_registry_once_per_batch(materialized, store, monkeypatch, engine):
    """The embedded splits, their versions and `embed_share` come from one read of cprox_partitions per call,
    whatever the number of texts and splits, not one per query or per split."""
    calls = []
    for name in ("shard_partitions", "partition_version", "embedded_splits"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _n=name, _real=real, **kw: calls.append(_n) or _real(*a, **kw))
    queries = known_sentences(store, "math", 6, seed=2) + known_sentences(store, "tiny", 6, seed=2)
    hits = search(store, queries, k=3, engine=engine)
    assert calls == ["shard_partitions"]
    assert len(hits) == 12 and {h.split for top in hits for h in top} == {"tiny", "math"}
    from cp_assets.lib.corpus.embed_sample import embed_shares
    from cp_assets.lib.corpus.encoder import model_slug

    shares = embed_shares(store, model_slug(settings.embed_model()))
    assert all(h.embed_share == shares[h.split] for top in hits for h in top)

def test_search_errors(materialized, store):
    with pytest.raises(ValueError, match="unknown metric"):
        search(store, ["x"], metric="hamming")
    with pytest.raises(LookupError, match="split 'nope' has no embeddings"):
        search(store, ["x"], split="nope")
    with pytest.raises(LookupError, match="no split has embeddings"):
        search(store, ["x"], model="sentence-transformers/other-model")


def test_cli_search_json_and_batch(materialized, store, tmp_path, capsys):
    from cp_assets.cli.main import main

    assert main(["search", "From fairest creatures we desire increase", "--split", "tiny", "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert set(hits[0]) == {"rank", "distance", "metric", "split", "doc_id", "chunk_id", "text", "embed_share"}
    assert {h["embed_share"] for h in hits} == {1.0}  # `tiny` is embedded whole
    assert hits[0]["doc_id"].startswith("sonnets:") and "fairest creatures" in hits[0]["text"]

    queries = tmp_path / "q.txt"
    queries.write_text("Janet had 16 eggs\nIt is a truth universally acknowledged, that a single man in possession "
                       "of a good fortune, must be in want of a wife.\n\nanother query\n")
    assert main(["search", "--queries", str(queries), "--k", "2", "--metric", "l2", "--exact", "--quiet"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"][:12] for x in lines] == ["Janet had 16", "It is a trut", "another quer"]
    assert all(len(x["results"]) == 2 and x["results"][0]["metric"] == "l2" for x in lines)
    assert lines[1]["results"][0]["doc_id"].startswith("austen:")

    assert main(["search", "anything", "--split", "nope"]) == 1
    assert "has no embeddings" in capsys.readouterr().err
