"""Embedding proximity reports: sentence splitting, distance conversions, percentiles, nearest-document marks; the
`eval_proximity` and `rollout_proximity` assets on the test splits (real MiniLM, embedded Postgres, DuckDB, SmolLM2)."""

import gzip
import json
import re

import dagster as dg
import numpy as np
import pytest

from cp_assets.lib.reports import answer_proximity, proximity

from cp_assets.lib.core import settings
from cp_assets_tests.conftest import metadata

SMOL = "smollm2-135m-instruct"


@pytest.mark.parametrize("text,expected", [
    ("Janet has 16 eggs. She eats three. Then she sells the rest!",
     ["Janet has 16 eggs.", "She eats three.", "Then she sells the rest!"]),
    ("The price is 3.50 dollars per item. Total is 7.", ["The price is 3.50 dollars per item.", "Total is 7."]),
    ("Step 1: add them\nStep 2: multiply them\n#### 18", ["Step 1: add them", "Step 2: multiply them"]),
    ('He said "stop now." Then he left the room.', ['He said "stop now."', "Then he left the room."]),
    ("Yes. No. Maybe so, he said.", ["Maybe so, he said."]),
    ("  spaces before a line  \n\n\n   and after a line   ", ["spaces before a line", "and after a line"]),
    ("", []),
    ("#### 72", []),
])
def test_split_sentences(text, expected):
    got = proximity.split_sentences(text)
    assert [s for _, _, s in got] == expected
    assert all(text[a:b] == s for a, b, s in got), "offsets point into the text"


@pytest.mark.parametrize("seed", [0, 1])
def test_distances_from_cosine_match_the_vectors(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, 64, 384))
    a, b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
    b[0], b[1] = a[0], -a[1]  # identical and opposite
    cosine = 1 - (a * b).sum(axis=1)
    l2, ip = proximity.distances_from_cosine(cosine)
    np.testing.assert_allclose(l2, np.linalg.norm(a - b, axis=1), atol=1e-6)
    np.testing.assert_allclose(ip, -(a * b).sum(axis=1), atol=1e-12)
    assert (l2[0], ip[0]) == pytest.approx((0, -1), abs=1e-6) and (l2[1], ip[1]) == pytest.approx((2, 1))


@pytest.mark.parametrize("value,expected", [(0.05, 0.0), (0.1, 10.0), (0.55, 50.0), (0.95, 90.0), (1.0, 100.0),
                                            (3.0, 100.0)])
def test_percentiles_against_the_reference(value, expected):
    reference = np.random.default_rng(0).permutation(np.linspace(0.1, 1.0, 10))  # order does not matter
    assert proximity.percentiles([value], reference)[0] == pytest.approx(expected)
    assert np.isnan(proximity.percentiles([value], np.array([]))[0])


def test_nearest_other_doc_skips_the_chunks_own_document():
    mat = np.array([[1, 0], [1, 0], [0.6, 0.8], [0, 1]], dtype=np.float32)
    docs = np.array(["a", "a", "b", "c"])
    got = proximity.nearest_other_doc(mat, docs, np.array([0, 2, 3]), block=2)
    np.testing.assert_allclose(got, [0.4, 0.2, 0.2], atol=1e-6)  # row 0's twin (same document) is not its match
    assert np.isinf(proximity.nearest_other_doc(mat[:2], docs[:2], np.array([0]))[0])


def test_mark_nearest_sentences_follows_each_sentence_and_keeps_the_text():
    completion = "Natalia sold 48 clips in April. In May she sold half as many.\n#### 72"
    rows = [{"unit": "answer", "char_start": 0, "char_end": len(completion)}] + [
        {"unit": "sentence", "idx": i, "char_start": a, "char_end": b, "nn_doc_id": f"gsm8k:{i}", "cosine": 0.1 * i,
         "percentile": 3.0} for i, (a, b, _) in enumerate(proximity.split_sentences(completion))]
    out = answer_proximity.mark_nearest_sentences(completion, rows)
    assert out == ("Natalia sold 48 clips in April. [-> gsm8k:0, cos 0.000, p 3] In May she sold half as many. "
                   "[-> gsm8k:1, cos 0.100, p 3]\n#### 72")
    assert re.sub(r" \[-> [^\]]*\]", "", out) == completion


# -- on the test splits ---------------------------------------------------------------------------------------------
def questions(split: str, n: int) -> list[str]:
    with gzip.open(settings.data_dir() / "gsm8k" / f"{split}.jsonl.gz", "rt") as fh:
        return [json.loads(line)["question"] for _, line in zip(range(n), fh)]


@pytest.fixture(scope="module")
def db():
    from cp_assets.lib.reports.results_db import ResultsDB

    return ResultsDB()


@pytest.fixture(scope="module")
def instance():
    from cp_assets.defs.evals.models_registry_sensor import sync_model_partitions

    inst = dg.DagsterInstance.ephemeral()
    sync_model_partitions(inst)
    return inst


def materialize(selection, partition, instance, resources, config=None):
    from cp_assets.definitions import eval_assets
    from cp_assets.defs.reports import eval_proximity as ep
    from cp_assets.defs.reports import rollout_proximity as rp

    assets = eval_assets + [ep.eval_proximity, ep.check_eval_proximity_rows_consistent, rp.rollout_proximity,
                            rp.check_rollout_proximity_rows_consistent]
    result = dg.materialize(assets, selection=selection, partition_key=partition, instance=instance,
                            resources=resources, run_config={"ops": {selection[0]: {"config": config}}} if config
                            else None)
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations())
    return result


def republish(store, split: str) -> str:
    """Publish the split's embeddings again (same vectors, new partition version), as re-embedding it would."""
    from cp_assets.lib.corpus.encoder import model_dim, model_slug

    model = settings.embed_model()
    slug = model_slug(model)
    n = store.count("embeddings", split, slug)
    store.prepare_build(slug, split, model_dim(model))
    return store.publish_build(slug, split, expected=n)


def test_train_questions_sit_closer_than_test_questions(materialized, store, db):
    """The math split holds the first 40 GSM8K train conversations: their questions find their own conversation and
    sit nearer (distance and percentile) than any GSM8K test question."""
    train, test = questions("train", 10), questions("test", 60)
    samples = ([{"sample_id": f"train:{i}", "prompt": q} for i, q in enumerate(train)]
               + [{"sample_id": f"test:{i}", "prompt": q} for i, q in enumerate(test)])
    figures, items = proximity.question_proximity(store, db, settings.embed_model(), "probe", "math", samples, k=3,
                                                  log=lambda _: None)
    by = {r["sample_id"]: r for r in items}
    tr, te = [by[f"train:{i}"] for i in range(10)], [by[f"test:{i}"] for i in range(60)]
    assert [r["nn_doc_id"] for r in tr] == [f"gsm8k:{i}" for i in range(10)]
    assert max(r["min_cosine"] for r in tr) < min(r["min_cosine"] for r in te)
    assert max(r["percentile"] for r in tr) <= min(r["percentile"] for r in te)
    assert max(r["percentile"] for r in tr) < 5 < float(np.median([r["percentile"] for r in te]))
    assert figures["questions"] == 70 and figures["neighbor_rows"] == 210


def test_eval_proximity_asset(materialized, store, db, instance, resources):
    materialize(["eval_samples"], "gsm8k", instance, resources)
    cfg = {"limit": 150, "k": 5}
    key = dg.MultiPartitionKey({"eval_set": "gsm8k", "split": "math"})
    first = metadata(materialize(["eval_proximity"], key, instance, resources, cfg), "eval_proximity")
    assert (first["questions"], first["neighbor_rows"], first["k"]) == (150, 750, 5)
    n_chunks = store.count("chunks", "math")
    assert first["reference_size"] == min(1000, n_chunks) and 0 <= first["percentile"]["p50"] <= 100
    assert first["percentile_histogram"].startswith("![percentiles](data:image/png;base64,")
    assert first["closest_items"].count("\n| `gsm8k:") == 10

    def table(name, split="math"):
        with db.connect() as con:
            return con.execute(f"SELECT * FROM {name} WHERE eval_set = 'gsm8k' AND split = ? ORDER BY sample_id"
                               + (", rank" if name == "eval_neighbors" else ""), [split]).fetchall()

    rows, neighbors = table("eval_proximity"), table("eval_neighbors")
    assert len(rows) == len({r[1] for r in rows}) == 150 and len(neighbors) == 750
    ranks = {}
    for r in neighbors:
        ranks.setdefault(r[1], []).append((r[4], r[7]))
    assert all([k for k, _ in v] == [1, 2, 3, 4, 5] and [d for _, d in v] == sorted(d for _, d in v)
               for v in ranks.values())

    again = metadata(materialize(["eval_proximity"], key, instance, resources, cfg), "eval_proximity")
    assert (again["questions_encoded"], again["questions_cached"], again["reference_reused"]) == (0, 150, True)
    assert table("eval_proximity") == rows and len(table("eval_neighbors")) == 750, "idempotent"

    tiny = metadata(materialize(["eval_proximity"], dg.MultiPartitionKey({"eval_set": "gsm8k", "split": "tiny"}),
                                instance, resources, cfg), "eval_proximity")
    assert tiny["questions_encoded"] == 0, "the questions were encoded once, for the first split"
    assert first["min_cosine"]["p50"] < tiny["min_cosine"]["p50"], "word problems sit nearer GSM8K conversations"

    version = republish(store, "math")
    rebuilt = metadata(materialize(["eval_proximity"], key, instance, resources, cfg), "eval_proximity")
    assert (rebuilt["reference_reused"], rebuilt["reference_version"]) == (False, version)
    with db.connect() as con:
        assert con.execute("SELECT DISTINCT version FROM reference_distances WHERE split = 'math'").fetchall() == [
            (version,)]
    assert len(table("eval_proximity")) == 150


def test_rollout_proximity_asset(materialized, store, db, instance, resources):
    materialize(["eval_samples"], "gsm8k", instance, resources)
    rollouts_key = dg.MultiPartitionKey({"eval_set": "gsm8k", "model": SMOL})
    for cfg in ({"limit": 2, "max_tokens": 48}, {"limit": 1, "max_tokens": 24}):  # gsm8k:0 under two params hashes
        materialize(["rollouts"], rollouts_key, instance, resources, cfg)
    stored = {(r.sample_id, r.params_hash): r for r in db.rollouts(model_id=SMOL)}
    answered = {k for k, r in stored.items() if r.completion.strip()}

    def run(split):
        key = dg.MultiPartitionKey({"model": SMOL, "split": split})
        md = metadata(materialize(["rollout_proximity"], key, instance, resources), "rollout_proximity")
        with db.connect() as con:
            cur = con.execute("SELECT * FROM rollout_proximity WHERE model_id = ? AND split = ?", [SMOL, split])
            cols = [c[0] for c in cur.description]
            return md, [dict(zip(cols, r)) for r in cur.fetchall()]

    md, rows = run("math")
    assert md["rollouts"] == len(stored) and md["answers"] == len(answered) and md["params_hashes"] >= 2
    assert {(r["sample_id"], r["params_hash"]) for r in rows if r["unit"] == "answer"} == answered
    assert md["sentences"] == sum(r["unit"] == "sentence" for r in rows) > 0
    for r in rows:
        completion = stored[(r["sample_id"], r["params_hash"])].completion
        assert completion[r["char_start"]:r["char_end"]] == r["text"] and 0 <= r["percentile"] <= 100
    for key in answered:
        idx = sorted(r["idx"] for r in rows if (r["sample_id"], r["params_hash"]) == key and r["unit"] == "sentence")
        assert idx == list(range(len(idx)))
    assert md["annotated_answers"].count("```text") == min(3, len(answered)) and "[-> " in md["annotated_answers"]
    assert md["answer_distance_by_correctness"].startswith("![answer distance](data:image/png;base64,")

    tiny_md, tiny_rows = run("tiny")
    assert tiny_md["units_encoded"] == 0 and tiny_md["units_cached"] > 0, "units encoded once for both splits"
    # other tests may have stored rollouts of other eval sets (recall answers sit near the sonnets): GSM8K's only
    gsm = {split: np.median([r["cosine"] for r in rs if r["unit"] == "answer" and r["eval_set"] == "gsm8k"])
           for split, rs in (("math", rows), ("tiny", tiny_rows))}
    assert gsm["math"] < gsm["tiny"], "GSM8K answers sit nearer GSM8K than sonnets"

    again, again_rows = run("math")
    assert len(again_rows) == len(rows) and again["reference_reused"] is True, "idempotent"


def test_rollout_proximity_check_accepts_no_rows_only_when_no_answer_has_text(tmp_path):
    """A model that ends every answer at once (the demo's test-size SFT models can) has nothing to measure: no
    rows is right then, and wrong when some answer has text."""
    from cp_assets.lib.reports.proximity import rollout_rows_consistent
    from cp_assets.lib.reports.results_db import ResultsDB

    db = ResultsDB(tmp_path / "results.duckdb")

    def rollout(model, sample, completion):
        with db.connect() as con:
            con.execute("INSERT INTO rollouts (sample_id, eval_set, model_id, backend, prompt, completion, params, "
                        "params_hash, finish_reason, latency_s, started_at, finished_at) VALUES (?, 'e', ?, 'tiny', "
                        "'q', ?, '{}', 'h', 'stop', 0.1, now(), now())", [sample, model, completion])

    rollout("silent", "e:0", "")
    rollout("silent", "e:1", "  ")
    rollout("talks", "e:0", "")
    rollout("talks", "e:1", "An answer.")
    assert rollout_rows_consistent(db, "silent", "sft") == (True, {
        "rows": 0, "distinct_keys": 0, "percentile_out_of_range": 0, "l2_cosine_mismatch": 0,
        "rollouts_with_text": 0})
    ok, figures = rollout_rows_consistent(db, "talks", "sft")
    assert not ok and (figures["rows"], figures["rollouts_with_text"]) == (0, 1)
