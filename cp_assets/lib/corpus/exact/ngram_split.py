"""A split's n-gram index: one suffix-array `NgramIndex` per shard (`CPROX_HOME/ngrams/<split>/<shard>.json` and its
folder), built by the shard's `ngram_index` step, and read as one index by contamination, tracing and `cprox trace`.

`open_index(split)` gives the shard's own `NgramIndex` when the split has one shard, else a `SplitIndex` whose
segments are every shard's, with document numbers that carry the shard (`shard number << 32 | doc`), so matches,
counts and spans are those of the whole split. Index files of the earlier DuckDB format (`*.duckdb`) are ignored
and removed by the next build of their shard.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import FilePath
from cp_assets.lib.corpus.exact.ngram_index import (
    DEFAULT_N,
    MAX_SEGMENT_TOKENS,
    NgramIndex,
    Segment,
    index_path,
    safe_name,
)

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore

SINGLE_SHARD = "00000"
SHARD_BITS = 32


def shard_files(split: str, home: Path | None = None) -> dict[str, Path]:
    """shard key -> index manifest of a split's built shards."""
    folder = index_path(split, home, SINGLE_SHARD).parent
    files = {p.stem: p for p in sorted(folder.glob("*.json"))} if folder.exists() else {}
    return dict(sorted(files.items()))


def _drop_legacy(split: str, shard: str, home: Path | None = None) -> None:
    """The DuckDB files of the earlier format for this shard (and, for shard 00000, the split's one file)."""
    root = index_path(split, home, shard).parent
    (root / f"{safe_name(shard)}.duckdb").unlink(missing_ok=True)
    if shard == SINGLE_SHARD:
        (root.parent / f"{safe_name(split)}.duckdb").unlink(missing_ok=True)


class SplitIndex:
    """Several shard indexes read as one; the same reading interface as `NgramIndex`."""

    def __init__(self, split: str, shards: dict[str, NgramIndex]):
        self.split, self.shards = split, shards
        first = next(iter(shards.values()))
        self.n, self.tokenizer, self.vocab_size = first.n, first.tokenizer, first.vocab_size
        odd = {k: ix.tokenizer for k, ix in shards.items() if ix.tokenizer != self.tokenizer}
        if odd:
            raise ValueError(f"split {split!r}: shard indexes built with another tokenizer than {self.tokenizer!r}: "
                             f"{odd}; rebuild them (ngram_index with rebuild=True)")
        self.path = first.path.parent
        self._numbers = {k: int(k) if k.isdigit() else i for i, k in enumerate(shards)}

    def built_with(self) -> dict:
        return next(iter(self.shards.values())).built_with()

    @property
    def segments(self) -> list[Segment]:
        """Every shard's segments; document numbers carry the shard (shard number << 32 | the shard's number)."""
        return [Segment(s.tok, s.sa, s.w, s.starts, self._numbers[k] << SHARD_BITS | s.doc_base)
                for k, ix in self.shards.items() for s in ix.segments]

    def unigrams(self) -> np.ndarray:
        return np.sum([ix.unigrams() for ix in self.shards.values()], axis=0)

    def doc_ids(self, docs: Sequence[int]) -> dict[int, str]:
        by_number = {n: k for k, n in self._numbers.items()}
        out: dict[int, str] = {}
        docs = np.asarray(list(docs), dtype=np.int64)
        for number in np.unique(docs >> SHARD_BITS):
            mine = docs[(docs >> SHARD_BITS) == number]
            local = self.shards[by_number[int(number)]].doc_ids((mine & 0xFFFFFFFF).tolist())
            out.update({int(number) << SHARD_BITS | d: doc_id for d, doc_id in local.items()})
        return out

    def stats(self) -> dict:
        parts = [ix.stats() for ix in self.shards.values()]
        n_tokens, size = sum(p["n_tokens"] for p in parts), sum(p["bytes"] for p in parts)
        return {"n_docs": sum(p["n_docs"] for p in parts), "n_tokens": n_tokens, "n": self.n,
                "tokenizer": self.tokenizer, "segments": sum(p["segments"] for p in parts), "bytes": size,
                "bytes_per_token": round(size / max(n_tokens, 1), 3), "path": str(self.path), "shards": len(parts)}

    def version(self) -> str:
        from cp_assets.lib.core.versions import content_version

        return content_version([[k, ix.version()] for k, ix in self.shards.items()])


def open_index(split: str, home: Path | None = None, n: int | None = None,
               tokenizer: str | None = None) -> "NgramIndex | SplitIndex":
    """The split's index: its one shard's `NgramIndex`, or a `SplitIndex` over its shards; a split with no built
    shard gives an `NgramIndex` on shard 00000's path (reading it says to materialize `ngram_index`)."""
    files = shard_files(split, home)
    if len(files) <= 1:
        path = next(iter(files.values()), index_path(split, home, SINGLE_SHARD))
        return NgramIndex(path, n=n, tokenizer=tokenizer)
    return SplitIndex(split, {k: NgramIndex(p, n=n, tokenizer=tokenizer) for k, p in files.items()})


def built_splits(home: Path | None = None) -> list[str]:
    """Splits with at least one built shard index."""
    root = (home or settings.home()) / "ngrams"
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.json")))


def has_index(split: str, home: Path | None = None) -> bool:
    return bool(shard_files(split, home))


def index_split(store: PgStore, split: str, *, shard: str = SINGLE_SHARD, n: int = DEFAULT_N,
                max_segment_tokens: int = MAX_SEGMENT_TOKENS, rebuild: bool = False,
                log: Callable[[str], None] = print) -> tuple[dict, str]:
    """The `ngram_index` asset's work: one shard's documents (from Postgres) into its suffix-array index, rebuilt
    only when the shard's documents or settings changed; returns the metadata (index size, bytes per token, what
    changed, throughput, the manifest) and the shard index's version. A shard with no documents (the plan has
    fewer shards) has no index: a stale one is removed."""
    _drop_legacy(split, shard)
    index = NgramIndex(index_path(split, shard=shard), n=n)
    name = split if shard == SINGLE_SHARD else f"{split}/{shard}"
    if store.is_empty_shard(split, shard):
        index.drop()
        log(f"{name}: an empty shard (the split's plan has fewer shards); no index")
        return {"documents": 0, "tokens": 0, "status": "empty_shard"}, "empty"
    if store.count("raw_corpus", split, shard=shard) == 0:
        raise ValueError(f"split {split!r} shard {shard} has no documents: materialize `raw_corpus` for it first")
    stats = index.update(lambda: ((d.doc_id, d.text) for d in store.iter_documents(split, shard=shard)),
                         max_segment_tokens=max_segment_tokens, rebuild=rebuild, log=log)
    summary = index.stats()
    log(f"{name}: {'rebuilt' if stats.rebuilt else 'unchanged'}; +{stats.added} / -{stats.removed} / ={stats.kept} "
        f"documents, {stats.tokens_added:,} tokens indexed in {stats.seconds:.1f}s "
        f"({stats.tokens_per_s:,.0f} tokens/s)")
    return {"documents": summary["n_docs"], "tokens": summary["n_tokens"], "status":
            "rebuilt" if stats.rebuilt else "unchanged", "added": stats.added, "removed": stats.removed,
            "kept": stats.kept, "tokens_added": stats.tokens_added, "seconds": round(stats.seconds, 2),
            "tokens_per_s": round(stats.tokens_per_s), "segments": summary["segments"],
            "bytes_per_token": summary["bytes_per_token"], "n": summary["n"], "tokenizer": summary["tokenizer"],
            "file": FilePath(summary["path"]), "file_mb": round(summary["bytes"] / 2**20, 1)}, index.version()


def index_matches_corpus(store: PgStore, split: str, shard: str = SINGLE_SHARD) -> tuple[bool, dict]:
    """The shard's index holds exactly its documents in Postgres: (passed, figures)."""
    documents = store.count("raw_corpus", split, shard=shard)
    path = index_path(split, shard=shard)
    indexed = NgramIndex(path).stats()["n_docs"] if path.exists() else 0
    return indexed == documents, {"indexed": indexed, "documents": documents}


def drop_shard_index(split: str, shard: str, home: Path | None = None) -> None:
    NgramIndex(index_path(split, home, shard)).drop()


def drop_split_index(split: str, home: Path | None = None) -> None:
    """Every shard index of a split."""
    for key in shard_files(split, home):
        drop_shard_index(split, key, home)


__all__ = ["SplitIndex", "built_splits", "drop_shard_index", "drop_split_index", "has_index", "index_matches_corpus",
           "index_split", "open_index", "safe_name", "shard_files"]
