"""The corpus registry: `corpora.yaml` maps each corpus split to the sources it is read from.

    splits:
      mine:
        description: what this split holds
        sources:
          - path: mine.jsonl.gz        # relative paths resolve against CPROX_DATA_DIR
            text_field: text

A source is a local file (JSONL or text, plain, `.gz` or `.zst`; Parquet), a directory or glob of shard files that
grows over time (`path: fineweb/sample/10BT/` or `path: crawl/shard-*.jsonl.gz`: every file, in name order; the
nightly shard backfill re-reads a split when a shard is added or changed), or a Hugging Face dataset streamed with
`datasets` (`hf: {path: ..., name: ..., split: ...}`). A file's format comes from its name (`.parquet`, `.jsonl`,
`.json`, `.ndjson`, a bare `.zst`: JSONL; `.txt`: text) unless `format:` says. Validation errors name the registry
file and the field.
"""

from __future__ import annotations

import glob
import re
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cp_assets.lib.core import settings
from cp_assets.lib.corpus.formats import format_of_name

SPLIT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


class RegistryError(ValueError):
    """The registry file is missing, malformed, or names something that does not exist."""


class Exclude(BaseModel):
    """Drop records whose `key` field equals the `field` of some record in another file (e.g. MATH-500 problems)."""

    model_config = ConfigDict(extra="forbid")
    path: str
    field: str
    key: str


class HFSource(BaseModel):
    """Arguments of `datasets.load_dataset(..., streaming=True)`."""

    model_config = ConfigDict(extra="forbid")
    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None
    revision: str | None = None


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    path: str | None = None
    hf: HFSource | None = None
    format: Literal["jsonl", "text", "parquet"] | None = None
    text_field: str | None = None
    template: str | None = None
    id_field: str | None = None
    meta_fields: list[str] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=list)
    joiner: str = "\n"
    split_on: str | None = None
    limit: int | None = Field(default=None, gt=0)
    where: dict[str, list[str | int]] = Field(default_factory=dict)
    exclude: Exclude | None = None
    on_bad_record: Literal["error", "skip"] = "error"
    max_doc_chars: int = Field(default=5_000_000, gt=0)
    # the share of this source's chunks that `embeddings` embeds (`lib/corpus/embed_sample.py`); the n-gram index
    # always covers every token
    embed_sample: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if (self.path is None) == (self.hf is None):
            raise ValueError("a source needs exactly one of `path` (a local file) or `hf` (a Hugging Face dataset)")
        if self.hf is not None or self.resolved_format() in ("jsonl", "parquet"):
            if (self.text_field is None) == (self.template is None):
                raise ValueError("a JSONL, Parquet or hf source needs exactly one of `text_field` or `template`")
        elif self.text_field is not None and self.template is not None:
            raise ValueError("give one of `text_field` or `template`, not both")
        if self.split_on is not None:
            re.compile(self.split_on)
        if not 0 < self.embed_sample <= 1:
            raise ValueError(f"source {self.label()!r}: embed_sample={self.embed_sample} must be > 0 and <= 1 (the "
                             "share of its chunks to embed; 1, the default, embeds every chunk)")
        return self

    def resolved_format(self) -> str | None:
        """`hf`, the `format:` given, or what the path's name implies; None for a directory or a glob whose name
        says nothing (each file's name decides, `file_format`)."""
        if self.hf is not None:
            return "hf"
        if self.format:
            return self.format
        return format_of_name(self.path or "")

    def file_format(self, path: Path) -> str:
        """The format one file of this source is read as: `format:`, else its name, else text (records need a
        `text_field` or `template`, so a source that has one reads unknown names as JSONL)."""
        if self.format:
            return self.format
        fmt = format_of_name(path.name)
        if fmt is not None:
            return fmt
        return "jsonl" if (self.text_field or self.template) else "text"

    def record_fields(self) -> tuple[list[str], list[str]]:
        """(fields every record must have, fields read when present): the columns a Parquet reader projects."""
        required = [self.text_field] if self.text_field else []
        if self.template:
            required += [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(self.template) if f]
        required += ([self.id_field] if self.id_field else []) + self.group_by
        optional = self.meta_fields + list(self.where) + ([self.exclude.key] if self.exclude else [])
        return list(dict.fromkeys(required)), [f for f in dict.fromkeys(optional) if f not in required]

    def label(self) -> str:
        if self.name:
            return self.name
        if self.hf is not None:
            return self.hf.path.split("/")[-1]
        path = Path(self.path or "")
        stem = path.name
        for suffix in (".gz", ".zst", ".zstd", ".jsonl", ".json", ".ndjson", ".parquet", ".txt", ".raw"):
            stem = stem.removesuffix(suffix)
        if glob.has_magic(stem):  # a glob of shards is named after its directory: crawl/shard-*.parquet -> crawl
            stem = path.parent.name
        return stem.strip("-_.") or path.parent.name

    def resolve_path(self, data_dir: Path) -> Path:
        p = Path(self.path or "").expanduser()
        return p if p.is_absolute() else data_dir / p

    def is_sharded(self, data_dir: Path | None = None) -> bool:
        """A `path` with glob characters or naming a directory (`dir/`, or any directory once `data_dir` is
        known): shards that grow over time (a streaming source read from disk)."""
        if self.path is None:
            return False
        if glob.has_magic(self.path) or self.path.endswith("/"):
            return True
        return data_dir is not None and self.resolve_path(data_dir).is_dir()

    def is_streaming(self) -> bool:
        return self.hf is not None or self.is_sharded()

    def shard_paths(self, data_dir: Path) -> list[Path]:
        """The files this source reads: the one `path`; every file of a directory (recursively, hidden files and
        names of no known format skipped unless `format:` is given); or every file a glob matches; in name order."""
        pattern = self.resolve_path(data_dir)
        if pattern.is_dir():
            shards = sorted((p for p in pattern.rglob("*") if p.is_file() and not _hidden(p.relative_to(pattern))
                             and (self.format or format_of_name(p.name))), key=lambda p: p.relative_to(pattern))
            where = f"directory {pattern} has no data file (.parquet, .jsonl, .json, .txt, optionally .gz/.zst)"
        elif self.is_sharded():
            shards = sorted(Path(m) for m in glob.glob(str(pattern), recursive=True) if Path(m).is_file())
            where = f"no shard file matches {pattern}"
        else:
            return [pattern]
        if not shards:
            raise RegistryError(f"source {self.label()!r}: {where}")
        return shards


def _hidden(relative: Path) -> bool:
    """Dot files and Spark/Hadoop markers (`.crc`, `_SUCCESS`) are not shards."""
    return any(part.startswith((".", "_")) for part in relative.parts)


DEFAULT_SHARD_BYTES = 256 << 20


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    sources: list[Source] = Field(min_length=1)
    # the shard planner packs files (or row-group slices of a larger Parquet file) into shards of about this many
    # bytes on disk: a small split is one shard, a directory of 2 GB Parquet files is one shard per ~256 MiB
    shard_bytes: int = Field(default=DEFAULT_SHARD_BYTES, gt=0)

    @model_validator(mode="after")
    def _unique_labels(self) -> "Split":
        labels = [s.label() for s in self.sources]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"two sources share the name {dupes}: give them distinct `name`s (document ids use it)")
        return self

    def embed_samples(self) -> dict[str, float]:
        """source name -> its `embed_sample` rate (the share of its chunks that are embedded)."""
        return {s.label(): s.embed_sample for s in self.sources}


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    splits: dict[str, Split] = Field(min_length=1)
    file: Path | None = Field(default=None, exclude=True)
    data_dir: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _names(self) -> "Registry":
        for name in self.splits:
            if not SPLIT_NAME.match(name):
                raise ValueError(f"split name {name!r} must match {SPLIT_NAME.pattern} (it is a partition key)")
        return self

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise RegistryError(
                f"unknown split {name!r}: {self.file} defines {sorted(self.splits)}; add it under `splits:` there"
            )
        return self.splits[name]

    def names(self) -> list[str]:
        return list(self.splits)


def validated_yaml(path: Path, model: type[BaseModel], error: type[Exception], hint: str):
    """Parse a YAML registry file into `model`; every problem becomes `error` naming the file and the field."""
    if not path.exists():
        raise error(f"{path} not found ({hint})")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise error(f"{path}: {problems}") from exc


def load_registry(path: Path | str | None = None, data_dir: Path | str | None = None) -> Registry:
    path = Path(path) if path else settings.corpora_file()
    registry = validated_yaml(path, Registry, RegistryError, "corpus registry; set CPROX_CORPORA to your file")
    registry.file = path
    registry.data_dir = Path(data_dir) if data_dir else settings.data_dir()
    return registry
