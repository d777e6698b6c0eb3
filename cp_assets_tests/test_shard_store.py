"""Per-shard storage in the real Postgres + pgvector: documents, chunks and vectors replaced per shard, split reads
over every shard, exact merged search, versions that move with one shard, and a database from before shards."""

import numpy as np
import pytest
from psycopg import sql

from cp_assets.lib.corpus.chunking import Chunk
from cp_assets.lib.corpus.pgvector_store import part_table, shard_table
from cp_assets.lib.corpus.sources import Document

DIM = 8


def docs(split, ids, tag="v1"):
    return [Document(f"d:{i}", split, "d", f"f:{i}", 0, f"{tag} text {i}", {}) for i in ids]


def chunks(split, ids, tag="v1"):
    return [Chunk(f"d:{i}#0", f"d:{i}", split, 0, 0, 9, 3, f"{tag} text {i}") for i in ids]


def vectors(ids, seed):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def embed(store, slug, split, shard, ids, seed, tag="v1"):
    store.ensure_embedding_table(slug, "toy", DIM)
    store.replace_chunks(split, chunks(split, ids, tag), shard)
    done = store.prepare_build(slug, split, DIM, shard)
    todo = [i for i in ids if f"d:{i}#0" not in done]
    if todo:
        store.write_build(slug, split, [f"d:{i}#0" for i in todo], [c.text_hash for c in chunks(split, todo, tag)],
                          vectors(todo, seed), shard)
    return store.publish_build(slug, split, expected=len(ids), shard=shard), len(done)


def test_documents_and_chunks_are_replaced_per_shard(store):
    assert store.replace_documents("sh_a", docs("sh_a", range(0, 5)), "00000") == 5
    assert store.replace_documents("sh_a", docs("sh_a", range(5, 8)), "00001") == 3
    assert store.replace_documents("sh_a", docs("sh_a", range(5, 7), "v2"), "00001") == 2
    assert [d.doc_id for d in store.iter_documents("sh_a")] == sorted(f"d:{i}" for i in range(7))
    assert [d.text for d in store.iter_documents("sh_a", shard="00001")] == ["v2 text 5", "v2 text 6"]
    assert (store.count("raw_corpus", "sh_a"), store.count("raw_corpus", "sh_a", shard="00000")) == (7, 5)
    with pytest.raises(ValueError, match=r"split 'sh_a' shard 00002: .*d:3.* already in another shard"):
        store.replace_documents("sh_a", docs("sh_a", [3]), "00002")
    assert store.count("raw_corpus", "sh_a") == 7, "the failed shard wrote nothing"
    parts = [p for p in store.partitions() if (p["kind"], p["split"]) == ("raw_corpus", "sh_a")]
    assert [(p["n_rows"], p["shards"]) for p in parts] == [(7, 2)]


def test_vectors_per_shard_merge_exactly_and_versions_follow_one_shard(store):
    slug, split = "shardtoy", "sh_v"
    v0, _ = embed(store, slug, split, "00000", range(0, 40), seed=0)
    v1, _ = embed(store, slug, split, "00001", range(40, 70), seed=1)
    with store.session() as conn:  # one HNSW index per shard leaf, under the split's table
        leaves = conn.execute("SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass "
                              "ORDER BY 1", (part_table(slug, split),)).fetchall()
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = ANY(%s) AND indexdef LIKE "
                               "'%%hnsw%%'", ([shard_table(slug, split, s) for s in ("00000", "00001")],)).fetchone()
    assert [r[0] for r in leaves] == [shard_table(slug, split, "00000"), shard_table(slug, split, "00001")]
    assert indexes[0] == 2
    split_version = store.partition_version("embeddings", split, slug)
    assert split_version not in (v0, v1) and store.partition_version("embeddings", split, slug, "00001") == v1
    # a split-level query merges the shards' top k: the same as brute force over all 70 vectors
    every = np.vstack([vectors(range(0, 40), 0), vectors(range(40, 70), 1)])
    queries = vectors(range(5), seed=9)
    want = np.argsort(-(queries @ every.T), axis=1)[:, :5]
    got = store.search(slug, queries, split=split, k=5, exact=True)
    assert [[int(h.chunk_id[2:-2]) for h in hits] for hits in got] == want.tolist()
    assert store.embedding_health(slug, split)["rows"] == 70
    assert store.embedding_health(slug, split, "00001") == {"rows": 30, "dims": [DIM], "bad": 0}
    # re-embedding shard 1 with changed chunks moves its version and the split's, not shard 0's
    v1b, reused = embed(store, slug, split, "00001", range(40, 70), seed=2, tag="v2")
    assert reused == 0 and v1b != v1 and store.partition_version("embeddings", split, slug, "00000") == v0
    assert store.partition_version("embeddings", split, slug) != split_version
    # a retired shard leaves nothing behind
    store.drop_shard(split, "00001")
    assert store.embedding_health(slug, split)["rows"] == 40 and store.count("chunks", split) == 40
    assert store.partition_version("embeddings", split, slug) == v0
    store.drop_embeddings(slug)


def test_a_database_from_before_shards_is_converted_and_its_vectors_reused(store):
    slug, split = "legacytoy", "sh_l"
    with store.session() as conn:  # the layout of the code before shards: one leaf per split, no shard column
        conn.execute(sql.SQL("CREATE TABLE {t} (split text NOT NULL, chunk_id text NOT NULL, text_hash text NOT NULL,"
                             " embedding vector(8) NOT NULL, PRIMARY KEY (split, chunk_id)) PARTITION BY LIST (split)")
                     .format(t=sql.Identifier(f"emb_{slug}")))
        conn.execute(sql.SQL("CREATE TABLE {p} PARTITION OF {t} FOR VALUES IN ('sh_l')").format(
            p=sql.Identifier(f"emb_{slug}__{split}"), t=sql.Identifier(f"emb_{slug}")))
        conn.execute("INSERT INTO cprox_embedding_models (slug, model, dim) VALUES (%s, 'toy', 8)", (slug,))
        for c, v in zip(chunks(split, range(6)), vectors(range(6), 3)):
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(sql.Identifier(f"emb_{slug}")),
                         (split, c.chunk_id, c.text_hash, v))
    v, reused = embed(store, slug, split, "00000", range(6), seed=99)  # seed 99 would give other vectors
    assert reused == 6, "every legacy vector matched its chunk and was reused"
    ids, mat = store.load_matrix(slug, split)
    assert ids == [f"d:{i}#0" for i in range(6)] and np.allclose(mat, vectors(range(6), 3), atol=1e-6)
    store.drop_embeddings(slug)
