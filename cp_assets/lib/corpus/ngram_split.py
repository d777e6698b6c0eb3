"""A split's n-gram index: one `NgramIndex` file per shard (`CPROX_HOME/ngrams/<split>/<shard>.duckdb`), built by
the shard's `ngram_index` step, and read as one index by contamination, tracing and `cprox trace`.

`open_index(split)` gives the shard's own `NgramIndex` when the split has one shard, else a `SplitIndex` whose
lookups run on every shard file and whose document numbers carry the shard (`shard number << 32 | doc`), so
matches, counts and spans are those of the whole split. The file a split had before shards (`ngrams/<split>.duckdb`,
all of its documents, which are shard 00000's) is moved into the split's folder as `00000.duckdb` by the next update
of that shard, and read as such until then.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pyarrow as pa

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import FilePath
from cp_assets.lib.corpus.ngram_index import DEFAULT_N, NgramIndex, index_path, safe_name

if TYPE_CHECKING:
    from cp_assets.lib.corpus.pgvector_store import PgStore

SINGLE_SHARD = "00000"
SHARD_BITS = 32


def shard_files(split: str, home: Path | None = None) -> dict[str, Path]:
    """shard key -> index file of a split's built shards (the file from before shards counts as shard 00000)."""
    folder = index_path(split, home, SINGLE_SHARD).parent
    files = {p.stem: p for p in sorted(folder.glob("*.duckdb"))} if folder.exists() else {}
    legacy = index_path(split, home)
    if SINGLE_SHARD not in files and legacy.exists():
        files[SINGLE_SHARD] = legacy
    return dict(sorted(files.items()))


def _adopt_legacy(split: str, home: Path | None = None) -> None:
    legacy, target = index_path(split, home), index_path(split, home, SINGLE_SHARD)
    if legacy.exists() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        legacy.replace(target)


class SplitIndex:
    """Several shard indexes read as one; the same reading interface as `NgramIndex`."""

    def __init__(self, split: str, shards: dict[str, NgramIndex]):
        self.split, self.shards = split, shards
        first = next(iter(shards.values()))
        self.n, self.tokenizer, self.vocab_size = first.n, first.tokenizer, first.vocab_size
        odd = {k: (ix.n, ix.tokenizer) for k, ix in shards.items() if (ix.n, ix.tokenizer) != (self.n, self.tokenizer)}
        if odd:
            raise ValueError(f"split {split!r}: shard indexes built with other settings than {(self.n, self.tokenizer)}"
                             f": {odd}; rebuild them (ngram_index with rebuild=True)")
        self.path = first.path.parent
        self._numbers = {k: int(k) if k.isdigit() else i for i, k in enumerate(shards)}

    def built_with(self) -> dict[str, str]:
        return next(iter(self.shards.values())).built_with()

    def hashes(self, ids: np.ndarray) -> np.ndarray:
        return next(iter(self.shards.values())).hashes(ids)

    def lookup(self, keys: pa.Table) -> pa.Table:
        """Every shard's matches of the query windows; `doc` = shard number << 32 | the shard's document number."""
        parts = []
        for key, index in self.shards.items():
            got = index.lookup(keys)
            doc = got.column("doc").to_numpy().astype(np.int64) | (np.int64(self._numbers[key]) << SHARD_BITS)
            parts.append(got.set_column(got.schema.get_field_index("doc"), "doc", pa.array(doc)))
        return pa.concat_tables(parts) if parts else keys.select([]).append_column("doc", pa.array([], pa.int64()))

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
        return {"n_docs": sum(p["n_docs"] for p in parts), "n_tokens": sum(p["n_tokens"] for p in parts),
                "n_postings": sum(p["n_postings"] for p in parts), "n": self.n, "tokenizer": self.tokenizer,
                "path": str(self.path), "shards": len(parts)}

    def version(self) -> str:
        from cp_assets.lib.core.versions import content_version

        return content_version([[k, ix.version()] for k, ix in self.shards.items()])


def open_index(split: str, home: Path | None = None, n: int | None = None,
               tokenizer: str | None = None) -> "NgramIndex | SplitIndex":
    """The split's index: its one shard's `NgramIndex`, or a `SplitIndex` over its shards; a split with no built
    shard gives an `NgramIndex` on shard 00000's path (its lookups say to materialize `ngram_index`)."""
    files = shard_files(split, home)
    if len(files) <= 1:
        path = next(iter(files.values()), index_path(split, home, SINGLE_SHARD))
        return NgramIndex(path, n=n, tokenizer=tokenizer)
    return SplitIndex(split, {k: NgramIndex(p, n=n, tokenizer=tokenizer) for k, p in files.items()})


def built_splits(home: Path | None = None) -> list[str]:
    """Splits with at least one built shard index (folder names and files from before shards)."""
    root = (home or settings.home()) / "ngrams"
    if not root.exists():
        return []
    names = {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.duckdb"))}
    return sorted(names | {p.stem for p in root.glob("*.duckdb")})


def has_index(split: str, home: Path | None = None) -> bool:
    return bool(shard_files(split, home))


def index_split(store: PgStore, split: str, *, shard: str = SINGLE_SHARD, n: int = DEFAULT_N,
                batch_tokens: int = 2_000_000, rebuild: bool = False,
                log: Callable[[str], None] = print) -> tuple[dict, str]:
    """The `ngram_index` asset's work: one shard's documents (from Postgres) into its index file, incrementally;
    returns the metadata (index size, what was added / removed / kept, throughput, the file) and the shard index's
    version. A shard with no documents (the plan has fewer shards) has no file: a stale one is removed."""
    if shard == SINGLE_SHARD:
        _adopt_legacy(split)
    index = NgramIndex(index_path(split, shard=shard), n=n)
    name = split if shard == SINGLE_SHARD else f"{split}/{shard}"
    if store.is_empty_shard(split, shard):
        index.path.unlink(missing_ok=True)
        log(f"{name}: an empty shard (the split's plan has fewer shards); no index file")
        return {"documents": 0, "tokens": 0, "postings": 0, "status": "empty_shard"}, "empty"
    if store.count("raw_corpus", split, shard=shard) == 0:
        raise ValueError(f"split {split!r} shard {shard} has no documents: materialize `raw_corpus` for it first")
    docs = ((d.doc_id, d.text) for d in store.iter_documents(split, shard=shard))
    stats = index.update(docs, batch_tokens=batch_tokens, rebuild=rebuild, log=log)
    summary = index.stats()
    log(f"{name}: +{stats.added} / -{stats.removed} / ={stats.kept} documents, {stats.tokens_added:,} "
        f"tokens indexed in {stats.seconds:.1f}s ({stats.tokens_per_s:,.0f} tokens/s)")
    return {"documents": summary["n_docs"], "tokens": summary["n_tokens"], "postings": summary["n_postings"],
            "added": stats.added, "removed": stats.removed, "kept": stats.kept, "tokens_added": stats.tokens_added,
            "seconds": round(stats.seconds, 2), "tokens_per_s": round(stats.tokens_per_s),
            "n": summary["n"], "tokenizer": summary["tokenizer"], "file": FilePath(summary["path"]),
            "file_mb": round(index.path.stat().st_size / 2**20, 1)}, index.version()


def index_matches_corpus(store: PgStore, split: str, shard: str = SINGLE_SHARD) -> tuple[bool, dict]:
    """The shard's index holds exactly its documents in Postgres (no batch lost or left over): (passed, figures)."""
    documents = store.count("raw_corpus", split, shard=shard)
    path = index_path(split, shard=shard)
    indexed = NgramIndex(path).stats()["n_docs"] if path.exists() else 0
    return indexed == documents, {"indexed": indexed, "documents": documents}


def drop_shard_index(split: str, shard: str, home: Path | None = None) -> None:
    index_path(split, home, shard).unlink(missing_ok=True)


def drop_split_index(split: str, home: Path | None = None) -> None:
    """Every shard index of a split (and the file from before shards)."""
    for path in shard_files(split, home).values():
        path.unlink(missing_ok=True)


__all__ = ["SplitIndex", "built_splits", "drop_shard_index", "drop_split_index", "has_index", "index_matches_corpus",
           "index_split", "open_index", "safe_name", "shard_files"]
