"""Embed one shard of a split (a split not cut into shards is its one shard `00000`) into pgvector, resumably:
batches commit as they finish, a rerun embeds only the rest.

Chunks whose text is unchanged reuse their published vectors, so re-materializing an unchanged shard embeds nothing,
and a shard whose published vectors already match its chunks is left as it is. With `rates` (the split's
`embed_sample` per source, `Split.embed_samples()`), only the chunks `embed_sample.sampled_ids` draws are embedded,
and the checks expect exactly those.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

from cp_assets.lib.corpus.embed_sample import sampled_ids
from cp_assets.lib.corpus.encoder import encode_batches, model_dim, model_precision, model_slug
from cp_assets.lib.corpus.pgvector_store import SINGLE_SHARD, PgStore


def embed_split(store: PgStore, split: str, model: str, *, shard: str = SINGLE_SHARD, batch_size: int = 32,
                commit_every: int = 512, device: str | None = None, precision: str | None = None,
                log: Callable[[str], None] = print, rates: Mapping[str, float] | None = None) -> dict:
    """Build and publish one shard's embeddings (with `rates`, source -> `embed_sample`: its sampled chunks only);
    return figures for asset metadata: `chunks` (= `chunks_total`, the shard's chunks), `chunks_sampled` (those
    with a vector), `embed_sample` (the rates)."""
    slug = model_slug(model)
    every = store.chunk_rows(split, shard)
    name = split if shard == SINGLE_SHARD else f"{split}/{shard}"
    sample = {"embed_sample": dict(rates or {}), "chunks_total": len(every)}
    if not every and store.partition_version("chunks", split, shard=shard) is not None:
        store.drop_vectors(slug, split, shard)
        log(f"{name}: an empty shard (the split's plan has fewer shards); no vectors")
        return {"model": model, "chunks": 0, "embedded": 0, "reused": 0, "status": "empty_shard",
                "chunks_sampled": 0} | sample
    if not every:
        raise ValueError(f"split {split!r} shard {shard} has no chunks: materialize `chunks` for it first")
    ids = sampled_ids(store, split, shard, rates)  # None: every chunk (no id list to send)
    rows = every if ids is None else [r for r in every if r[0] in ids]
    dim = model_dim(model)
    store.ensure_embedding_table(slug, model, dim)
    t0 = time.perf_counter()
    figures = {"model": model, "table": f"emb_{slug}", "dim": dim, "chunks": len(every), "chunks_sampled": len(rows),
               "precision": model_precision(model, device, precision)} | sample
    with store.build_lock(slug, split, shard):
        if store.live_matches_chunks(slug, split, shard, ids):
            store.drop_build(slug, split, shard)
            log(f"{name}: the {len(rows)} published vectors already match the chunks; nothing to embed")
            return figures | {"embedded": 0, "reused": len(rows), "status": "up_to_date",
                              "seconds": round(time.perf_counter() - t0, 2)}
        done = store.prepare_build(slug, split, dim, shard, ids)
        todo = [r for r in rows if r[0] not in done]
        log(f"{name}: {len(every)} chunks, {len(rows)} sampled, {len(done)} already embedded (resumed or unchanged), "
            f"{len(todo)} to embed")

        def progress(n: int, total: int, rate: float) -> None:
            log(f"{name}: embedded {n}/{total} chunks ({rate:.1f} chunks/s)")

        t_enc, t_store = 0.0, 0.0
        tick = time.perf_counter()
        for start, vecs in encode_batches(model, [r[2] for r in todo], batch_size=batch_size,
                                          commit_every=commit_every, device=device, precision=precision,
                                          on_progress=progress):
            t1 = time.perf_counter()
            t_enc += t1 - tick
            batch = todo[start:start + len(vecs)]
            store.write_build(slug, split, [b[0] for b in batch], [b[1] for b in batch], vecs, shard)
            tick = time.perf_counter()
            t_store += tick - t1
        t1 = time.perf_counter()
        version = store.publish_build(slug, split, expected=len(rows), shard=shard)
        t_index = time.perf_counter() - t1
    total = time.perf_counter() - t0
    tokens = sum(r[3] for r in todo)
    return figures | {
        "embedded": len(todo), "reused": len(done), "status": "built", "version": version,
        "encode_seconds": round(t_enc, 2), "write_seconds": round(t_store, 2), "index_seconds": round(t_index, 2),
        "seconds": round(total, 2),
        "chunks_per_s": round(len(todo) / t_enc, 1) if t_enc else None,
        "tokens_per_s": round(tokens / t_enc, 1) if t_enc else None,
    }


def embed_and_publish(store: PgStore, split: str, model: str, *, shard: str = SINGLE_SHARD, batch_size: int = 32,
                      commit_every: int = 512, device: str | None = None, precision: str | None = None,
                      log: Callable[[str], None] = print,
                      rates: Mapping[str, float] | None = None) -> tuple[dict, str | None]:
    """The `embeddings` asset's work: `embed_split`'s figures and the published shard's version (the data
    version: unchanged when the shard was already up to date; None when nothing is published)."""
    figures = embed_split(store, split, model, shard=shard, batch_size=batch_size, commit_every=commit_every,
                          device=device, precision=precision, log=log, rates=rates)
    return figures, store.partition_version("embeddings", split, model_slug(model), shard)


def embedding_checks(store: PgStore, split: str, model: str, shard: str | None = SINGLE_SHARD,
                     rates: Mapping[str, float] | None = None) -> dict[str, tuple[bool, dict]]:
    """The published shard's (None: the split's) health: name -> (passed, figures), for the asset checks. With
    `rates` below 1 (`embed_sample`), `count_matches_chunks` wants exactly one vector per sampled chunk and none for
    the others (the ids compared, not only the counts)."""
    n_chunks, expected = store.count("chunks", split, shard=shard), model_dim(model)
    ids = sampled_ids(store, split, shard, rates)
    n_sampled = n_chunks if ids is None else len(ids)
    health = store.embedding_health(model_slug(model), split, shard, ids)
    # an empty shard (past the split's plan) passes with nothing in it, and so does a shard whose draw took no
    # chunk; any other shard needs its vectors
    empty = n_chunks == 0 and shard is not None and store.is_empty_shard(split, shard)
    none_drawn = empty or (n_chunks > 0 and n_sampled == 0)
    count_ok = health["rows"] == n_sampled and health.get("matched", n_sampled) == n_sampled
    return {
        "count_matches_chunks": (count_ok and (n_sampled > 0 or none_drawn),
                                 {"chunks": n_chunks, "chunks_sampled": n_sampled, "embeddings": health["rows"]}
                                 | ({} if ids is None else {"sampled_with_vector": health["matched"]})),
        "dim_matches_model": (health["dims"] == [expected] or (none_drawn and not health["dims"]),
                              {"dims": str(health["dims"]), "model_dim": expected}),
        "finite": (health["bad"] == 0 and (health["rows"] > 0 or none_drawn),
                   {"bad_vectors": health["bad"], "rows": health["rows"]}),
    }
