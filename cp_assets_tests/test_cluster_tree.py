"""The cluster tree: construction on synthetic vectors (recovery, invariants, determinism, stop reasons, bad input),
storage in the real embedded Postgres (round trip, atomic replace, vectors read back from the embeddings tables) and
the export to a real results DuckDB."""

import json

import duckdb
import numpy as np
import psycopg
import pytest
from sklearn.metrics import adjusted_rand_score, pairwise_distances, silhouette_score

from cp_assets.lib.clusters import store as cluster_store
from cp_assets.lib.corpus.chunking import Chunk
from cp_assets.lib.clusters.tree import STOP_REASONS, Tree, build_tree, member_fingerprint, silhouette


def blobs(n: int, k: int, dim: int, seed: int = 0, spread: float = 0.3, sizes: list[int] | None = None):
    """Unit vectors around k random unit centers (angle ~ spread): (vectors, true labels, chunk ids, splits)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), sizes) if sizes else rng.integers(k, size=n)
    x = centers[labels] + spread / np.sqrt(dim) * rng.standard_normal((len(labels), dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"doc{i // 7}#{i % 7}" for i in range(len(labels))]
    splits = [("pretrain", "sft", "midtrain")[i % 3] for i in range(len(labels))]
    return x, labels, ids, splits


def assert_same_tree(a: Tree, b: Tree) -> None:
    assert list(a.nodes) == list(b.nodes)
    for i, na in a.nodes.items():
        nb = b.nodes[i]
        assert (na.parent_id, na.depth, na.size, na.quality, na.split_counts, na.member_hash, na.children,
                na.stop_reason) == (nb.parent_id, nb.depth, nb.size, nb.quality, nb.split_counts, nb.member_hash,
                                    nb.children, nb.stop_reason), i
        assert na.centroid.dtype == nb.centroid.dtype == np.float32 and np.array_equal(na.centroid, nb.centroid), i
    assert (a.chunk_ids, a.chunk_splits, a.leaf_ids, a.seed, a.params, a.warnings) == \
        (b.chunk_ids, b.chunk_splits, b.leaf_ids, b.seed, b.params, b.warnings)
    assert a.leaf_of.dtype == b.leaf_of.dtype and np.array_equal(a.leaf_of, b.leaf_of)


def top_level_labels(tree: Tree) -> np.ndarray:
    out = np.full(len(tree.chunk_ids), -1)
    for j, child in enumerate(tree.nodes["0"].children):
        out[tree.members(child)] = j
    return out


# -- construction ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 3, 7])
def test_silhouette_equals_sklearns(k):
    x, _, _, _ = blobs(300, 3, 8, seed=k, spread=2.0)
    labels = np.random.default_rng(k).integers(k, size=300)
    labels[0] = k + 5  # a singleton cluster scores 0, as in sklearn
    d = pairwise_distances(x.astype(np.float64))
    assert abs(silhouette(d, labels) - silhouette_score(d, labels, metric="precomputed")) < 1e-9
    assert silhouette(d, np.zeros(300)) is None


@pytest.mark.parametrize("k,dim,n", [(2, 16, 600), (4, 64, 2000), (7, 384, 3000)])
def test_separated_blobs_are_recovered_at_depth_1(k, dim, n):
    x, labels, ids, splits = blobs(n, k, dim, seed=k)
    tree = build_tree(x, ids, splits, seed=0, max_depth=2, branching=(2, 8))
    assert len(tree.nodes["0"].children) == k
    assert adjusted_rand_score(labels, top_level_labels(tree)) >= 0.9
    assert tree.nodes["0"].quality > 0.3


@pytest.mark.parametrize("kw", [dict(), dict(max_depth=3, min_size=10, branching=(2, 4)),
                                dict(min_size=60, sample_size=500, silhouette_size=200, pca_dims=None)])
def test_tree_invariants(kw):
    x, _, ids, splits = blobs(2500, 6, 48, seed=3, spread=0.8)
    tree = build_tree(x, ids, splits, seed=1, **kw)
    min_size = kw.get("min_size", tree.params["min_size"])
    n = len(ids)
    # every chunk in exactly one leaf; leaf sizes are their member counts
    assert tree.leaf_of.shape == (n,) and tree.leaf_of.min() >= 0 and tree.leaf_of.max() < len(tree.leaf_ids)
    assert np.bincount(tree.leaf_of, minlength=len(tree.leaf_ids)).tolist() == [l.size for l in tree.leaves()]
    assert sorted(tree.leaf_ids) == sorted(i for i, nd in tree.nodes.items() if nd.is_leaf)
    seen = set()
    for node_id, node in tree.nodes.items():
        assert node.parent_id is None or node.parent_id in seen, "parents come before children"
        seen.add(node_id)
        members = tree.members(node_id)
        assert node.size == len(members)
        assert node.member_hash == member_fingerprint([ids[i] for i in members])
        want = {s: c for s, c in zip(*np.unique(np.array(splits)[members], return_counts=True))}
        assert node.split_counts == want and sum(node.split_counts.values()) == node.size
        mean = x[members].astype(np.float64).mean(0)
        assert np.allclose(node.centroid, mean / np.linalg.norm(mean), atol=1e-5)
        assert abs(np.linalg.norm(node.centroid) - 1) < 1e-5
        if node.children:
            kids = [tree.nodes[c] for c in node.children]
            assert node.stop_reason is None and -1 <= node.quality <= 1
            assert node.quality >= tree.params["min_quality"]
            assert tree.params["branching"][0] <= len(kids) <= tree.params["branching"][1]
            assert node.size == sum(c.size for c in kids)
            for s in node.split_counts:
                assert node.split_counts[s] == sum(c.split_counts.get(s, 0) for c in kids)
            assert [c.node_id for c in kids] == [f"{node_id}.{j}" for j in range(len(kids))]
            assert [c.size for c in kids] == sorted((c.size for c in kids), reverse=True)
            assert all(c.depth == node.depth + 1 and c.parent_id == node_id for c in kids)
            assert all(c.size >= min_size for c in kids)
        else:
            assert node.stop_reason in STOP_REASONS
            assert node.quality is None or node.stop_reason == "quality"
    assert max(nd.depth for nd in tree.nodes.values()) <= tree.params["max_depth"]
    assert tree.nodes["0"].split_counts == {"midtrain": 833, "pretrain": 834, "sft": 833}


def test_same_seed_same_tree_other_seed_other_tree():
    x, _, ids, splits = blobs(3000, 1, 32, seed=5, spread=1.0)  # one Gaussian blob: every split is arbitrary
    a = build_tree(x, ids, splits, seed=0, max_depth=3, sample_size=1500, silhouette_size=500)
    b = build_tree(x.copy(), list(ids), list(splits), seed=0, max_depth=3, sample_size=1500, silhouette_size=500)
    assert_same_tree(a, b)
    others = [build_tree(x, ids, splits, seed=s, max_depth=3, sample_size=1500, silhouette_size=500) for s in (1, 2)]
    assert any([n.member_hash for n in o.nodes.values()] != [n.member_hash for n in a.nodes.values()]
               for o in others)


def test_stop_reasons_depth_min_size_quality():
    x, _, ids, splits = blobs(1200, 3, 32, seed=7)
    shallow = build_tree(x, ids, splits, max_depth=1)
    assert {l.stop_reason for l in shallow.leaves()} == {"depth"} and len(shallow.leaves()) == 3
    assert build_tree(x, ids, splits, max_depth=0).leaves()[0].stop_reason == "depth"
    # within a blob the vectors are noise: a high bar stops there; the rejected score is kept
    picky = build_tree(x, ids, splits, max_depth=3, min_quality=0.5)
    assert len(picky.nodes["0"].children) == 3
    assert all(l.stop_reason == "quality" and l.quality < 0.5 for l in picky.leaves())
    # blobs of ~400 cannot split into two children of 250
    big = build_tree(x, ids, splits, max_depth=3, min_size=250)
    assert {l.stop_reason for l in big.leaves()} == {"min_size"} and len(big.leaves()) == 3


def test_small_clusters_are_merged_into_a_sibling():
    x, _, ids, splits = blobs(0, 4, 32, seed=2, sizes=[500, 500, 500, 12])
    tree = build_tree(x, ids, splits, max_depth=1, min_size=25, branching=(2, 6))
    sizes = [tree.nodes[c].size for c in tree.nodes["0"].children]
    assert min(sizes) >= 25 and sum(sizes) == len(ids) and len(sizes) == 3


def test_split_too_small_to_cluster_is_one_leaf_with_a_warning():
    x, _, ids, splits = blobs(30, 2, 16)
    logged = []
    tree = build_tree(x, ids, splits, min_size=25, log=logged.append)
    assert list(tree.nodes) == ["0"] and tree.leaf_ids == ["0"] and tree.nodes["0"].stop_reason == "too_small"
    assert tree.nodes["0"].size == 30 and (tree.leaf_of == 0).all()
    assert "too small to cluster" in tree.warnings[0] and any("too small" in m for m in logged)


def test_identical_vectors():
    v = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    x = np.tile(v / np.linalg.norm(v), (500, 1))
    ids = [f"c{i}" for i in range(500)]
    tree = build_tree(x, ids, ["s"] * 500)
    assert tree.leaf_ids == ["0"] and tree.nodes["0"].stop_reason == "identical" and "identical" in tree.warnings[0]
    assert np.allclose(tree.nodes["0"].centroid, x[0], atol=1e-6)
    # two groups of exact duplicates: one split, then two identical leaves
    y = np.concatenate([x, np.tile(np.roll(x[0], 1), (300, 1))])
    two = build_tree(y, [f"c{i}" for i in range(800)], ["s"] * 800)
    assert [l.stop_reason for l in two.leaves()] == ["identical", "identical"]
    assert [l.size for l in two.leaves()] == [500, 300] and not two.warnings


@pytest.mark.parametrize("bad,match", [
    (lambda x, ids, s: (x[:0], [], []), "no vectors"),
    (lambda x, ids, s: (x, ids[:-1], s), "do not line up"),
    (lambda x, ids, s: (np.where(np.arange(len(x))[:, None] == 3, np.nan, x), ids, s), "NaN"),
    (lambda x, ids, s: (x, ids[:-1] + ids[:1], s[:-1] + s[:1]), "duplicate"),
])
def test_bad_input_is_a_clear_error(bad, match):
    x, _, ids, splits = blobs(100, 2, 8)
    with pytest.raises(ValueError, match=match):
        build_tree(*bad(x, ids, splits))


def test_nearest_leaves():
    x, _, ids, splits = blobs(1500, 3, 32, seed=4)
    tree = build_tree(x, ids, splits, max_depth=1)
    leaf, dist = cluster_store.nearest_leaves(tree, x, k=2)
    assert leaf.shape == dist.shape == (1500, 2) and (dist[:, 0] <= dist[:, 1]).all() and (dist >= -1e-6).all()
    assert (leaf[:, 0] == np.array(tree.leaf_ids)[tree.leaf_of]).mean() > 0.99
    one, d1 = tree.nearest_leaves(3 * x[:1])  # queries are normalized
    assert one[0, 0] == leaf[0, 0] and abs(d1[0, 0] - dist[0, 0]) < 1e-5


# -- storage --------------------------------------------------------------------------------------------------------
SLUG = "ctest"


@pytest.fixture(scope="module")
def embedded(store):
    """Two splits of synthetic 32-dim vectors published like the `embeddings` asset does (private model slug)."""
    out = {}
    store.ensure_embedding_table(SLUG, "cluster-test-model", 32)
    for split, seed, n in (("ct_b", 1, 700), ("ct_a", 2, 500)):
        x, _, ids, _ = blobs(n, 3, 32, seed=seed)
        ids = [f"{split}:{c}" for c in ids]
        chunks = [Chunk(c, c.split("#")[0], split, 0, 0, 1, 1, f"text {c}") for c in ids]
        store.replace_chunks(split, chunks)
        store.prepare_build(SLUG, split, 32)
        store.write_build(SLUG, split, ids, [c.text_hash for c in chunks], x)
        store.publish_build(SLUG, split, expected=n)
        out[split] = dict(zip(ids, x))
    yield out
    store.drop_embeddings(SLUG)
    for split in out:
        store.drop_split(split)


def test_vectors_come_back_from_the_embeddings_tables(store, embedded):
    x, ids, splits = cluster_store.load_vectors(store, SLUG, "all")
    assert splits == ["ct_a"] * 500 + ["ct_b"] * 700 and ids[:500] == sorted(embedded["ct_a"])
    assert x.dtype == np.float32 and np.array_equal(x[0], embedded["ct_a"][ids[0]])
    assert np.array_equal(x[-1], embedded["ct_b"][ids[-1]])
    one, one_ids, _ = cluster_store.load_vectors(store, SLUG, "ct_b")
    assert one.shape == (700, 32) and one_ids == ids[500:]
    tree = build_tree(x, ids, splits, max_depth=2)
    assert tree.nodes["0"].split_counts == {"ct_a": 500, "ct_b": 700}
    with pytest.raises(LookupError, match="materialize"):
        cluster_store.load_vectors(store, SLUG, "nope")


def test_round_trip_and_atomic_replace(store):
    x, _, ids, splits = blobs(2000, 4, 48, seed=11)
    first = build_tree(x, ids, splits, max_depth=2, seed=3)
    assert cluster_store.load_tree(store, "t_round", SLUG) is None
    version = cluster_store.save_tree(store, "t_round", SLUG, first)
    assert version == store.partition_version("cluster_tree", "t_round", SLUG)
    assert_same_tree(cluster_store.load_tree(store, "t_round", SLUG), first)
    other = build_tree(x[:300], ids[:300], splits[:300], max_depth=1)
    cluster_store.save_tree(store, "t_other", SLUG, other)

    # a save that fails in the middle (the database refuses a duplicate member after the old rows were deleted and
    # the new nodes written) leaves the previous tree whole
    broken = build_tree(x[:1000], ids[:1000], splits[:1000], max_depth=1)
    broken.chunk_ids[-1], broken.chunk_splits[-1] = broken.chunk_ids[0], broken.chunk_splits[0]
    with pytest.raises(psycopg.errors.UniqueViolation):
        cluster_store.save_tree(store, "t_round", SLUG, broken)
    assert_same_tree(cluster_store.load_tree(store, "t_round", SLUG), first)
    assert store.partition_version("cluster_tree", "t_round", SLUG) == version

    second = build_tree(x[:1000], ids[:1000], splits[:1000], max_depth=1)
    assert cluster_store.save_tree(store, "t_round", SLUG, second) != version
    assert_same_tree(cluster_store.load_tree(store, "t_round", SLUG), second)
    assert_same_tree(cluster_store.load_tree(store, "t_other", SLUG), other)
    with store.connect() as conn:
        got = conn.execute("SELECT count(*), count(DISTINCT leaf_id) FROM cprox_cluster_members WHERE tree = "
                           "'t_round' AND embed_slug = %s", (SLUG,)).fetchone()
        dims = conn.execute("SELECT DISTINCT vector_dims(centroid) FROM cprox_cluster_nodes WHERE tree = 't_round' "
                            "AND embed_slug = %s", (SLUG,)).fetchall()
    assert got == (1000, len(second.leaf_ids)) and dims == [(48,)]

    from_db = cluster_store.nearest_leaves(store, x[:50], k=2, tree="t_round", embed_slug=SLUG)
    in_mem = second.nearest_leaves(x[:50], k=2)
    assert (from_db[0] == in_mem[0]).all() and np.allclose(from_db[1], in_mem[1])
    with pytest.raises(LookupError, match="no cluster tree"):
        cluster_store.nearest_leaves(store, x[:1], tree="missing", embed_slug=SLUG)


def test_duckdb_export(tmp_path):
    x, _, ids, splits = blobs(1200, 3, 32, seed=8)
    tree = build_tree(x, ids, splits, max_depth=2)
    small = build_tree(x[:200], ids[:200], splits[:200], max_depth=1)
    with duckdb.connect(str(tmp_path / "results.duckdb")) as con:
        counts = cluster_store.export_to_duckdb(tree, con, tree="pretrain", embed_model="m")
        assert counts == {"cluster_nodes": len(tree.nodes), "cluster_members": 1200}
        cluster_store.export_to_duckdb(small, con, tree="sft", embed_model="m")
        cluster_store.export_to_duckdb(tree, con, tree="pretrain", embed_model="m")  # replaced, not added
        rows = con.execute("SELECT tree, count(*), sum(is_leaf::int) FROM cluster_nodes GROUP BY tree "
                           "ORDER BY tree").fetchall()
        assert rows == [("pretrain", len(tree.nodes), len(tree.leaf_ids)), ("sft", len(small.nodes),
                                                                             len(small.leaf_ids))]
        assert con.execute("SELECT count(*) FROM cluster_members WHERE tree = 'pretrain'").fetchone()[0] == 1200
        per_leaf = dict(con.execute("SELECT leaf_id, count(*) FROM cluster_members WHERE tree = 'pretrain' "
                                    "GROUP BY leaf_id").fetchall())
        assert per_leaf == {l.node_id: l.size for l in tree.leaves()}
        counts_json = con.execute("SELECT split_counts FROM cluster_nodes WHERE tree = 'pretrain' AND "
                                  "node_id = '0'").fetchone()[0]
        assert json.loads(counts_json) == tree.nodes["0"].split_counts


@pytest.mark.slow
def test_all_tree_over_the_real_embedded_splits(materialized, store):
    """The test splits embedded for real (MiniLM): the "all" tree, one split too small to cluster, saved and read."""
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.encoder import model_slug

    slug = model_slug(settings.embed_model())
    x, ids, splits = cluster_store.load_vectors(store, slug, ["math", "tiny"])
    assert x.shape[1] == 384 and set(splits) == {"math", "tiny"}
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-4)
    tree = build_tree(x, ids, splits, min_size=10, max_depth=3)
    assert tree.nodes["0"].split_counts == {"math": splits.count("math"), "tiny": splits.count("tiny")}
    assert len(tree.leaf_ids) > 1 and np.bincount(tree.leaf_of).sum() == len(ids)
    cluster_store.save_tree(store, "all", slug, tree)
    assert_same_tree(cluster_store.load_tree(store, "all", slug), tree)
    mx, mids, msplits = cluster_store.load_vectors(store, slug, "math")
    small = build_tree(mx, mids, msplits, min_size=len(mids))
    assert small.leaf_ids == ["0"] and small.nodes["0"].stop_reason == "too_small" and small.warnings
