"""Cluster names (cp_assets/lib/clusters/naming.py) on hand-built trees over real text: GSM8K train questions,
Shakespeare's sonnets and FineWeb-Edu pages from the shared data. Vectors are TF-IDF -> SVD (the module only needs a
centroid and member vectors). The LLM is the real local SmolLM2-135M-Instruct, or a real OpenAI-compatible HTTP
server on loopback (`ScriptedServer`) whose answers misbehave on purpose: empty, 500 words, HTTP 500, one name for
every node, or a good name only when asked again.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from cp_assets.lib.core import settings
from cp_assets.lib.clusters.keywords import keyword_names
from cp_assets.lib.clusters.naming import (PROMPT_VERSION, NameCache, name_nodes, naming_stats, nearest_members,
                                         parse_answer)
from cp_assets.lib.clusters.tree import Node, Tree, member_fingerprint
from cp_assets.lib.evals.model_registry import ModelSpec
from cp_assets.lib.reports.results_db import ResultsDB

GROUPS = ("math", "sonnets", "web")
MATH_WORDS = {"money", "bought", "buy", "sold", "cost", "costs", "pay", "paid", "dollars", "total", "earn", "earns",
              "does", "did", "twice", "half", "pages", "week", "hours", "minutes", "times", "price", "saving", "spend"}


# -- real text, hand-built trees ----------------------------------------------------------------------------------
def load_texts(n: int) -> dict[str, str]:
    d = settings.data_dir()
    with gzip.open(d / "gsm8k/train.jsonl.gz", "rt") as f:
        math_qs = [json.loads(next(f))["question"] for _ in range(n)]
    raw = gzip.open(d / "public_domain_texts/shakespeare_sonnets.txt.gz", "rt").read().replace("\r", "")
    sonnets = [s.strip() for s in re.split(r"\n\s*\n", raw) if len(s.strip()) > 200][:n]
    with gzip.open(d / "fineweb_edu_sample/fineweb_edu_sample10bt_150.jsonl.gz", "rt") as f:
        web = [json.loads(next(f))["text"][:800] for _ in range(n)]
    return {f"{g}:{i}": t for g, ts in zip(GROUPS, (math_qs, sonnets, web)) for i, t in enumerate(ts)}


def embed(texts: dict[str, str]) -> dict[str, np.ndarray]:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    ids = list(texts)
    v = TruncatedSVD(24, random_state=0).fit_transform(TfidfVectorizer(stop_words="english").fit_transform(
        [texts[i] for i in ids]))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return dict(zip(ids, v.astype(np.float32)))


def make_tree(groups: dict[str, list[list[str]]], vecs: dict[str, np.ndarray]) -> Tree:
    """Root "0"; group i is "0.i"; with more than one leaf, leaf j is "0.i.j"."""
    nodes: dict[str, Node] = {}
    chunk_ids: list[str] = []
    leaf_of: list[int] = []
    leaf_ids: list[str] = []

    def add(node_id, parent, depth, members, children):
        c = np.mean([vecs[m] for m in members], axis=0)
        nodes[node_id] = Node(node_id=node_id, parent_id=parent, depth=depth, size=len(members),
                              centroid=(c / np.linalg.norm(c)).astype(np.float32), quality=None,
                              split_counts={"x": len(members)}, member_hash=member_fingerprint(members),
                              children=children)
        if not children:
            leaf_ids.append(node_id)
            chunk_ids.extend(members)
            leaf_of.extend([len(leaf_ids) - 1] * len(members))

    add("0", None, 0, [m for leaves in groups.values() for leaf in leaves for m in leaf],
        [f"0.{i}" for i in range(len(groups))])
    for i, leaves in enumerate(groups.values()):
        gid = f"0.{i}"
        add(gid, "0", 1, [m for leaf in leaves for m in leaf],
            [f"{gid}.{j}" for j in range(len(leaves))] if len(leaves) > 1 else [])
        if len(leaves) > 1:
            for j, leaf in enumerate(leaves):
                add(f"{gid}.{j}", gid, 2, leaf, [])
    order = sorted(nodes, key=lambda n: (nodes[n].depth, n))
    return Tree(nodes={n: nodes[n] for n in order}, chunk_ids=chunk_ids, chunk_splits=["x"] * len(chunk_ids),
                leaf_of=np.array(leaf_of, np.int32), leaf_ids=leaf_ids, seed=0, params={})


def two_level(texts, vecs) -> Tree:
    """Root -> math / sonnets / web -> two KMeans leaves each."""
    from sklearn.cluster import KMeans

    groups = {}
    for g in GROUPS:
        ids = [i for i in texts if i.startswith(g + ":")]
        labels = KMeans(2, random_state=0, n_init=4).fit_predict(np.stack([vecs[i] for i in ids]))
        groups[g] = [[c for c, lab in zip(ids, labels) if lab == k] for k in (0, 1)]
    return make_tree(groups, vecs)


@pytest.fixture(scope="module")
def corpus():
    texts = load_texts(30)
    vecs = embed(texts)
    return texts, vecs, two_level(texts, vecs)


def group_of(tree: Tree, node_id: str) -> str:
    return tree.chunk_ids[tree.members(node_id)[0]].split(":")[0]


# -- keyword names ------------------------------------------------------------------------------------------------
def test_keyword_names_distinguish_the_groups(corpus):
    texts, _, tree = corpus
    kw = keyword_names(tree, texts)
    for gid in ("0.0", "0.1", "0.2"):
        group = group_of(tree, gid)
        own = " ".join(t.lower() for c, t in texts.items() if c.startswith(group + ":"))
        rest = " ".join(t.lower() for c, t in texts.items() if not c.startswith(group + ":"))
        assert len(kw[gid].keywords) >= 5 and kw[gid].name.count(" · ") == 2
        for term in kw[gid].keywords[:5]:  # each top term is far more frequent (per word) in its group than elsewhere
            pat = re.compile(rf"\b{re.escape(term)}\b")
            rate_own, rate_rest = len(pat.findall(own)) / len(own.split()), len(pat.findall(rest)) / len(rest.split())
            assert rate_own > 4 * rate_rest, (gid, term, rate_own, rate_rest)
    by_group = {group_of(tree, g): set(kw[g].keywords[:6]) for g in ("0.0", "0.1", "0.2")}
    assert by_group["math"] & MATH_WORDS, by_group["math"]
    assert {"thou", "thy", "thee"} & by_group["sonnets"]
    assert not by_group["web"] & ({"thou", "thy", "thee"} | MATH_WORDS)
    for parent in ("0.0", "0.1", "0.2"):  # sibling leaves are told apart
        a, b = tree.nodes[parent].children
        assert kw[a].name != kw[b].name and kw[a].keywords[0] != kw[b].keywords[0]
    # deterministic, whatever the order of the text mapping
    again = keyword_names(tree, dict(reversed(list(texts.items()))))
    assert again == kw


def test_keyword_scores_are_bertopic_ctfidf():
    """Two sibling leaves of one text each: score = tf (share of the class's words) x log(1 + avg words per class /
    the term's frequency over both classes)."""
    texts = {"a": "ducks eggs ducks market", "b": "poems eggs roses roses roses"}
    vecs = {"a": np.array([1, 0], np.float32), "b": np.array([0, 1], np.float32)}
    tree = make_tree({"g": [["a"], ["b"]]}, vecs)
    kw = keyword_names(tree, texts, top_n=20)
    counts = {"a": {"ducks": 2, "eggs": 1, "market": 1, "ducks eggs": 1, "eggs ducks": 1, "ducks market": 1},
              "b": {"poems": 1, "eggs": 1, "roses": 3, "poems eggs": 1, "eggs roses": 1, "roses roses": 2}}
    avg = (sum(counts["a"].values()) + sum(counts["b"].values())) / 2
    for leaf, key in (("0.0.0", "a"), ("0.0.1", "b")):
        total = sum(counts[key].values())
        got = dict(zip(kw[leaf].keywords, kw[leaf].scores))
        freq = {t: counts["a"].get(t, 0) + counts["b"].get(t, 0) for t in got}
        for term, score in got.items():
            assert score == pytest.approx(counts[key][term] / total * math.log(1 + avg / freq[term]), rel=1e-5)
    assert kw["0.0.0"].keywords[0] == "ducks" and kw["0.0.1"].keywords[0] == "roses"
    assert kw["0.0.0"].keywords == ("ducks", "market", "eggs")  # eggs, in both siblings, ranks below market
    assert "ducks eggs" not in kw["0.0.0"].keywords  # overlaps "ducks", which ranks higher


def test_without_a_model_every_node_gets_its_keyword_name(corpus):
    texts, vecs, tree = corpus
    names = name_nodes(tree, texts, vecs, backend=None, log=lambda s: None)
    kw = keyword_names(tree, texts)
    assert set(names) == set(tree.nodes)
    for n, nn in names.items():
        assert nn.source == "keywords" and nn.error is None and nn.model_id is None and not nn.cached
        assert nn.name and nn.description and nn.keyword_name == kw[n].name
        assert nn.member_hash == tree.nodes[n].member_hash
        for c in tree.nodes[n].children:  # parents are named, differently from each of their children
            assert nn.name != names[c].name
        siblings = tree.nodes[tree.nodes[n].parent_id].children if tree.nodes[n].parent_id else [n]
        assert len({names[s].name for s in siblings}) == len(siblings)
    assert naming_stats(names) == {"nodes": 10, "llm": 0, "keywords": 10, "cached": 0, "errors": 0}


def test_identical_siblings_get_distinct_names():
    """Two leaves holding the same texts have the same keywords: the last resort numbers them."""
    texts = {f"{s}{i}": t for i, t in enumerate(load_texts(4).values()) for s in "ab"}
    vecs = embed(texts)
    tree = make_tree({"g": [[c for c in texts if c[0] == "a"], [c for c in texts if c[0] == "b"]]}, vecs)
    names = name_nodes(tree, texts, vecs, log=lambda s: None)
    a, b = names["0.0.0"].name, names["0.0.1"].name
    assert a != b and a.startswith(names["0.0.0"].keyword_name) and b.startswith(names["0.0.1"].keyword_name)


def test_nearest_members_from_rows_mapping_or_nothing(corpus):
    texts, vecs, tree = corpus
    rows = np.stack([vecs[c] for c in tree.chunk_ids])
    for node_id in ("0", "0.1", "0.2.1"):
        by_rows = nearest_members(tree, rows)(node_id, 4)
        assert by_rows == nearest_members(tree, vecs)(node_id, 4)
        members = {tree.chunk_ids[i] for i in tree.members(node_id)}
        sims = {c: float(vecs[c] @ tree.nodes[node_id].centroid) for c in members}
        assert [sims[c] for c in by_rows] == sorted(sims.values(), reverse=True)[:4]
        spread = nearest_members(tree, None)(node_id, 4)
        assert len(spread) == 4 and set(spread) <= members and spread == nearest_members(tree, None)(node_id, 4)


@pytest.mark.parametrize("answer,expected", [
    ('{"name": "Grade-school math", "description": "Word problems about money."}',
     ("Grade-school math", "Word problems about money.")),
    ("Sure!\n**Name:** Shakespeare's sonnets\nDescription: Love poems.", ("Shakespeare's sonnets", "Love poems.")),
    ("<summary>Web pages on health.</summary>\n<name>Health articles</name>", ("Health articles",
                                                                                 "Web pages on health.")),
    ('The topic of these texts is "The Art of Love" by the author.', ("The Art of Love", "")),
    ("Money word problems\nArithmetic questions about buying things.",
     ("Money word problems", "Arithmetic questions about buying things.")),
    ("", ("", "")),
])
def test_parse_answer(answer, expected):
    assert parse_answer(answer) == expected


# -- a real OpenAI-compatible server that misbehaves ---------------------------------------------------------------
class ScriptedServer:
    """A loopback HTTP server speaking OpenAI's chat API whose answers come from `answer(prompt) -> str | int`
    (an int: that HTTP status). Counts POSTs and keeps the prompts."""

    def __init__(self, answer):
        self.answer, self.prompts, self._lock = answer, [], threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                prompt = body["messages"][-1]["content"]
                with server._lock:
                    server.prompts.append(prompt)
                out = server.answer(prompt)
                if isinstance(out, int):
                    return self._send(out, {"error": {"message": "scripted failure"}})
                self._send(200, {"id": "x", "object": "chat.completion", "created": int(time.time()),
                                 "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": out}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": len(out.split()),
                                           "total_tokens": 10 + len(out.split())}})

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def backend(self):
        from cp_assets.lib.evals.rollouts import backend_for

        return backend_for(ModelSpec(id="scripted", backend="openai", base_url=self.base_url, max_retries=0,
                                     timeout_s=10))

    def __enter__(self):
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()


def quiet(_):
    pass


@pytest.mark.parametrize("reply,reason", [("", "empty answer"), (" ".join(["word"] * 500), "500 words"),
                                          (500, "HTTP 500"), ("Name: <name>\nDescription: <sentence>",
                                                               "copies the instruction")])
def test_bad_answers_fall_back_to_keywords(corpus, reply, reason):
    texts, vecs, tree = corpus
    kw = keyword_names(tree, texts)
    with ScriptedServer(lambda prompt: reply) as srv:
        names = name_nodes(tree, texts, vecs, srv.backend(), samples=2, contrast=2, log=quiet)
        if isinstance(reply, str):
            assert len(srv.prompts) == 2 * len(tree.nodes)  # each node asked, then asked once more
        else:  # the six leaves: two rounds (each up to 4 at once), twice; then the server counts as down
            assert len(srv.prompts) <= 24 and not any("subgroups" in p for p in srv.prompts)
    assert set(names) == set(tree.nodes)
    for n, nn in names.items():
        assert nn.source == "keywords" and nn.model_id == "scripted"
        assert nn.name.startswith(kw[n].name) and nn.error and reason in nn.error, nn.error
        if isinstance(reply, str) or tree.nodes[n].is_leaf:
            assert nn.error.count(reason) == 2 and "retry" in nn.error
        else:
            assert nn.error.startswith("not asked: the model failed on every request of level 2")
    assert naming_stats(names)["errors"] == len(tree.nodes)


def test_rejected_answer_is_asked_again(corpus):
    texts, vecs, tree = corpus

    def answer(prompt):
        if "An earlier answer was rejected (empty answer)" in prompt:
            return "Topical subject " + ("leaf" if "subgroups" not in prompt else "branch") + \
                f" {len(prompt)}\nA group of related texts."
        return ""

    with ScriptedServer(answer) as srv:
        names = name_nodes(tree, texts, vecs, srv.backend(), samples=2, contrast=2, log=quiet)
        assert len(srv.prompts) == 2 * len(tree.nodes)
    for n, nn in names.items():
        assert nn.source == "llm" and nn.error is None and nn.name.startswith("Topical subject")
        assert nn.description == "A group of related texts."
    # parents were prompted with their children's final names, and leaves with contrast from their siblings
    parent_prompt = next(p for p in srv.prompts if "subgroups" in p and names["0.0.0"].name in p)
    assert names["0.0.1"].name in parent_prompt
    leaf_prompt = srv.prompts[0]
    assert leaf_prompt.index("For contrast only") < leaf_prompt.index("Texts from this group")


def test_duplicate_sibling_names_are_resolved(corpus):
    texts, vecs, tree = corpus
    kw = keyword_names(tree, texts)
    with ScriptedServer(lambda p: "Name: Assorted writing\nDescription: Texts of many kinds.") as srv:
        names = name_nodes(tree, texts, vecs, srv.backend(), samples=2, contrast=2, log=quiet)
    for parent in ("0", "0.0", "0.1", "0.2"):
        kids = tree.nodes[parent].children
        assert len({names[c].name for c in kids}) == len(kids)
        for c in kids:  # each gets one of its most distinctive keywords appended (the first unless taken by a child)
            m = re.fullmatch(r"Assorted writing \((.+)\)", names[c].name)
            assert m and m.group(1) in kw[c].keywords[:3]
            assert names[c].source == "llm"
    for leaf in tree.leaf_ids:  # leaves have no children to avoid: their first keyword
        assert names[leaf].name == f"Assorted writing ({kw[leaf].keywords[0]})"
    assert names["0"].name == "Assorted writing"  # the root has no sibling; its children's names now differ


def test_cache_renames_only_changed_nodes(corpus, tmp_path):
    texts, vecs, tree = corpus
    cache = NameCache(ResultsDB(tmp_path / "results.duckdb"))
    counter = iter(range(10_000))
    logs: list[str] = []

    def answer(prompt):
        return f"Name: Subject {next(counter)}\nDescription: Texts about one subject."

    with ScriptedServer(answer) as srv:
        first = name_nodes(tree, texts, vecs, srv.backend(), cache, samples=2, contrast=2, log=quiet)
        assert len(srv.prompts) == 10 and not any(n.cached for n in first.values())
        second = name_nodes(tree, texts, vecs, srv.backend(), cache, samples=2, contrast=2, log=logs.append)
        assert len(srv.prompts) == 10  # all hits: nothing asked
        assert all(n.cached for n in second.values())
        assert {n: v.name for n, v in second.items()} == {n: v.name for n, v in first.items()}
        assert "10 from the cache, 0 asked" in logs[-1]

        # drop one chunk from leaf 0.1.0: that leaf, its parent and the root change members; nothing else does
        drop = tree.chunk_ids[tree.members("0.1.0")[0]]
        groups = {g: [[tree.chunk_ids[i] for i in tree.members(f"0.{k}.{j}") if tree.chunk_ids[i] != drop]
                      for j in (0, 1)] for k, g in enumerate(GROUPS)}
        changed = make_tree(groups, vecs)
        assert {n for n in changed.nodes if changed.nodes[n].member_hash != tree.nodes[n].member_hash} == \
            {"0.1.0", "0.1", "0"}
        third = name_nodes(changed, texts, vecs, srv.backend(), cache, samples=2, contrast=2, log=quiet)
        assert len(srv.prompts) == 13
        assert {n for n, v in third.items() if not v.cached} == {"0.1.0", "0.1", "0"}
        assert all(third[n].name == first[n].name for n in third if third[n].cached)
    with cache.db.connect() as con:
        rows = con.execute("SELECT count(*), count(DISTINCT member_hash), min(model_id), max(model_id) "
                           "FROM cluster_name_cache").fetchone()
    assert rows == (13, 13, "scripted", "scripted")
    # another naming model misses every node
    version = f"{PROMPT_VERSION}/s2c2x300w6"
    assert NameCache(cache.db).get("scripted", version, [tree.nodes["0"].member_hash]) == {
        tree.nodes["0"].member_hash: (first["0"].name, first["0"].description)}
    assert NameCache(cache.db).get("other-model", version, [tree.nodes["0"].member_hash]) == {}


# -- the real local model -----------------------------------------------------------------------------------------
@pytest.fixture
def one_torch_thread():
    """SmolLM2 on CPU with one thread: on 2 shared cores two threads fighting other work run ~5x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_smollm2_names(tmp_path, one_torch_thread):
    from cp_assets.lib.evals.rollouts import backend_for
    from cp_assets.lib.evals.model_registry import load_models
    from cp_assets.lib.evals.generation import SamplingParams

    texts = load_texts(10)
    vecs = embed(texts)
    tree = make_tree({g: [[c for c in texts if c.startswith(g + ":")]] for g in GROUPS}, vecs)  # root + 3 leaves
    backend = backend_for(load_models().get("smollm2-135m-instruct"))
    backend.model_and_tokenizer  # noqa: B018 - load (and convert the GGUF once) outside the timed part
    cache = NameCache(ResultsDB(tmp_path / "results.duckdb"))
    t0 = time.perf_counter()
    names = name_nodes(tree, texts, vecs, backend, cache, samples=3, contrast=2, sample_chars=160,
                       params=SamplingParams(max_tokens=40, logprobs=False), log=print)
    secs = time.perf_counter() - t0
    for n, nn in names.items():
        print(n, nn.source, repr(nn.name), "|", nn.description, "|", nn.error)
        assert nn.name and nn.model_id == "smollm2-135m-instruct"
        if nn.source == "llm":
            assert nn.error is None and len(nn.name.split()) <= 6 + 2  # + a keyword appended to a duplicate
        else:
            assert nn.error and nn.name.startswith(nn.keyword_name)
    assert any(nn.source == "llm" for nn in names.values())  # greedy: SmolLM2 names some of these three groups
    assert secs < 60
    again = name_nodes(tree, texts, vecs, backend, cache, samples=3, contrast=2, sample_chars=160,
                       params=SamplingParams(max_tokens=40, logprobs=False), log=print)
    assert all(again[n].cached == (names[n].source == "llm") for n in names)
