"""Embedding a sample of a split: which chunks `embeddings` embeds when a source's `embed_sample` rate (corpus
registry) is below 1, and the split's embedded share that proximity reports and search print next to distances.

The unit is the chunk, not the document. A chunk is embedded when a stable hash of its id (`<doc_id>#<n>`: blake2b,
never Python's salted `hash()`) falls below its source's rate, so the choice depends only on the chunk id and the
rate: never on how the split is cut into shards, on batch order or on the process. By chunk rather than by document
because a split mixes documents of a few hundred characters (a GSM8K problem: one chunk) with books and plays of
hundreds of chunks: a document sample would put all or none of a play in, so the share of chunks embedded would
swing far from the rate, while a chunk sample is a Bernoulli draw per chunk, whose share stays within a binomial
band of the rate and thins every region of the corpus evenly. A document's chunks are not kept together; verbatim
evidence does not need them, since the n-gram index always covers every token of every document.

Lowering a rate keeps a subset of the chunks chosen before (the hash is compared with a threshold), so vectors are
reused, not recomputed; raising it adds chunks. What is recorded: the `embeddings` asset's metadata carries
`embed_sample` (rate per source), `chunks_sampled` and `chunks_total`; the reports and search carry `embed_share`,
the split's vectors / chunks (`embed_shares`). A nearest-neighbour distance over a sample is an upper bound of the
distance over the whole split.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore

SCALE = 1 << 64  # the hash is a 64-bit unsigned integer; a chunk is sampled when hash < rate * SCALE
PERSON = b"cprox_embed_smp"  # blake2b personalization: these draws are independent of other blake2b uses


def chunk_draw(chunk_id: str) -> int:
    """The chunk's 64-bit draw: blake2b of its id, the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(chunk_id.encode("utf-8"), digest_size=8, person=PERSON).digest(), "big")


def is_sampled(chunk_id: str, rate: float) -> bool:
    """Whether the chunk is embedded at `rate` (0 < rate <= 1): all at 1, a nested subset as the rate falls."""
    return rate >= 1.0 or chunk_draw(chunk_id) < int(rate * SCALE)


def samples_some(rates: Mapping[str, float] | None) -> bool:
    """True when some source embeds only part of its chunks."""
    return any(r < 1.0 for r in (rates or {}).values())


def sampled_ids(store: PgStore, split: str, shard: str | None, rates: Mapping[str, float] | None) -> set[str] | None:
    """The ids of the chunks of a split (or one shard) to embed: each chunk at the rate of its document's source
    (`rates`: source name -> rate; a source not named, 1). None, meaning every chunk, when no rate is below 1."""
    if not samples_some(rates):
        return None
    return {c for c, source in store.chunk_sources(split, shard).items() if is_sampled(c, rates.get(source, 1.0))}


def embed_shares(store: PgStore, slug: str, partitions: Sequence[Mapping] | None = None) -> dict[str, float]:
    """split -> the share of its chunks that hold a published vector of the model (vectors / chunks over the
    split's published shards), for every split with vectors. 1.0 when the split is embedded whole; below 1 under an
    `embed_sample` rate (or while some shard is not embedded yet). From `partitions` (rows of
    `PgStore.partitions()`) when the caller has read them already, else read now: one query for a whole batch of
    searches or a whole report, never one per query."""
    rows = store.partitions() if partitions is None else partitions
    n = {(p["kind"], p["model_slug"], p["split"]): p["n_rows"] for p in rows}
    chunks = {split: rows for (kind, _, split), rows in n.items() if kind == "chunks"}
    return {split: round(rows / chunks[split], 6) for (kind, model, split), rows in n.items()
            if kind == "embeddings" and model == slug and chunks.get(split)}
