"""Embedding proximity of eval questions and model answers to a corpus split: the machinery both reports share
(distances, the reference distribution, cached encoding, the search, the row checks, the sentence splitter) and the
`eval_proximity` report (`question_proximity`, `eval_proximity_report`); the answers' side, `rollout_proximity`,
is `cp_assets.lib.reports.answer_proximity`.

An item (a question, an answer, one sentence of an answer) is encoded with the split's embedding model and searched
in the split with the batched memory engine (`search.memory_search`, FAISS over the split's pgvector rows: flat =
exact by default, HNSW for very large splits). Embeddings are unit-normalized, so one cosine search gives the order
for every metric and the others follow from it: l2 = sqrt(2 * cosine), inner_product = cosine - 1 (pgvector's `<#>`).

Percentiles. A raw distance means little on its own (it depends on the model and on how uniform the split is), so
each nearest-chunk cosine distance is placed in the split's *reference distribution*: `size` (1,000) chunks of the
split drawn with a seed, each matched exactly (brute force) to its nearest chunk of *another* document (a chunk's own
document is excluded, else it would find itself or its neighbours). `percentile` (0-100) is the share of reference
distances <= the item's: 1 means closer to the split than 99% of the split's own chunks are to other documents.

Caches, both in the results DuckDB:
- `reference_distances` (schema in `report_tables`): keyed by (split, embed_model, version), version =
  `PgStore.partition_version("embeddings", split, slug)`; rebuilt when the split is re-embedded (new version) or the
  sample size changes (a new seed alone does not), reused otherwise (`eval_proximity` and `rollout_proximity` share
  it; whichever runs first for a split version computes it).
- `embedding_cache(embed_model, text_hash, vec FLOAT[])`: content-addressed (sha256 of the text) embeddings of
  questions, answers and sentences, so computing 3 splits, or re-materializing, encodes each text once.

Chunk ids are `<doc_id>#<n>` (`chunking.py`), so a chunk's document is read from its id.

A split embedded in part (`embed_sample` in the corpus registry) is searched over its vectors only: each row and
the metadata carry `embed_share` (vectors / chunks of the split), and a nearest distance is then an upper bound of
the distance to the whole split. The reference distribution is drawn from the same vectors, so an item and the
split's own chunks are both measured against the sample.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import Markdown, image, table
from cp_assets.lib.corpus.embed_sample import embed_shares
from cp_assets.lib.corpus.encoder import encode, model_slug
from cp_assets.lib.corpus.pgvector_store import Hit, PgStore
from cp_assets.lib.corpus.search import memory_search
from cp_assets.lib.reports import report_tables

REFERENCE_SIZE, REFERENCE_SEED = 1000, 0
CACHE_DDL = ("CREATE TABLE IF NOT EXISTS embedding_cache (embed_model TEXT NOT NULL, text_hash TEXT NOT NULL, "
             "vec FLOAT[] NOT NULL, PRIMARY KEY (embed_model, text_hash))")
QUANTILES = (10, 25, 50, 75, 90)


# -- distances and percentiles ------------------------------------------------------------------------------------
def distances_from_cosine(cosine: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(l2, inner_product) of unit vectors at cosine distance `cosine` (1 - cos): |a-b|^2 = 2 - 2 cos."""
    c = np.asarray(cosine, dtype=np.float64)
    return np.sqrt(np.maximum(2.0 * c, 0.0)), c - 1.0


def percentiles(values: Sequence[float] | np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Percent (0-100) of the reference distances <= each value; NaN without a reference."""
    values = np.asarray(values, dtype=np.float64)
    if len(reference) == 0:
        return np.full(values.shape, np.nan)
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    return 100.0 * np.searchsorted(ref, values, side="right") / len(ref)


def quantiles(values: Sequence[float]) -> dict[str, float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    return {f"p{q}": round(float(np.percentile(v, q)), 4) for q in QUANTILES} if len(v) else None


def doc_of(chunk_id: str) -> str:
    return chunk_id.rpartition("#")[0] or chunk_id


# -- reference distribution ---------------------------------------------------------------------------------------
def nearest_other_doc(mat: np.ndarray, docs: np.ndarray, rows: np.ndarray, block: int = 65_536) -> np.ndarray:
    """Exact cosine distance from each of `mat[rows]` to its nearest row of another document (inf when none)."""
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    q, qdocs = mat[rows], docs[rows]
    for s in range(0, len(mat), block):
        sims = q @ mat[s:s + block].T
        sims[qdocs[:, None] == docs[None, s:s + block]] = -np.inf
        np.maximum(best, sims.max(axis=1), out=best)
    return 1.0 - best.astype(np.float64)


@dataclass
class Reference:
    split: str
    embed_model: str
    version: str
    chunk_ids: list[str]
    cosine: np.ndarray  # sorted
    reused: bool
    seconds: float
    embed_share: float | None = None  # the split's vectors / chunks (below 1 under `embed_sample`)

    def figures(self) -> dict[str, Any]:
        return {"embed_share": self.embed_share, "reference_size": len(self.cosine), "reference_reused": self.reused,
                "reference_version": self.version, "reference_seconds": round(self.seconds, 2),
                "reference_median_cosine": round(float(np.median(self.cosine)), 4) if len(self.cosine) else None}


def reference(store: PgStore, db, model: str, split: str, *, size: int = REFERENCE_SIZE,
              seed: int = REFERENCE_SEED) -> Reference:
    """The split's reference distribution: from `reference_distances` when stored for the published embeddings'
    version with min(size, chunks) rows, else computed (exact) and stored in place of the split's older rows."""
    t0, slug, parts = time.perf_counter(), model_slug(model), store.partitions()
    part = next((p for p in parts if (p["kind"], p["model_slug"], p["split"]) == ("embeddings", slug, split)), None)
    if part is None:
        raise LookupError(f"split {split!r} has no embeddings for {model!r}: materialize `embeddings` first")
    version, share = part["version"], embed_shares(store, slug, parts).get(split)
    with db.connect() as con:
        report_tables.ensure(con, "reference_distances")
        got = con.execute("SELECT chunk_id, cosine FROM reference_distances WHERE split = ? AND embed_model = ? AND "
                          "version = ? ORDER BY cosine", [split, model, version]).fetchall()
    if got and len(got) == min(size, part["n_rows"]):
        return Reference(split, model, version, [c for c, _ in got], np.array([d for _, d in got]), True,
                         time.perf_counter() - t0, share)
    ids, mat = store.load_matrix(slug, split)
    rows = np.sort(np.random.default_rng(seed).choice(len(ids), size=min(size, len(ids)), replace=False))
    dist = nearest_other_doc(mat, np.array([doc_of(c) for c in ids]), rows) if len(rows) else np.zeros(0)
    keep = np.isfinite(dist)  # a split of one document has no reference
    pairs = sorted(zip([ids[i] for i in rows[keep]], dist[keep].tolist()), key=lambda p: p[1])
    with db.connect() as con:
        report_tables.replace_rows(con, "reference_distances", {"split": split, "embed_model": model},
                                   ["split", "embed_model", "version", "chunk_id", "cosine"],
                                   [(split, model, version, c, d) for c, d in pairs])
    return Reference(split, model, version, [c for c, _ in pairs], np.array([d for _, d in pairs]), False,
                     time.perf_counter() - t0, share)


# -- cached encoding ----------------------------------------------------------------------------------------------
def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def encode_cached(db, model: str, texts: Sequence[str], *, batch_size: int = 32,
                  device: str | None = None) -> tuple[np.ndarray, int, int]:
    """Unit embeddings of `texts` (rows in order), and how many distinct texts were encoded and how many came from
    `embedding_cache`. No DuckDB connection is held while encoding."""
    if not texts:
        return np.zeros((0, 0), np.float32), 0, 0
    hashes = [text_hash(t) for t in texts]
    unique = dict(zip(hashes, texts))
    with db.connect() as con:
        con.execute(CACHE_DDL)
        con.register("_cprox_hashes", pa.table({"text_hash": list(unique)}))
        try:
            got = con.sql("SELECT c.text_hash, c.vec FROM embedding_cache c JOIN _cprox_hashes h USING (text_hash) "
                          "WHERE c.embed_model = ?", params=[model]).to_arrow_table()
        finally:
            con.unregister("_cprox_hashes")
    flat = got.column("vec").combine_chunks().flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    found = dict(zip(got.column("text_hash").to_pylist(), flat.reshape(got.num_rows, -1) if got.num_rows else []))
    missing = [h for h in unique if h not in found]
    if missing:
        vecs = encode(model, [unique[h] for h in missing], batch_size=batch_size, device=device)
        found.update(zip(missing, vecs))
        values = pa.array(vecs.ravel(), pa.float32())
        offsets = pa.array(np.arange(0, len(values) + 1, vecs.shape[1], dtype=np.int32))
        new = pa.table({"embed_model": [model] * len(missing), "text_hash": missing,
                        "vec": pa.ListArray.from_arrays(offsets, values)})
        with db.connect() as con:
            con.execute(CACHE_DDL)
            con.register("_cprox_new", new)
            try:
                con.execute("INSERT OR IGNORE INTO embedding_cache SELECT * FROM _cprox_new")
            finally:
                con.unregister("_cprox_new")
    return np.stack([found[h] for h in hashes]), len(missing), len(unique) - len(missing)


def nearest(store: PgStore, model: str, split: str, vecs: np.ndarray, *, k: int, exact: bool = True,
            ef_search: int = 100, cache_dir: Path | None = None) -> list[list[Hit]]:
    """Top-k chunks of one split per query vector (cosine), through the batched memory engine."""
    if not len(vecs):
        return []
    return memory_search(store, model_slug(model), vecs, [split], k=k, metric="cosine", exact=exact,
                         ef_search=ef_search, cache_dir=cache_dir or settings.home() / "cache" / "indexes")


def write(db, where: dict[str, str], tables: dict[str, list[dict]]) -> dict[str, int]:
    """Replace the partition's rows of each table (table -> rows as dicts) in one transaction."""
    with db.connect() as con:
        return report_tables.replace_named(con, where, tables)


# -- eval questions -----------------------------------------------------------------------------------------------
def question_rows(eval_set: str, split: str, model: str, sample_ids: Sequence[str], hits: list[list[Hit]],
                  ref: Reference) -> tuple[list[dict], list[dict]]:
    """Rows of `eval_proximity` (one per question: its nearest chunk, distances, percentile) and `eval_neighbors`
    (one per question and rank)."""
    base = {"eval_set": eval_set, "split": split, "embed_model": model}
    mins = np.array([h[0].distance if h else np.nan for h in hits])
    pct = percentiles(mins, ref.cosine)
    items, neighbors = [], []
    for sid, top, p in zip(sample_ids, hits, pct):
        cos = np.array([h.distance for h in top])
        l2, ip = distances_from_cosine(cos)
        first = top[0] if top else None
        items.append(base | {"sample_id": sid, "min_cosine": float(cos[0]) if first else None,
                             "min_l2": float(l2[0]) if first else None,
                             "min_inner_product": float(ip[0]) if first else None,
                             "percentile": float(p) if first and np.isfinite(p) else None,
                             "nn_chunk_id": first and first.chunk_id, "nn_doc_id": first and first.doc_id,
                             "nn_text": first and first.text, "embed_share": ref.embed_share})
        neighbors += [base | {"sample_id": sid, "rank": h.rank, "chunk_id": h.chunk_id, "doc_id": h.doc_id,
                              "cosine": float(c), "l2": float(a), "inner_product": float(b)}
                      for h, c, a, b in zip(top, cos, l2, ip)]
    return items, neighbors


def question_proximity(store: PgStore, db, model: str, eval_set: str, split: str, samples: Sequence[dict], *,
                       k: int = 10, reference_size: int = REFERENCE_SIZE, reference_seed: int = REFERENCE_SEED,
                       exact: bool = True, ef_search: int = 100,
                       log: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
    """Nearest chunks of every eval question (`samples`: rows of `eval_samples`, `prompt` = the question) in one
    split; replaces the (eval set, split, model) rows of `eval_proximity` and `eval_neighbors`.
    Returns figures for asset metadata and the `eval_proximity` rows."""
    t0 = time.perf_counter()
    ref = reference(store, db, model, split, size=reference_size, seed=reference_seed)
    t1 = time.perf_counter()
    vecs, encoded, cached = encode_cached(db, model, [s["prompt"] for s in samples])
    t2 = time.perf_counter()
    hits = nearest(store, model, split, vecs, k=k, exact=exact, ef_search=ef_search)
    items, neighbors = question_rows(eval_set, split, model, [s["sample_id"] for s in samples], hits, ref)
    t3 = time.perf_counter()
    where = {"eval_set": eval_set, "split": split, "embed_model": model}
    write(db, where, {"eval_proximity": items, "eval_neighbors": neighbors})
    secs = time.perf_counter() - t0
    log(f"{eval_set} x {split}: {len(items)} questions ({encoded} encoded), reference "
        f"{'reused' if ref.reused else 'built'} ({len(ref.cosine)}), {secs:.1f}s")
    return ({"questions": len(items), "neighbor_rows": len(neighbors), "embed_model": model, "k": k,
             "exact": exact, "questions_encoded": encoded, "questions_cached": cached,
             "encode_seconds": round(t2 - t1, 3), "search_seconds": round(t3 - t2, 3), "seconds": round(secs, 3),
             "queries_per_s": round(len(items) / secs, 1) if secs else None,
             "min_cosine": quantiles([r["min_cosine"] for r in items]),
             "percentile": quantiles([r["percentile"] for r in items])} | ref.figures(), items)


CLOSEST_COLUMNS = {"sample": "sample", "question": "question", "nearest": "nearest chunk", "cosine": "cosine",
                   "percentile": "percentile"}


def shorten(text: str | None, width: int = 80) -> str:
    """Whitespace collapsed, cut at `width` characters with an ellipsis."""
    t = " ".join((text or "").split())
    return t[:width] + "…" if len(t) > width else t


def closest_table(items: Sequence[dict], questions: dict[str, str], n: int = 10, width: int = 80) -> Markdown:
    """Markdown table of the `n` items nearest to the split."""
    top = sorted((r for r in items if r["min_cosine"] is not None), key=lambda r: r["min_cosine"])[:n]
    rows = [{"sample": f"`{r['sample_id']}`", "question": shorten(questions.get(r["sample_id"]), width),
             "nearest": f"`{r['nn_chunk_id']}`: {shorten(r['nn_text'], width)}", "cosine": f"{r['min_cosine']:.4f}",
             "percentile": None if r["percentile"] is None else round(r["percentile"], 1)} for r in top]
    return table(rows, CLOSEST_COLUMNS, width=4 * width)


def eval_proximity_report(store: PgStore, db, model: str, eval_set: str, split: str, *, k: int = 10,
                          reference_size: int = REFERENCE_SIZE, reference_seed: int = REFERENCE_SEED,
                          exact: bool = True, ef_search: int = 100, limit: int | None = None,
                          log: Callable[[str], None] = print) -> dict:
    """The `eval_proximity` asset's work: the eval set's (first `limit`) stored questions matched in the split
    (`question_proximity`), and the metadata: figures, a histogram of percentiles, the closest questions."""
    samples = db.samples(eval_set, limit=limit)
    if not samples:
        raise ValueError(f"eval set {eval_set!r} has no samples in {db.path}: materialize `eval_samples` first")
    figures, items = question_proximity(store, db, model, eval_set, split, samples, k=k,
                                        reference_size=reference_size, reference_seed=reference_seed, exact=exact,
                                        ef_search=ef_search, log=log)
    from cp_assets.lib.core import plots

    png = plots.histogram([r["percentile"] for r in items if r["percentile"] is not None],
                          settings.home() / "plots" / f"eval_proximity_{eval_set}_{split}.png",
                          f"{eval_set} questions vs split {split}", "percentile of nearest-chunk distance", bins=20)
    return figures | {"percentile_histogram": image(png, "percentiles"),
                      "closest_items": closest_table(items, {s["sample_id"]: s["prompt"] for s in samples})}

# -- sentences (rollout_proximity, cluster annotations) ---------------------------------------------------------------
_PIECE = re.compile(r"[^\n]+?(?:[.!?]+[\"'”’)\]]*(?=\s)|(?=\n)|$)")


def split_sentences(text: str, min_words: int = 3) -> list[tuple[int, int, str]]:
    """(char_start, char_end, sentence) of `text`: cut after . ! ? (and closing quotes or brackets) followed by
    whitespace, and at every newline; pieces of fewer than `min_words` words are dropped."""
    out = []
    for m in _PIECE.finditer(text):
        piece = m.group()
        start = m.start() + len(piece) - len(piece.lstrip())
        end = m.start() + len(piece.rstrip())
        if end > start and len(text[start:end].split()) >= min_words:
            out.append((start, end, text[start:end]))
    return out


# -- checks -------------------------------------------------------------------------------------------------------
def rows_consistent(db, table: str, where: dict[str, str], key: Sequence[str], cosine: str,
                    l2: str) -> tuple[bool, dict]:
    """One row per `key` within the partition, percentiles within 0-100, and l2^2 = 2 * cosine (unit vectors)."""
    cond = " AND ".join(f"{c} = ?" for c in where)
    with db.connect() as con:
        report_tables.ensure(con, table)
        n, distinct, bad_pct, bad_l2 = con.execute(
            f"SELECT count(*), count(DISTINCT ({', '.join(key)})), count(*) FILTER (WHERE percentile < 0 OR "
            f"percentile > 100), count(*) FILTER (WHERE abs({l2} * {l2} - 2 * {cosine}) "
            f"> 1e-4) FROM {table} WHERE {cond}", list(where.values())).fetchone()
    return (n > 0 and n == distinct and bad_pct == 0 and bad_l2 == 0,
            {"rows": n, "distinct_keys": distinct, "percentile_out_of_range": bad_pct, "l2_cosine_mismatch": bad_l2})


def rollout_rows_consistent(db, model_id: str, split: str) -> tuple[bool, dict]:
    """`rows_consistent` for one model x split of `rollout_proximity`, where no rows is right when the model has
    no answer with text to measure (a tiny model that ends every answer at once, as the demo's SFT models can)."""
    passed, figures = rows_consistent(db, "rollout_proximity", {"model_id": model_id, "split": split},
                                      ["sample_id", "params_hash", "unit", "idx"], "cosine", "l2")
    with db.connect() as con:
        answered = con.execute("SELECT count(*) FILTER (WHERE trim(completion) <> '') FROM rollouts "
                               "WHERE model_id = ?", [model_id]).fetchone()[0]
    figures["rollouts_with_text"] = answered
    if figures["rows"] == 0:
        passed = answered == 0
    return passed, figures

