"""Embedding proximity of model answers to a corpus split: the `rollout_proximity` report.

Every rollout's completion is cut into units, the whole answer (unit `answer`) and each sentence (unit `sentence`,
`proximity.split_sentences`, with character offsets into the completion), and each unit is matched to its nearest
chunk of the split, with its percentile in the split's reference distribution (shared with `eval_proximity`; see
`cp_assets.lib.reports.proximity`) and the split's `embed_share` (below 1 when `embed_sample` embedded part of
it). `mark_nearest_sentences` renders an answer with each sentence followed by its nearest document;
`rollout_proximity_report` is the asset's work (rows written, metadata rendered).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import Markdown, image
from cp_assets.lib.corpus.pgvector_store import PgStore
from cp_assets.lib.reports.proximity import (
    REFERENCE_SEED,
    REFERENCE_SIZE,
    distances_from_cosine,
    encode_cached,
    nearest,
    percentiles,
    quantiles,
    reference,
    split_sentences,
    write,
)


def rollout_units(completion: str, min_words: int = 3) -> list[tuple[str, int, int, int, str]]:
    """(unit, idx, char_start, char_end, text): the whole answer (stripped), then each sentence."""
    body = completion.strip()
    if not body:
        return []
    start = completion.index(body)
    return [("answer", 0, start, start + len(body), body)] + [
        ("sentence", i, a, b, t) for i, (a, b, t) in enumerate(split_sentences(completion, min_words))]


def answer_proximity(store: PgStore, db, model: str, model_id: str, split: str, rollouts: Sequence[Any], *,
                     min_words: int = 3, reference_size: int = REFERENCE_SIZE, reference_seed: int = REFERENCE_SEED,
                     exact: bool = True, ef_search: int = 100,
                     log: Callable[[str], None] = print) -> tuple[dict, list[dict]]:
    """Nearest chunk of every rollout's answer and of each of its sentences in one split; replaces the (model,
    split) rows of `rollout_proximity`. `rollouts`: `Rollout` records (every eval set and params hash)."""
    t0 = time.perf_counter()
    ref = reference(store, db, model, split, size=reference_size, seed=reference_seed)
    units = [(r, u) for r in rollouts for u in rollout_units(r.completion, min_words)]
    t1 = time.perf_counter()
    vecs, encoded, cached = encode_cached(db, model, [u[4] for _, u in units])
    t2 = time.perf_counter()
    hits = nearest(store, model, split, vecs, k=1, exact=exact, ef_search=ef_search)
    cos = np.array([h[0].distance if h else np.nan for h in hits])
    l2, ip = distances_from_cosine(cos)
    pct = percentiles(cos, ref.cosine)
    rows = []
    for (r, (unit, idx, a, b, text)), h, c, e, i, p in zip(units, hits, cos, l2, ip, pct):
        rows.append({"model_id": model_id, "split": split, "eval_set": r.eval_set, "sample_id": r.sample_id,
                     "params_hash": r.params_hash, "unit": unit, "idx": idx, "char_start": a, "char_end": b,
                     "text": text, "embed_model": model, "nn_chunk_id": h[0].chunk_id if h else None,
                     "nn_doc_id": h[0].doc_id if h else None, "cosine": float(c) if h else None,
                     "l2": float(e) if h else None, "inner_product": float(i) if h else None,
                     "percentile": float(p) if h and np.isfinite(p) else None, "embed_share": ref.embed_share})
    t3 = time.perf_counter()
    write(db, {"model_id": model_id, "split": split}, {"rollout_proximity": rows})
    secs = time.perf_counter() - t0
    answers = [x for x in rows if x["unit"] == "answer"]
    sentences = [x for x in rows if x["unit"] == "sentence"]
    close = [x for x in sentences if x["percentile"] is not None and x["percentile"] <= 5]
    log(f"{model_id} x {split}: {len(rollouts)} rollouts, {len(rows)} units ({encoded} encoded), {secs:.1f}s")
    return ({"rollouts": len(rollouts), "empty_completions": len(rollouts) - len(answers),
             "eval_sets": sorted({str(r.eval_set) for r in rollouts}),
             "params_hashes": len({r.params_hash for r in rollouts}), "answers": len(answers),
             "sentences": len(sentences), "sentences_per_answer": round(len(sentences) / len(answers), 2)
             if answers else None, "units_encoded": encoded, "units_cached": cached, "embed_model": model,
             "encode_seconds": round(t2 - t1, 3), "search_seconds": round(t3 - t2, 3), "seconds": round(secs, 3),
             "units_per_s": round(len(rows) / secs, 1) if secs else None,
             "answer_cosine": quantiles([x["cosine"] for x in answers]),
             "sentence_percentile": quantiles([x["percentile"] for x in sentences]),
             "close_sentence_rate": round(len(close) / len(sentences), 4) if sentences else None} | ref.figures(),
            rows)


def correctness(value: bool | None) -> str:
    return "ungraded" if value is None else "correct" if value else "incorrect"


def mark_nearest_sentences(completion: str, rows: Sequence[dict]) -> str:
    """The answer with each sentence followed by `[-> doc_id, cos 0.231, p 4]` (its nearest chunk's document,
    cosine distance and percentile); the text between sentences is kept as it is."""
    out, pos = [], 0
    for r in sorted((r for r in rows if r["unit"] == "sentence"), key=lambda r: r["char_start"]):
        pct = "" if r.get("percentile") is None else f", p {r['percentile']:.0f}"
        out += [completion[pos:r["char_end"]], f" [-> {r['nn_doc_id']}, cos {r['cosine']:.3f}{pct}]"]
        pos = r["char_end"]
    return "".join(out) + completion[pos:]


def annotated_examples(rollouts: Sequence[Any], rows: Sequence[dict], n: int = 3) -> Markdown:
    """Markdown: the `n` answers nearest to the split (answer-level cosine), annotated sentence by sentence."""
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        by_key.setdefault((r["sample_id"], r["params_hash"]), []).append(r)
    answers = sorted((r for r in rows if r["unit"] == "answer" and r["cosine"] is not None), key=lambda r: r["cosine"])
    completions = {(r.sample_id, r.params_hash): r for r in rollouts}
    parts = []
    for a in answers[:n]:
        key = (a["sample_id"], a["params_hash"])
        marked = mark_nearest_sentences(completions[key].completion, by_key[key]).replace("```", "`‵`")
        parts.append(f"**`{a['sample_id']}`** (params `{a['params_hash']}`, {correctness(completions[key].correct)}; "
                     f"answer -> `{a['nn_doc_id']}`, cos {a['cosine']:.3f})\n\n```text\n{marked}\n```")
    return Markdown("\n\n".join(parts) or "(no answers)")


def answer_cosine_by_correctness(rollouts: Sequence[Any], rows: Sequence[dict]) -> dict[str, list[float]]:
    graded = {(r.sample_id, r.params_hash): correctness(r.correct) for r in rollouts}
    out: dict[str, list[float]] = {"correct": [], "incorrect": [], "ungraded": []}
    for r in rows:
        if r["unit"] == "answer" and r["cosine"] is not None:
            out[graded[(r["sample_id"], r["params_hash"])]].append(r["cosine"])
    return out


def rollout_proximity_report(store: PgStore, db, model: str, model_id: str, split: str, *, min_words: int = 3,
                             reference_size: int = REFERENCE_SIZE, reference_seed: int = REFERENCE_SEED,
                             exact: bool = True, ef_search: int = 100, examples: int = 3,
                             log: Callable[[str], None] = print) -> dict:
    """The `rollout_proximity` asset's work: every stored rollout of `model_id` matched in the split
    (`answer_proximity`), and the metadata: figures, answers per correctness, a bar plot of the median answer cosine
    distance by correctness and `examples` answers annotated sentence by sentence."""
    stored = db.rollouts(model_id=model_id)
    if not stored:
        raise ValueError(f"model {model_id!r} has no rollouts in {db.path}: materialize `rollouts` first")
    figures, rows = answer_proximity(store, db, model, model_id, split, stored, min_words=min_words,
                                     reference_size=reference_size, reference_seed=reference_seed, exact=exact,
                                     ef_search=ef_search, log=log)
    groups = {k: v for k, v in answer_cosine_by_correctness(stored, rows).items() if v}
    from cp_assets.lib.core import plots

    png = plots.bars(list(groups), [quantiles(v)["p50"] for v in groups.values()],
                     settings.home() / "plots" / f"rollout_proximity_{model_id}_{split}.png",
                     f"{model_id} answers vs split {split}", "median answer cosine distance",
                     [len(v) for v in groups.values()])
    return figures | {"answers_by_correctness": {k: len(v) for k, v in groups.items()},
                      "answer_distance_by_correctness": image(png, "answer distance"),
                      "annotated_answers": annotated_examples(stored, rows, examples)}
