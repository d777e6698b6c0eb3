"""`explain`: everything this project knows about where one text comes from, in one answer (no dagster).

For a text (a model answer, an eval question, anything) `Explainer.explain_many` returns per text:
- `spans`: its verbatim spans in every split with an n-gram index, OLMoTrace style, each with its count and its
  documents ranked by BM25 over the text (`spans.py`);
- `neighbours`: per embedded split, the nearest chunks with their cosine distance and its percentile in the split's
  reference distribution (`cp_assets.lib.reports.proximity.reference`, as `eval_proximity` gives it);
- `clusters`: each sentence's path in a cluster tree (default `all`), when the tree is built;
- `contamination`: the `contamination` rows of the eval item whose question the text is (exact text), if any;
- `membership`: membership scores of a rollout's answer from the logprobs its model returned (loss, Min-K% 20),
  when the text comes from a rollout that has them;
- `seen_score` in [0, 1] (`seen_score.py`), per sentence and for the text (its most seen sentence), and `seen`
  (the score at or above the dev-chosen threshold), with the evidence behind it.
An `Explainer` holds what is slow to open (indexes, BM25 over the chunks, the cluster tree, reference distributions),
so a warm one answers in well under a second; `--queries` and the web page reuse one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from cp_assets.lib.provenance import seen_score as ss
from cp_assets.lib.provenance.bm25_chunks import Bm25Chunks
from cp_assets.lib.provenance.evidence import CachedEncoder, gather, nearest

MAX_TEXT_BYTES = 1_000_000
NEIGHBOURS = 3


class ExplainError(ValueError):
    """A text, rollout or split that cannot be explained; the message says what is wrong and what to do."""


def check_text(text: str) -> str:
    if text is None or not text.strip():
        raise ExplainError("the text is empty: give a non-empty TEXT, '-' with text on stdin, --rollout ID or "
                           "--queries FILE")
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise ExplainError(f"the text is {size:,} bytes, over the limit of {MAX_TEXT_BYTES:,} (1 MB): explain a "
                           "part of it, or split it into several --queries lines")
    return text


@dataclass
class Explainer:
    store: object
    db: object
    model: str
    splits: list[str]
    indexes: dict
    bm25: Bm25Chunks
    tree_name: str = "all"
    tree: object | None = None
    names: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    log: Callable[[str], None] = print
    candidates: CachedEncoder | None = None

    def __post_init__(self):
        self.candidates = self.candidates or CachedEncoder(self.model)

    @classmethod
    def open(cls, store, db, *, splits: Sequence[str] | None = None, tree: str = "all", model: str | None = None,
             log: Callable[[str], None] = print) -> "Explainer":
        """Open every split that has both an n-gram index and embeddings (or the `splits` named, each of which must
        have both: the error says which is missing and how to build it)."""
        from cp_assets.lib.clusters import report as cluster_report
        from cp_assets.lib.clusters import store as cluster_store
        from cp_assets.lib.core import settings
        from cp_assets.lib.corpus.encoder import model_slug
        from cp_assets.lib.corpus.exact.ngram_split import built_splits, open_index

        t0 = time.perf_counter()
        model = model or settings.embed_model()
        embedded, indexed = store.embedded_splits(model_slug(model)), built_splits()
        if splits:
            for s in splits:
                missing = [what for what, have in (("an n-gram index (asset `ngram_index`)", s in indexed),
                                                   (f"embeddings for {model} (asset `embeddings`)", s in embedded))
                           if not have]
                if missing:
                    raise ExplainError(f"split {s!r} lacks {' and '.join(missing)}: build it with "
                                       f"`cprox materialize --split {s}` (indexed: {indexed}; embedded: {embedded})")
            chosen = list(splits)
        else:
            chosen = sorted(set(embedded) & set(indexed))
            if not chosen:
                raise ExplainError(f"no split has both an n-gram index and embeddings (indexed: {indexed}; embedded: "
                                   f"{embedded}): build one with `cprox materialize --split pretrain`")
        indexes = {s: open_index(s) for s in chosen}
        bm25 = Bm25Chunks(store, chosen)
        loaded = cluster_store.load_tree(store, tree, model_slug(model)) if tree else None
        names = cluster_report.load_names(db, tree, model) if loaded is not None else {}
        if tree and loaded is None:
            log(f"no cluster tree {tree!r} yet (materialize `cluster_tree` for it): no cluster paths")
        out = cls(store, db, model, chosen, indexes, bm25, tree, loaded, {k: v["name"] for k, v in names.items()},
                  log=log)
        log(f"explainer over {chosen} ready in {time.perf_counter() - t0:.1f} s ({len(bm25):,} chunks)")
        return out

    # -- pieces -----------------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]):
        """Vectors of `texts`. Callers encode texts and their sentences in separate calls: a batch pads to its longest
        member, so one long answer among its short sentences slows the whole call."""
        from cp_assets.lib.corpus.encoder import encode

        return encode(self.model, list(texts))

    def reference(self, split: str):
        from cp_assets.lib.reports.proximity import reference

        if split not in self.references:
            self.references[split] = reference(self.store, self.db, self.model, split)
        return self.references[split]

    def neighbours(self, vectors, k: int = NEIGHBOURS) -> list[dict[str, list[dict]]]:
        """Per text vector: split -> the k nearest chunks with distance and percentile."""
        from cp_assets.lib.reports.proximity import percentiles

        out = [dict() for _ in range(len(vectors))]
        for split in self.splits:
            hits = nearest(self.store, self.model, vectors, [split], k)
            ref = self.reference(split).cosine
            for row, hs in zip(out, hits):
                pct = percentiles([h.distance for h in hs], ref) if len(ref) else [None] * len(hs)
                row[split] = [{"rank": h.rank, "distance": float(h.distance),
                               "percentile": None if p is None else float(p), "doc_id": h.doc_id,
                               "chunk_id": h.chunk_id, "text": h.text} for h, p in zip(hs, pct)]
        return out

    def cluster_paths(self, pieces: Sequence[Sequence[tuple[int, int, str]]], vectors) -> list[list[dict] | None]:
        """Per text: each sentence's path in the tree, from the sentences' vectors (in order, all texts)."""
        from cp_assets.lib.clusters.annotations import Annotation, annotate_vectors

        if self.tree is None:
            return [None] * len(pieces)
        placed, out = iter(annotate_vectors(self.tree, vectors)), []
        for ps in pieces:
            rows = []
            for i, (a, b, sentence) in enumerate(ps):
                leaf, path, dists = next(placed)
                ann = Annotation(i, a, b, sentence, leaf, path, [self.names.get(p) or p for p in path], dists)
                rows.append({"sentence": sentence, "char_start": a, "char_end": b, "path": ann.path(),
                             "path_names": ann.path_names, "distance": ann.distance})
            out.append(rows)
        return out

    def contamination(self, texts: Sequence[str]) -> list[list[dict]]:
        from cp_assets.lib.reports import report_tables
        from cp_assets.lib.reports.contamination import COLUMNS

        with self.db.connect(read_only=True) as con:
            report_tables.ensure_readable(con, "contamination")
            have = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
            if "eval_samples" not in have:
                return [[] for _ in texts]
            rows = con.execute(f"SELECT q.i, {', '.join('c.' + c for c in COLUMNS)} FROM (SELECT unnest(?) AS text, "
                               "generate_subscripts(?, 1) AS i) AS q JOIN eval_samples AS s ON trim(s.prompt) = "
                               "trim(q.text) JOIN contamination AS c ON c.eval_set = s.eval_set AND c.sample_id = "
                               "s.sample_id ORDER BY q.i, c.split", [list(texts), list(texts)]).fetchall()
        out = [[] for _ in texts]
        for i, *row in rows:
            out[i - 1].append(dict(zip(COLUMNS, row)))
        return out

    def seen(self, pieces: Sequence[Sequence[tuple[int, int, str]]], vectors) -> list[dict]:
        """Per text: seen_score per sentence, the text's (its most seen sentence's), `seen`, and the evidence; from
        the sentences (`pieces`) and their vectors."""
        flat = [p for ps in pieces for _, _, p in ps]
        evs = gather(self.store, flat, indexes=self.indexes, model=self.model, bm25=self.bm25, vectors=vectors,
                     encoder=self.candidates, splits=self.splits)
        out, it = [], iter(evs)
        for ps in pieces:
            rows = []
            for _ in ps:
                ev = next(it)
                rows.append({"sentence": ev.text, "seen_score": ss.seen_score(ev),
                             "evidence": {k: v for k, v in ev.to_dict().items() if k not in ("text", "per_split")}})
            best = max(rows, key=lambda r: r["seen_score"])
            out.append({"seen_score": best["seen_score"], "seen": ss.is_seen(best["seen_score"]),
                        "threshold": ss.THRESHOLD, "seen_sentences": sum(ss.is_seen(r["seen_score"]) for r in rows),
                        "sentences": rows})
        return out

    # -- the whole answer ---------------------------------------------------------------------------------------
    def explain_many(self, texts: Sequence[str], *, membership: Sequence[dict | None] | None = None,
                     sources: Sequence[dict | None] | None = None) -> list[dict]:
        from cp_assets.lib.provenance.spans import trace_spans

        texts = [check_text(t) for t in texts]
        t0 = time.perf_counter()
        spans = [[] for _ in texts]
        for split, index in self.indexes.items():
            for row, found in zip(spans, trace_spans(index, self.store, split, texts)):
                row.extend(s.to_dict() for s in found)
        from cp_assets.lib.clusters.annotations import pieces as sentence_pieces

        pieces = [sentence_pieces(t) or [(0, len(t), t)] for t in texts]
        flat = [p for ps in pieces for _, _, p in ps]
        text_vectors, piece_vectors = self.encode(texts), self.encode(flat)
        near = self.neighbours(text_vectors)
        paths = self.cluster_paths(pieces, piece_vectors)
        contam = self.contamination(texts)
        seen = self.seen(pieces, piece_vectors)
        secs = time.perf_counter() - t0
        out = []
        for i, text in enumerate(texts):
            out.append({"text": text, "source": (sources or [None] * len(texts))[i], "spans": spans[i],
                        "neighbours": near[i], "clusters": paths[i], "cluster_tree": self.tree_name,
                        "contamination": contam[i], "membership": (membership or [None] * len(texts))[i],
                        **seen[i], "splits": self.splits, "seconds": round(secs / len(texts), 3)})
        return out

    def explain(self, text: str, **kw) -> dict:
        return self.explain_many([text], **{k: [v] for k, v in kw.items()})[0]


def rollout_text(db, rollout_id: str) -> tuple[str, dict, dict | None]:
    """(completion, source, membership) of a rollout `MODEL/SAMPLE_ID` (the newest when several parameter sets were
    run); membership from the logprobs its model returned, None without them."""
    import numpy as np

    from cp_assets.lib.evals.scoring import TokenScores
    from cp_assets.lib.memorization import membership as mia

    model_id, sep, sample_id = rollout_id.rpartition("/")
    if not sep or not model_id or not sample_id:
        raise ExplainError(f"rollout id {rollout_id!r}: expected MODEL/SAMPLE_ID, e.g. smollm2-135m-instruct/"
                           "gsm8k-test-00001 (list them: cprox sql \"SELECT model_id, sample_id FROM rollouts\")")
    with db.connect(read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'rollouts'").fetchone()[0]:
            raise ExplainError(f"no rollout {rollout_id!r} in the results database: it has no rollouts yet (run `cprox "
                               "rollouts --model MODEL` or materialize the `rollouts` asset)")
        row = con.execute("SELECT completion, eval_set, prompt, correct, logprobs, completion_token_ids FROM rollouts "
                          "WHERE model_id = ? AND sample_id = ? ORDER BY finished_at DESC LIMIT 1",
                          [model_id, sample_id]).fetchone()
    if row is None:
        raise ExplainError(f"no rollout {rollout_id!r} in the results database: list them with cprox sql \"SELECT "
                           f"model_id, sample_id FROM rollouts WHERE model_id = '{model_id}' LIMIT 20\"")
    completion, eval_set, prompt, correct, logprobs, token_ids = row
    source = {"rollout": rollout_id, "model_id": model_id, "sample_id": sample_id, "eval_set": eval_set,
              "question": prompt, "correct": correct}
    member = None
    if logprobs:
        lp = np.asarray(logprobs, dtype=float)
        ts = TokenScores(completion, list(token_ids or range(len(lp)))[:len(lp)], lp)
        member = {"model_id": model_id, "n_tokens": ts.n_tokens, "loss": mia.loss(ts), "min_k_20": mia.min_k(ts, 20),
                  "zlib": mia.zlib_ratio(ts), "note": "higher = more likely seen in training (logprobs the model "
                                                      "returned with the rollout)"}
    return completion, source, member
