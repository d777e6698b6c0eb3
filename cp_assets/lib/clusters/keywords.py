"""Keyword names for the nodes of a cluster tree, which every node gets (an LLM name, naming.py, may replace them).

Keyword names are c-TF-IDF as BERTopic defines it, computed per sibling group: the "classes" are a node and its
siblings, each the concatenation of its chunks, and a term scores tf (its share of the class's words) x
log(1 + average words per class / the term's frequency over all the classes), so a node's keywords say what sets it
apart from its siblings (the root, alone, gets its most frequent terms). Terms are unigrams and bigrams without
English stop words or digits, and without template and boilerplate terms: those in at least half the chunks of a
corpus split ("user", "assistant" of a chat template) or of every node of the sibling group (of 20+ chunks each:
fewer say little); the name is the top three non-overlapping terms, "ducks · eggs · farmers market".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from cp_assets.lib.clusters.tree import Tree

TOKENS = r"(?u)\b[^\W\d_][^\W\d_']+\b"  # words of 2+ letters: no numbers, no calculator annotations
BOILERPLATE_SHARE = 0.5  # a term in this share of the chunks of a split, or of a node and each of its siblings, is out
BOILERPLATE_MIN_CHUNKS = 20  # ... when that split or every node of the group has at least this many chunks


@dataclass(frozen=True)
class KeywordName:
    name: str                    # top three terms joined with " · " ("" when the node has no words)
    keywords: tuple[str, ...]    # up to top_n non-overlapping terms, best first
    scores: tuple[float, ...]    # their c-TF-IDF scores

    @property
    def description(self) -> str:
        return f"Chunks marked by the terms {', '.join(self.keywords[:5])}." if self.keywords else "No words."


def keyword_names(tree: Tree, texts_by_chunk: Mapping[str, str], top_n: int = 10) -> dict[str, KeywordName]:
    """c-TF-IDF keywords of every node against its siblings (the root: its own top terms). Deterministic."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    docs = [texts_by_chunk.get(c) or "" for c in tree.chunk_ids]
    empty = KeywordName("", (), ())
    counts = None
    for min_df in ((2, 1) if len(docs) >= 20 else (1,)):  # min_df 2 drops one-chunk oddities, unless nothing is left
        vec = CountVectorizer(stop_words="english", ngram_range=(1, 2), token_pattern=TOKENS, min_df=min_df)
        try:
            x = vec.fit_transform(docs).tocsr().astype(np.float64)
        except ValueError:  # empty vocabulary
            continue
        terms = vec.get_feature_names_out()
        leaf_rows = sparse.csr_matrix((np.ones(len(docs)), (tree.leaf_of, np.arange(len(docs)))),
                                      shape=(len(tree.leaf_ids), len(docs)))
        present = (x > 0).astype(np.float64)
        by_leaf, df_leaf = leaf_rows @ x, leaf_rows @ present
        counts = {leaf: by_leaf[i] for i, leaf in enumerate(tree.leaf_ids)}
        dfs = {leaf: df_leaf[i] for i, leaf in enumerate(tree.leaf_ids)}
        boilerplate = split_boilerplate(present, tree.chunk_splits)
        break
    if counts is None:
        return {n: empty for n in tree.nodes}
    for node_id in sorted(tree.nodes, key=lambda n: -tree.nodes[n].depth):  # parents = sum of their children
        node = tree.nodes[node_id]
        if node.children:
            counts[node_id] = sum((counts[c] for c in node.children[1:]), counts[node.children[0]])
            dfs[node_id] = sum((dfs[c] for c in node.children[1:]), dfs[node.children[0]])
    groups = [[n] for n in tree.nodes if tree.nodes[n].parent_id is None]
    groups += [list(node.children) for node in tree.nodes.values() if node.children]
    out = {}
    for group in groups:
        scores = _ctfidf(sparse.vstack([counts[n] for n in group]).tocsr())
        # template and boilerplate ("user", "assistant" of a chat template, a site's footer): a term in at least
        # BOILERPLATE_SHARE of the chunks of every node of the group says nothing about any of them
        drop = boilerplate.copy()
        if min(tree.nodes[n].size for n in group) >= BOILERPLATE_MIN_CHUNKS:  # a share of a few chunks says little
            share = np.vstack([dfs[n].toarray() / tree.nodes[n].size for n in group])
            drop |= share.min(axis=0) >= BOILERPLATE_SHARE
        scores[:, drop] = 0.0
        for row, node_id in enumerate(group):
            out[node_id] = _top_terms(scores[row], terms, top_n)
    return {n: out.get(n, empty) for n in tree.nodes}


def split_boilerplate(present, chunk_splits: Sequence[str], min_chunks: int = BOILERPLATE_MIN_CHUNKS) -> np.ndarray:
    """Terms in at least BOILERPLATE_SHARE of the chunks of some split (of `min_chunks` or more): its template or
    boilerplate ("user", "assistant" in every chat-formatted chunk), never a keyword anywhere in the tree."""
    splits = np.asarray(chunk_splits)
    out = np.zeros(present.shape[1], dtype=bool)
    for s in set(chunk_splits):
        rows = np.flatnonzero(splits == s)
        if len(rows) >= min_chunks:
            out |= np.asarray(present[rows].mean(axis=0)).ravel() >= BOILERPLATE_SHARE
    return out


def _ctfidf(m) -> np.ndarray:
    """BERTopic's ClassTfidfTransformer: l1-normalized class term counts x log(1 + avg words per class / term
    frequency over all classes)."""
    m = m.toarray()
    freq = m.sum(axis=0)
    avg = m.sum(axis=1).mean()
    idf = np.log1p(np.divide(avg, freq, out=np.zeros_like(freq), where=freq > 0))
    tf = m / np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    return tf * idf


def _top_terms(row: np.ndarray, terms: np.ndarray, top_n: int) -> KeywordName:
    order = sorted(np.flatnonzero(row > 0), key=lambda j: (-round(float(row[j]), 12), terms[j]))
    picked: list[int] = []
    seen: set[str] = set()
    for j in order:  # skip a term sharing a word with a better one ("farmers" after "farmers market")
        words = set(terms[j].split())
        if not words & seen:
            picked.append(j)
            seen |= words
        if len(picked) == top_n:
            break
    kws = tuple(str(terms[j]) for j in picked)
    return KeywordName(" · ".join(kws[:3]), kws, tuple(round(float(row[j]), 6) for j in picked))
