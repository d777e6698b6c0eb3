"""Token-aware, paragraph-aware chunking with the embedding model's own tokenizer.

Paragraphs (text separated by blank lines) are packed whole into chunks of at most `max_tokens` tokens; a paragraph
longer than that is cut into windows of `max_tokens` that overlap by `overlap` tokens, each cut moved back to the
end of a sentence when one lies in the window's last third. A chunk's text is exactly `doc.text[char_start:char_end]`
and its id is `<doc_id>#<n>`, stable for the same document and settings. `chunk_split` is the `chunks` asset's work.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from cp_assets.lib.core.metadata import FilePath, image
from cp_assets.lib.corpus.sources import Document

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore

PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", re.S)
SENTENCE_END = (".", "!", "?", ";", ":", "\n")


@dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int = 128
    overlap: int = 16

    def __post_init__(self):
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens={self.max_tokens}: chunks need at least 8 tokens")
        if not 0 <= self.overlap < self.max_tokens // 2:
            raise ValueError(f"overlap={self.overlap} must be >= 0 and under half of max_tokens={self.max_tokens}")


@dataclass
class Chunk:
    chunk_id: str
    doc_id: str
    split: str
    idx: int
    char_start: int
    char_end: int
    n_tokens: int
    text: str

    @property
    def text_hash(self) -> str:
        return hashlib.blake2b(self.text.encode("utf-8"), digest_size=8).hexdigest()


def paragraphs(text: str) -> list[tuple[int, int]]:
    """Character spans of the non-blank paragraphs of a text."""
    return [(m.start(), m.end()) for m in PARAGRAPH.finditer(text)]


def _windows(offsets: list[tuple[int, int]], text: str, cfg: ChunkConfig) -> Iterator[tuple[int, int]]:
    """Token index windows [i, j) over one long paragraph, cut at sentence ends where possible."""
    n, i = len(offsets), 0
    while i < n:
        j = min(i + cfg.max_tokens, n)
        if j < n:
            floor = i + (2 * cfg.max_tokens) // 3
            for cut in range(j, floor, -1):
                if text[offsets[cut - 1][1] - 1] in SENTENCE_END:
                    j = cut
                    break
        yield i, j
        if j >= n:
            return
        i = max(j - cfg.overlap, i + 1)


def chunk_document(doc: Document, tokenizer, cfg: ChunkConfig) -> list[Chunk]:
    spans = paragraphs(doc.text)
    if not spans:
        return []
    enc = tokenizer([doc.text[a:b] for a, b in spans], add_special_tokens=False,
                    return_offsets_mapping=True, verbose=False)
    pieces: list[tuple[int, int, int]] = []  # (char_start, char_end, n_tokens) before packing
    for (a, _b), offs in zip(spans, enc["offset_mapping"]):
        offs = [(a + s, a + e) for s, e in offs if e > s]
        if not offs:
            continue
        if len(offs) <= cfg.max_tokens:
            pieces.append((offs[0][0], offs[-1][1], len(offs)))
            continue
        for i, j in _windows(offs, doc.text, cfg):
            pieces.append((offs[i][0], offs[j - 1][1], j - i))
    chunks, cur = [], None
    for start, end, n in pieces:
        if cur and cur[2] + n <= cfg.max_tokens and n < cfg.max_tokens:
            cur = (cur[0], end, cur[2] + n)
            continue
        if cur:
            chunks.append(cur)
        cur = (start, end, n)
    chunks.append(cur)
    return [Chunk(f"{doc.doc_id}#{k}", doc.doc_id, doc.split, k, s, e, n, doc.text[s:e])
            for k, (s, e, n) in enumerate(chunks)]


def chunk_documents(docs: Iterable[Document], tokenizer, cfg: ChunkConfig) -> Iterator[Chunk]:
    for doc in docs:
        yield from chunk_document(doc, tokenizer, cfg)


def chunk_split(store: PgStore, split: str, tokenizer, tokenizer_name: str, *, shard: str | None = None,
                max_tokens: int = 128, overlap: int = 16, log: Callable[[str], None] = print) -> dict:
    """The `chunks` asset's work: one shard's documents (Postgres; default the split's one shard) chunked and its
    chunks replaced atomically; returns the metadata (counts, settings, throughput, a histogram of tokens per chunk)."""
    from cp_assets.lib.core import plots, settings
    from cp_assets.lib.corpus.pgvector_store import SINGLE_SHARD

    shard = shard or SINGLE_SHARD

    cfg = ChunkConfig(max_tokens, overlap)
    lengths: list[int] = []

    def counted(items: Iterable[Chunk]) -> Iterator[Chunk]:
        for c in items:
            lengths.append(c.n_tokens)
            if len(lengths) % 10_000 == 0:
                log(f"{split}: {len(lengths):,} chunks so far")
            yield c

    t0 = time.perf_counter()
    n = store.replace_chunks(split, counted(chunk_documents(store.iter_documents(split, shard=shard), tokenizer, cfg)),
                             shard)
    secs = time.perf_counter() - t0
    if n == 0 and store.is_empty_shard(split, shard):
        log(f"{split}/{shard}: an empty shard (the split's plan has fewer shards); no chunks")
        return {"chunks": 0, "tokens": 0, "status": "empty_shard", "seconds": round(secs, 2)}
    if n == 0:
        raise ValueError(f"split {split!r} shard {shard} produced no chunks: materialize `raw_corpus` for it first")
    tokens = sum(lengths)
    log(f"{split}: {n:,} chunks, {tokens:,} tokens in {secs:.1f}s")
    name = split if shard == SINGLE_SHARD else f"{split}_{shard}"
    png = plots.histogram(lengths, settings.home() / "plots" / f"chunk_tokens_{name}.png",
                          f"tokens per chunk ({name})", "tokens")
    return {"chunks": n, "tokens": tokens, "mean_tokens": round(tokens / n, 1), "max_tokens": cfg.max_tokens,
            "overlap": cfg.overlap, "tokenizer": tokenizer_name, "seconds": round(secs, 2),
            "tokens_per_s": round(tokens / secs, 1) if secs else None,
            "token_histogram": image(png, "tokens per chunk"), "token_histogram_png": FilePath(png)}
