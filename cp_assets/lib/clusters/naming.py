"""Names for the nodes of a cluster tree: a keyword name always, and a Clio-style LLM name when a model is given.

Keyword names (c-TF-IDF against the siblings) come from keywords.py; every node has one.

LLM names (`name_nodes`) go bottom-up, one batched `backend.generate` per tree level. A leaf's prompt holds the
samples nearest its centroid and, for contrast, samples of its siblings; a parent's prompt holds its children's names
and descriptions, a few of its own samples and its siblings' samples. The answer (JSON, `Name:`/`Description:` lines,
`<name>` tags or two bare lines) must give a name of at most `max_name_words` words with a letter in it that does not
copy the instruction or a child's name; a rejected answer is asked again once (sampled, told why), a request the
server failed (after the HTTP client's own backoff: 429, 5xx, timeouts) once as it was, then the keyword name is used
and the reason kept in `NodeName.error`. A failing backend is handled the same way (one that fails on
every request of a level is not asked about the levels above): the tree is never lost to the model. Sibling names
that coincide get their own top keyword appended ("Math problems (money)"), as a last resort a number. Accepted LLM
answers are cached in the results DuckDB (`cluster_name_cache`), keyed by the node's member hash, the model id and
the prompt version, so re-clustering asks the model only about nodes whose member set changed (and their ancestors,
whose members changed too).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from cp_assets.lib.clusters.keywords import KeywordName, keyword_names
from cp_assets.lib.clusters.tree import Tree
from cp_assets.lib.evals.generation import Backend, GenerationRequest, SamplingParams

PROMPT_VERSION = "clio-1"
SYSTEM = "You are an expert at summarizing groups of texts."
FORMAT = ("Answer with a short topic name (at most {w} words) on the first line, then one sentence describing the "
          "texts on the second line.")
LEAF_TASK = "What is the topic of the texts from this group, unlike the other groups? " + FORMAT
PARENT_TASK = "What is the topic of this group as a whole, covering all of its subgroups? " + FORMAT
PLACEHOLDERS = {"name", "short name", "topic", "group name", "description", "this group", "group", "n/a", "none",
                "unknown", "untitled", "cluster", "text", "texts", "sentence", "one sentence"}
CACHE_DDL = ("CREATE TABLE IF NOT EXISTS cluster_name_cache (member_hash TEXT NOT NULL, model_id TEXT NOT NULL, "
             "prompt_version TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL, "
             "created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (member_hash, model_id, prompt_version))")

Nearest = Callable[[str, int], Sequence[str]]  # (node_id, k) -> the k member chunk ids nearest the node's centroid


@dataclass(frozen=True)
class NodeName:
    node_id: str
    name: str
    description: str
    keyword_name: str
    source: Literal["llm", "keywords"]
    model_id: str | None         # the naming model (None: keywords only)
    member_hash: str
    error: str | None = None     # why the LLM name was not used (None: it was, or no model was asked)
    cached: bool = False         # the LLM name came from cluster_name_cache


# -- samples nearest the centroid ---------------------------------------------------------------------------------
def nearest_members(tree: Tree, vectors: np.ndarray | Mapping[str, np.ndarray] | Nearest | None) -> Nearest:
    """`vectors`: rows aligned with tree.chunk_ids, a chunk id -> vector mapping, or already a `Nearest`. None: a
    fixed pseudo-random spread of the members (by hash of chunk id)."""
    if callable(vectors):
        return vectors

    @functools.lru_cache(maxsize=4096)
    def nearest(node_id: str, k: int) -> tuple[str, ...]:
        idx = tree.members(node_id)
        ids = [tree.chunk_ids[i] for i in idx]
        if vectors is None:
            return tuple(sorted(ids, key=lambda c: hashlib.blake2b(c.encode(), digest_size=8).digest())[:k])
        if isinstance(vectors, np.ndarray):
            mat = vectors[idx]
        else:
            ids = [c for c in ids if c in vectors]
            mat = np.stack([vectors[c] for c in ids]) if ids else np.zeros((0, len(tree.nodes[node_id].centroid)))
        sims = mat.astype(np.float32) @ tree.nodes[node_id].centroid.astype(np.float32)
        return tuple(ids[i] for i in sorted(range(len(ids)), key=lambda i: (-round(float(sims[i]), 6), ids[i]))[:k])

    return nearest


# -- the cache ----------------------------------------------------------------------------------------------------
class NameCache:
    """LLM names in the results DuckDB (`db`: a `ResultsDB`, anything with a `connect()` context manager)."""

    def __init__(self, db):
        self.db = db

    def get(self, model_id: str, version: str, member_hashes: Sequence[str]) -> dict[str, tuple[str, str]]:
        """member_hash -> (name, description) for the hashes named by this model under this prompt version."""
        with self.db.connect() as con:
            con.execute(CACHE_DDL)
            rows = con.execute("SELECT member_hash, name, description FROM cluster_name_cache WHERE model_id = ? AND "
                               "prompt_version = ? AND member_hash IN (SELECT unnest(?))",
                               [model_id, version, list(member_hashes)]).fetchall()
        return {h: (n, d) for h, n, d in rows}

    def put(self, rows: Sequence[tuple[str, str, str, str, str]]) -> None:
        """rows: (member_hash, model_id, prompt_version, name, description)."""
        if rows:
            with self.db.connect() as con:
                con.execute(CACHE_DDL)
                con.executemany("INSERT OR REPLACE INTO cluster_name_cache (member_hash, model_id, prompt_version, "
                                "name, description) VALUES (?, ?, ?, ?, ?)", list(rows))


# -- LLM names ----------------------------------------------------------------------------------------------------
def name_nodes(tree: Tree, texts_by_chunk: Mapping[str, str],
               vectors: np.ndarray | Mapping[str, np.ndarray] | Nearest | None = None,
               backend: Backend | None = None, cache: NameCache | None = None, *, samples: int = 6,
               contrast: int = 4, sample_chars: int = 300, max_name_words: int = 6,
               params: SamplingParams | None = None, keywords: Mapping[str, KeywordName] | None = None,
               llm_max_depth: int | None = None, log: Callable[[str], None] = print) -> dict[str, NodeName]:
    """A name and a one-sentence description for every node (see the module docstring). Without `backend` every
    node gets its keyword name; with `llm_max_depth`, only nodes that deep or shallower ask the model (the budget
    knob for big trees: a 4-level tree of 16k chunks has ~200 nodes). Never raises for what the model answers or
    for a failing backend."""
    kw = dict(keywords) if keywords is not None else keyword_names(tree, texts_by_chunk)
    names: dict[str, NodeName] = {}
    model_id = backend.model_id if backend is not None else None
    params = params or SamplingParams(max_tokens=64, logprobs=False)
    version = f"{PROMPT_VERSION}/s{samples}c{contrast}x{sample_chars}w{max_name_words}"
    nearest = nearest_members(tree, vectors)
    stats, down = Counter(), None
    for depth in sorted({n.depth for n in tree.nodes.values()}, reverse=True):
        level = sorted(n for n, node in tree.nodes.items() if node.depth == depth)
        if backend is not None and (llm_max_depth is None or depth <= llm_max_depth):
            down = _llm_level(tree, level, texts_by_chunk, nearest, backend, cache, kw, names, params, version,
                              stats, log, down, samples=samples, contrast=contrast, chars=sample_chars,
                              max_words=max_name_words)
        for n in level:
            if n not in names:
                names[n] = _keyword_node(tree, n, kw, model_id)
        _resolve_duplicates(tree, level, names, kw)
    if backend is not None:
        log(f"cluster names ({model_id}): {len(names)} nodes, {stats['hits']} from the cache, {stats['asked']} asked, "
            f"{stats['llm']} named by the model, {stats['fallback']} keyword fallbacks")
    return names


def naming_stats(names: Mapping[str, NodeName]) -> dict[str, int]:
    """Counts for asset metadata: nodes, llm, keywords, cached, errors."""
    v = list(names.values())
    return {"nodes": len(v), "llm": sum(n.source == "llm" for n in v),
            "keywords": sum(n.source == "keywords" for n in v), "cached": sum(n.cached for n in v),
            "errors": sum(n.error is not None for n in v)}


def _keyword_node(tree: Tree, node_id: str, kw: Mapping[str, KeywordName], model_id: str | None,
                  error: str | None = None) -> NodeName:
    k = kw[node_id]
    return NodeName(node_id, k.name or f"cluster {node_id}", k.description, k.name, "keywords", model_id,
                    tree.nodes[node_id].member_hash, error)


def _llm_level(tree, level, texts, nearest, backend, cache, kw, names, params, version, stats, log, down, *,
               samples, contrast, chars, max_words) -> str | None:
    """Name one tree level with the model: the cache first, then one batch, then one retry of what was rejected.
    Returns why the backend is down (every request of the level failed twice), so the levels above are not asked:
    `down` is that from the level below."""
    model_id = backend.model_id
    hashes = {n: tree.nodes[n].member_hash for n in level}
    hit = cache.get(model_id, version, list(hashes.values())) if cache is not None and level else {}
    for n in level:
        if hashes[n] in hit:
            names[n] = NodeName(n, *hit[hashes[n]], kw[n].name, "llm", model_id, hashes[n], cached=True)
    stats["hits"] += sum(n in names for n in level)
    todo = [n for n in level if n not in names]
    if down:
        for n in todo:
            names[n] = _keyword_node(tree, n, kw, model_id, error=f"not asked: {down}")
        stats["fallback"] += len(todo)
        return down
    stats["asked"] += len(todo)
    prompts = {n: _prompt(tree, n, texts, nearest, names, samples, contrast, chars, max_words) for n in todo}
    answers = _generate(backend, [GenerationRequest(sample_id=n, prompt=prompts[n], system_prompt=SYSTEM)
                                  for n in todo], params)
    verdicts = {n: _judge(answers[n], tree, n, names, max_words) for n in todo}
    again = [n for n in todo if isinstance(verdicts[n], str)]
    second: dict[str, str | Exception] = {}
    lost = [n for n in again if isinstance(answers[n], Exception)]  # no answer (the server failed): ask as before
    if lost:
        second |= _generate(backend, [GenerationRequest(sample_id=n, prompt=prompts[n], system_prompt=SYSTEM)
                                      for n in lost], params)
    rejected = [n for n in again if n not in lost]  # an unusable answer: ask again sampled, told why
    if rejected:
        retry = params.model_copy(update={"temperature": 0.7, "seed": (params.seed or 0) + 1})
        reqs = [GenerationRequest(sample_id=n, system_prompt=SYSTEM, prompt=f"{prompts[n]}\n\nAn earlier answer was "
                                  f"rejected ({verdicts[n]}). Follow the format exactly.") for n in rejected]
        second |= _generate(backend, reqs, retry)
    for n in again:
        v = _judge(second[n], tree, n, names, max_words)
        verdicts[n] = v if not isinstance(v, str) else f"first answer: {verdicts[n]}; retry: {v}"
    failed = [n for n in todo if isinstance(answers[n], Exception) and isinstance(second.get(n), Exception)]
    if todo and len(failed) == len(todo):
        down = f"the model failed on every request of level {tree.nodes[todo[0]].depth}: {str(answers[todo[0]])[:200]}"
        log(f"cluster names: {down}; the levels above get keyword names")
    new_rows = []
    for n in todo:
        v = verdicts[n]
        if isinstance(v, str):
            names[n] = _keyword_node(tree, n, kw, model_id, error=v)
            stats["fallback"] += 1
            log(f"cluster names: node {n}: keyword name {names[n].name!r} used ({v})")
            continue
        name, desc = v
        names[n] = NodeName(n, name, desc or kw[n].description, kw[n].name, "llm", model_id,
                            tree.nodes[n].member_hash)
        new_rows.append((hashes[n], model_id, version, name, names[n].description))
        stats["llm"] += 1
    if cache is not None:
        cache.put(new_rows)
    return down


def _generate(backend: Backend, reqs: list[GenerationRequest], params: SamplingParams) -> dict[str, str | Exception]:
    """Completion text per sample id, or the exception that lost it. A failure naming its sample drops only that
    one and the rest are asked again, unless two rounds in a row answered nothing (a server that is down); any
    other failure is recorded for every request not yet answered."""
    out: dict[str, str | Exception] = {}
    todo, strikes = list(reqs), 0
    while todo:
        answered = len(out)
        try:
            for r in backend.generate(todo, params):
                out[r.sample_id] = r.completion
            break
        except Exception as exc:  # noqa: BLE001 - the model's failure must not lose the tree
            left = [r for r in todo if r.sample_id not in out]
            culprit = getattr(exc, "sample_id", None)
            strikes = strikes + 1 if len(out) == answered else 0
            if culprit not in {r.sample_id for r in left} or strikes == 2:
                out.update({r.sample_id: exc for r in left})
                break
            out[culprit] = exc
            todo = [r for r in left if r.sample_id != culprit]
    return out


def _snippet(text: str, chars: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " ..."


def _prompt(tree, node_id, texts, nearest, names, samples, contrast, chars, max_words) -> str:
    node = tree.nodes[node_id]
    siblings = [c for c in tree.nodes[node.parent_id].children if c != node_id] if node.parent_id else []
    others: list[str] = []
    per_sibling = [list(nearest(s, contrast)) for s in siblings]
    for i in range(contrast):  # round-robin over the siblings, nearest first
        others += [ids[i] for ids in per_sibling if i < len(ids)]
    parts = []
    if others[:contrast]:
        parts.append("For contrast only, texts from other groups:\n" + "\n".join(
            f"- {_snippet(texts.get(c, ''), chars)}" for c in others[:contrast]))
    if node.children:
        parts.append("This group has these subgroups:\n" + "\n".join(
            f"- {names[c].name}: {names[c].description}" for c in node.children))
    own = list(nearest(node_id, samples if not node.children else max(2, samples // 2)))
    parts.append("Texts from this group:\n" + "\n".join(f"{i}. {_snippet(texts.get(c, ''), chars)}"
                                                         for i, c in enumerate(own, 1)))
    parts.append((PARENT_TASK if node.children else LEAF_TASK).format(w=max_words))
    return "\n\n".join(parts)


def parse_answer(text: str) -> tuple[str, str]:
    """(name, description) from a JSON object, `Name:`/`Description:` lines, `<name>`/`<summary>` tags, or the first
    two non-empty lines; ("", "") when there is nothing."""
    text = (text or "").strip()
    obj = _json_object(text)
    low = {str(k).lower(): v for k, v in obj.items() if isinstance(v, str)}
    if low.get("name") or low.get("title"):
        return _clean(low.get("name") or low["title"]), _sentence(low.get("description") or low.get("summary") or "")
    tag = {t: re.search(rf"<{t}>(.*?)(?:</{t}>|$)", text, re.S | re.I) for t in ("name", "summary", "description")}
    if tag["name"] and tag["name"].group(1).strip():
        d = tag["description"] or tag["summary"]
        return _clean(tag["name"].group(1)), _sentence(d.group(1) if d else "")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\W*(name|title|description|summary)\W*:\s*(.*)$", line.strip(), re.I)
        if m:
            fields.setdefault("description" if m.group(1).lower() in ("description", "summary") else "name",
                              m.group(2))
    if fields.get("name", "").strip():
        return _clean(fields["name"]), _sentence(fields.get("description", ""))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "", ""
    first, desc = lines[0], (lines[1] if len(lines) > 1 else "")
    quoted = re.search(r"\b(?:is|are|called|named|titled)\s*:?\s*[\"“](.+?)[\"”]", first)
    if quoted:  # small models: 'The topic of these texts is "The Art of Love".'
        return _clean(quoted.group(1)), _sentence(desc)
    return _clean(re.sub(r"^(?:the\s+)?(?:main\s+)?(?:topic|title|theme|name)\b.*?\b(?:is|are)\s*:?\s+", "",
                         first, flags=re.I)), _sentence(desc)


def _json_object(text: str) -> dict:
    m = re.search(r"\{.*\}", text, re.S)
    try:
        obj = json.loads(m.group(0)) if m else {}
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _clean(s: str) -> str:
    s = re.sub(r"[*_`#]+", "", s).strip()
    s = re.sub(r"^(name|title|description|summary)\s*:\s*", "", s, flags=re.I)
    return " ".join(s.split()).strip(" \"'“”‘’[]()<>").rstrip(".:;,!")


def _sentence(s: str, max_words: int = 50) -> str:
    """The first sentence, at most `max_words` words, ending in a full stop ("" for nothing)."""
    s = re.sub(r"[*_`#]+", "", s).strip()
    s = " ".join(re.sub(r"^(description|summary)\s*:\s*", "", s, flags=re.I).split()).strip(" \"'“”‘’[]<>")
    m = re.match(r"(.+?[.!?])(\s|$)", s)
    words = (m.group(1) if m else s).split()
    out = " ".join(words[:max_words])
    return out + ("." if out and out[-1] not in ".!?" else "")


def _judge(answer: str | Exception, tree: Tree, node_id: str, names: Mapping[str, NodeName],
           max_words: int) -> tuple[str, str] | str:
    """(name, description) if the answer is usable, else why not."""
    if isinstance(answer, Exception):
        return f"generation failed: {str(answer)[:300]}"
    name, desc = parse_answer(answer)
    words = name.split()
    instruction = f"{SYSTEM} {LEAF_TASK} {PARENT_TASK}".lower()
    if not name:
        return "empty answer" if not answer.strip() else f"no name in the answer {answer[:80]!r}"
    if not re.search(r"[^\W\d_]", name):
        return f"name {name!r} has no letters"
    if len(words) > max_words or len(name) > 12 * max_words:
        return f"name of {len(words)} words / {len(name)} characters (at most {max_words} words)"
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    content = set(_norm(name).split()) - ENGLISH_STOP_WORDS - set(_norm(instruction).split())
    if name.lower() in PLACEHOLDERS or "<" in name or f" {_norm(name)} " in f" {_norm(instruction)} " or not content:
        return f"name {name!r} copies the instruction"
    for c in tree.nodes[node_id].children:
        if _norm(names[c].name) == _norm(name):
            return f"name {name!r} repeats child {c}'s name"
    if not _norm(desc) or _norm(desc) in PLACEHOLDERS or f" {_norm(desc)} " in f" {_norm(instruction)} ":
        desc = ""
    return name, desc


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.casefold()).split())


def _resolve_duplicates(tree: Tree, level: Sequence[str], names: dict[str, NodeName],
                        kw: Mapping[str, KeywordName]) -> None:
    """Siblings with one name (or a node named like one of its children) get their first keyword not already in the
    name appended, "Math problems (money)"; as a last resort a number."""
    groups: dict[str | None, list[str]] = defaultdict(list)
    for n in level:
        groups[tree.nodes[n].parent_id].append(n)
    for group in groups.values():
        count = Counter(_norm(names[n].name) for n in group)
        used = set(count)
        for n in group:
            name = names[n].name
            children = {_norm(names[c].name) for c in tree.nodes[n].children}
            if count[_norm(name)] < 2 and _norm(name) not in children:
                continue
            taken = used | children
            options = [f"{name} ({k})" for k in kw[n].keywords if not set(k.split()) <= set(_norm(name).split())]
            options += [f"{name} ({i})" for i in range(2, len(group) + len(children) + 3)]
            new = next(o for o in options if _norm(o) not in taken)
            used.add(_norm(new))
            names[n] = replace(names[n], name=new)
