"""The cluster assets through Dagster on the test splits: cluster_tree (+ its blocking check), cluster_names (keyword
names, and SmolLM2 names through the LLM resource), cluster_report, annotations of stored rollouts, `cprox annotate`."""

import json
import re
from datetime import datetime, timezone

import dagster as dg
import pytest

from cp_assets.lib.evals.generation import Rollout, SamplingParams
from cp_assets_tests.conftest import metadata

MODEL = "echo-cluster"
SMOL = "smollm2-135m-instruct"


def assets():
    from cp_assets.definitions import cluster_assets, cluster_checks

    return cluster_assets + cluster_checks


def run(selection, key, resources, instance=None, config=None):
    result = dg.materialize(assets(), selection=selection, partition_key=key, resources=resources,
                            instance=instance, run_config={"ops": config or {}})
    assert result.success
    return result


@pytest.fixture(scope="module")
def trees(materialized, resources):
    from cp_assets.definitions import eval_assets

    assert dg.materialize(eval_assets, selection=["eval_samples"], partition_key="gsm8k", resources=resources).success
    return {t: run(["cluster_tree", "cluster_names", "cluster_report"], t, resources) for t in ("tiny", "all")}


def test_tree_names_and_question_clusters(trees, store):
    from cp_assets.resources.results import ResultsStore

    with ResultsStore().db().connect(read_only=True) as con:  # gsm8k, plus any set another test module loaded
        questions = con.execute("SELECT count(*) FROM eval_samples").fetchone()[0]
    assert questions >= 1319
    for name, result in trees.items():
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"check_cluster_tree_covers_every_chunk": True}
        tree_md, names_md, report_md = (metadata(result, a) for a in ("cluster_tree", "cluster_names",
                                                                      "cluster_report"))
        embedded = sum(store.count("embeddings", s, "all_minilm_l6_v2") for s in (["tiny", "math"] if name == "all"
                                                                                  else [name]))
        assert tree_md["chunks"] == embedded and tree_md["leaves"] >= 2
        assert names_md["nodes"] == tree_md["nodes"] and names_md["keywords"] == names_md["nodes"]
        assert names_md["treemap"].startswith("![cluster tree](data:image/png") and names_md["errors"] == {}
        assert report_md["questions"] == questions and "| cluster |" in report_md["questions_per_cluster"]
    with ResultsStore().db().connect(read_only=True) as con:
        per_leaf = con.execute("SELECT leaf_id, count(*) FROM cluster_members WHERE tree = 'all' GROUP BY 1").fetchall()
        names = con.execute("SELECT node_id, name, path FROM cluster_names WHERE tree = 'all'").fetchall()
        split_of_top = con.execute(
            "SELECT n.node_id, n.split_counts FROM cluster_nodes n WHERE tree = 'all' AND depth = 1").fetchall()
    assert sum(n for _, n in per_leaf) == metadata(trees["all"], "cluster_tree")["chunks"]
    assert len(names) == metadata(trees["all"], "cluster_tree")["nodes"] and all(n for _, n, _ in names)
    # the root of the "all" tree separates GSM8K conversations from the sonnets / web / Austen split
    purity = [max(json.loads(c).values()) / sum(json.loads(c).values()) for _, c in split_of_top]
    assert min(purity) > 0.9
    # the chat template of the GSM8K conversations ("User: ... Assistant: ...") is in every chunk of the math
    # nodes: boilerplate, never a keyword name
    assert not [n for _, n, _ in names if re.search(r"\b(user|assistant)\b", n)], names
    quality = metadata(trees["all"], "cluster_names")["name_quality_by_depth"]
    assert quality and quality[0]["depth"] == 1 and quality[0]["nodes"] == 2 and quality[0]["keyword_accuracy"] == 1.0
    assert all(0 <= q["keyword_accuracy"] <= 1 and q["llm_names"] == 0 for q in quality)  # keywords only here


def test_name_quality_is_retrieval_among_siblings_and_worse_llm_names_go():
    import numpy as np

    from cp_assets.lib.clusters import name_quality as nq
    from cp_assets.lib.clusters.keywords import KeywordName
    from cp_assets.lib.clusters.naming import NodeName
    from cp_assets.lib.clusters.tree import Node, Tree

    e = np.eye(3, dtype=np.float32)
    nodes = {"0": Node("0", None, 0, 4, e[0], None, {}, "h0", ["0.0", "0.1"]),
             "0.0": Node("0.0", "0", 1, 2, e[1], None, {}, "h1"), "0.1": Node("0.1", "0", 1, 2, e[2], None, {}, "h2")}
    tree = Tree(nodes, [], [], np.zeros(0, dtype=np.int32), ["0.0", "0.1"], 0, {})
    vec = {"cats": e[1], "dogs": e[2], "wrong": e[2]}
    encode = lambda texts: np.stack([vec[t.split(".")[0]] for t in texts])  # noqa: E731
    kw = {"0.0": KeywordName("cats", ("cats",), (1.0,)), "0.1": KeywordName("dogs", ("dogs",), (1.0,)),
          "0": KeywordName("", (), ())}
    names = {"0.0": NodeName("0.0", "wrong", "", "cats", "llm", "m", "h1"),
             "0.1": NodeName("0.1", "dogs", "", "dogs", "llm", "m", "h2")}
    k, m = nq.name_quality(tree, names, kw, encode)
    assert k == {"0.0": 1.0, "0.1": 1.0} and m == {"0.0": -1.0, "0.1": 1.0}
    assert nq.by_depth(tree, k, m) == [{"depth": 1, "nodes": 2, "keyword_accuracy": 1.0, "llm_names": 2,
                                        "llm_accuracy": 0.5}]
    assert nq.replace_worse(names, kw, k, m) == ["0.0"]
    assert names["0.0"].name == "cats" and names["0.0"].source == "keywords" and "margin -1.000" in names["0.0"].error


def test_rerun_is_deterministic_and_names_come_from_the_llm_cache(trees, resources):
    from cp_assets.resources.results import ResultsStore

    def hashes():
        with ResultsStore().db().connect(read_only=True) as con:
            return con.execute("SELECT node_id, member_hash FROM cluster_nodes WHERE tree = 'math' "
                               "ORDER BY node_id").fetchall()

    cfg = {"cluster_names": {"config": {"naming_model": SMOL, "samples": 3, "contrast": 2}}}
    first = run(["cluster_tree", "cluster_names"], "math", resources, config=cfg)
    before = hashes()
    second = run(["cluster_tree", "cluster_names"], "math", resources, config=cfg)
    assert hashes() == before, "same seed, same tree"
    md1, md2 = metadata(first, "cluster_names"), metadata(second, "cluster_names")
    assert md1["naming_model"] == SMOL and md1["nodes"] == md1["llm"] + md1["keywords"]
    assert md2["cached"] == md1["llm"], "the second run asks the model nothing"


@pytest.fixture(scope="module")
def echo(trees, store):
    from cp_assets.resources.results import ResultsStore

    docs = [d for _, d in zip(range(2), store.iter_documents("math"))]
    now = datetime.now(timezone.utc)
    params = SamplingParams(max_tokens=64)
    completions = [docs[0].text.split("Assistant: ")[1][:300], "Shall I compare thee to a summer's day? Thou art "
                   "more lovely and more temperate. Rough winds do shake the darling buds of May."]
    rows = [Rollout(sample_id=f"gsm8k:{i}", eval_set="gsm8k", model_id=MODEL, backend="test", prompt="p",
                    completion=c, params=params, params_hash=params.key(None), finish_reason="stop", latency_s=0.1,
                    started_at=now, finished_at=now, correct=bool(i))
            for i, c in enumerate(completions)]
    ResultsStore().db().write_rollouts(rows)
    return rows


def test_annotations_place_each_sentence(echo, resources):
    from cp_assets.resources.results import ResultsStore

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("models", [MODEL])
    key = dg.MultiPartitionKey({"model": MODEL, "split": "tiny"})
    md = metadata(run(["annotations"], key, resources, instance=instance), "annotations")
    with ResultsStore().db().connect(read_only=True) as con:
        rows = con.execute("SELECT sample_id, unit, idx, char_start, char_end, text, leaf_id, path, distance "
                           "FROM annotations WHERE model_id = ? AND tree = 'tiny' ORDER BY sample_id, unit, idx",
                           [MODEL]).fetchall()
    assert md["rollouts"] == 2 and md["annotated_units"] == len(rows) and md["sentences"] >= 4
    for sid, unit, idx, a, b, text, leaf, path, dist in rows:
        completion = echo[int(sid.split(":")[1])].completion
        assert completion[a:b] == text and leaf.startswith("0") and path and 0 <= dist <= 2
    assert "error_rate_table" in md and "| cluster |" in md["error_rate_table"]
    assert md["examples"].count("```text") == 2
    assert dg.materialize(assets(), selection=["annotations"], partition_key=key, resources=resources,
                          instance=instance).success  # idempotent rerun
    with ResultsStore().db().connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM annotations WHERE model_id = ?", [MODEL]).fetchone()[0] == len(rows)


def test_cprox_annotate(trees, capsys):
    from cp_assets.cli.main import main

    text = "Shall I compare thee to a summer's day? Natalia sold 48 clips in April and half as many in May."
    assert main(["annotate", text, "--tree", "all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["idx"] for r in rows] == [0, 1] and all(r["path"] and 0 <= r["distance"] <= 2 for r in rows)
    assert rows[0]["path_ids"][1] != rows[1]["path_ids"][1], "a sonnet line and a word problem part at the root"
    assert main(["annotate", text, "--tree", "nope"]) == 1
    assert "no cluster tree 'nope'" in capsys.readouterr().err


def test_cprox_annotate_reads_the_database_of_cprox_database_url(trees, capsys, monkeypatch):
    from cp_assets.cli.main import main

    monkeypatch.setenv("CPROX_DATABASE_URL", "postgresql://cprox@127.0.0.1:1/none?connect_timeout=2")
    assert main(["annotate", "Natalia sold 48 clips in April.", "--tree", "all"]) == 1
    assert "127.0.0.1:1" in capsys.readouterr().err
