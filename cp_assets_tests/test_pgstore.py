"""PgStore against the real embedded Postgres + pgvector: schema, atomic replacement, clear errors."""

import numpy as np
import pytest

from cp_assets.lib.corpus.pgvector_store import SCHEMA_MARKER, DatabaseUnavailable, PgStore
from cp_assets.lib.corpus.sources import Document


def docs(split: str, n: int, tag: str = "v1"):
    for i in range(n):
        yield Document(f"src:{i}", split, "src", f"file:{i + 1}", i * 10, f"{tag} document {i}", {"i": i})


def test_schema_setup_is_idempotent(store):
    """The schema DDL really runs twice over a populated database (its marker cleared, so it is not skipped): rows
    survive, the marker comes back, and the shard-aware primary key is not dropped by the second pass."""
    assert store.replace_documents("t_schema", docs("t_schema", 3)) == 3
    again = PgStore(home=store.home)
    try:
        for _ in range(2):
            with again.connect() as conn:
                conn.execute("COMMENT ON TABLE cprox_partitions IS NULL")
            again._schema_ready = False
            again.ensure_schema()
    finally:  # the shared database gets its schema marker back whatever happened
        again._schema_ready = False
        again.ensure_schema()
    with again.connect() as conn:
        marker = conn.execute("SELECT obj_description(to_regclass('cprox_partitions'), 'pg_class')").fetchone()[0]
        pkey = [r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'cprox_partitions'::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)")]
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
    assert marker == SCHEMA_MARKER
    assert pkey == ["kind", "model_slug", "split", "shard"]
    assert again.count("raw_corpus", "t_schema") == 3
    assert [d.text for d in again.iter_documents("t_schema")] == [f"v1 document {i}" for i in range(3)]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 5), "HNSW needs pgvector >= 0.5"
    again.drop_split("t_schema")


def test_replace_is_atomic_and_per_split(store):
    assert store.replace_documents("t_a", docs("t_a", 5)) == 5
    assert store.replace_documents("t_b", docs("t_b", 3)) == 3

    def crashing():
        yield from docs("t_a", 2, "v2")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        store.replace_documents("t_a", crashing())
    texts = [d.text for d in store.iter_documents("t_a")]
    assert texts == [f"v1 document {i}" for i in range(5)], "a crash mid-replace leaves the old split whole"
    assert store.replace_documents("t_a", docs("t_a", 4, "v3")) == 4
    assert [d.text for d in store.iter_documents("t_a")] == [f"v3 document {i}" for i in range(4)]
    assert store.count("raw_corpus", "t_b") == 3, "replacing one split touches no other"
    again = list(store.iter_documents("t_a"))[0]
    assert (again.locator, again.byte_offset, again.meta) == ("file:1", 0, {"i": 0})


def test_unreachable_database_says_how_to_start_the_embedded_one():
    bad = PgStore(url="postgresql://bob:s3cret@127.0.0.1:1/nodb")
    with pytest.raises(DatabaseUnavailable) as exc:
        bad.ensure_schema()
    msg = str(exc.value)
    assert "127.0.0.1:1" in msg and "s3cret" not in msg and "make db" in msg and "cprox db start" in msg


def test_embedding_table_refuses_a_different_dimension(store):
    store.ensure_embedding_table("dimtest", "toy-model", 3)
    store.ensure_embedding_table("dimtest", "toy-model", 3)
    with pytest.raises(ValueError, match="holds 3-dim vectors"):
        store.ensure_embedding_table("dimtest", "other-model", 4)
    store.drop_embeddings("dimtest")


def test_non_finite_vectors_are_refused(store):
    store.ensure_embedding_table("nantest", "toy", 2)
    store.prepare_build("nantest", "s", 2)
    with pytest.raises(ValueError, match="non-finite"):
        store.write_build("nantest", "s", ["a", "b"], ["h", "h"], np.array([[1, 0], [np.nan, 1]], np.float32))
    store.drop_embeddings("nantest")
