"""The corpus registry: `corpora.yaml` maps each corpus split to the sources it is read from.

    splits:
      mine:
        description: what this split holds
        sources:
          - path: mine.jsonl.gz        # relative paths resolve against CPROX_DATA_DIR
            text_field: text

A source is a local file (JSONL, JSONL.gz, plain text, text.gz), a glob of shard files that grows over time
(`path: crawl/shard-*.jsonl.gz`: every match, in name order; the nightly shard backfill re-reads a split when a
shard is added or changed), or a Hugging Face dataset streamed with `datasets` (`hf: {path: ..., name: ...,
split: ...}`). Validation errors name the registry file and the field.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cp_assets.lib.core import settings

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
    format: Literal["jsonl", "text"] | None = None
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

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if (self.path is None) == (self.hf is None):
            raise ValueError("a source needs exactly one of `path` (a local file) or `hf` (a Hugging Face dataset)")
        if self.hf is not None or self.resolved_format() == "jsonl":
            if (self.text_field is None) == (self.template is None):
                raise ValueError("a JSONL or hf source needs exactly one of `text_field` or `template`")
        if self.split_on is not None:
            re.compile(self.split_on)
        return self

    def resolved_format(self) -> str:
        if self.hf is not None:
            return "hf"
        if self.format:
            return self.format
        name = (self.path or "").removesuffix(".gz")
        return "jsonl" if name.endswith((".jsonl", ".json", ".ndjson")) else "text"

    def label(self) -> str:
        if self.name:
            return self.name
        if self.hf is not None:
            return self.hf.path.split("/")[-1]
        stem = Path(self.path or "").name.replace("*", "").strip("-_.") or Path(self.path or "").parent.name
        for suffix in (".gz", ".jsonl", ".json", ".ndjson", ".txt", ".raw"):
            stem = stem.removesuffix(suffix)
        return stem

    def resolve_path(self, data_dir: Path) -> Path:
        p = Path(self.path or "").expanduser()
        return p if p.is_absolute() else data_dir / p

    def is_sharded(self) -> bool:
        """A `path` with glob characters: a directory of shards that grows (a streaming source read from disk)."""
        return self.path is not None and glob.has_magic(self.path)

    def is_streaming(self) -> bool:
        return self.hf is not None or self.is_sharded()

    def shard_paths(self, data_dir: Path) -> list[Path]:
        """The files this source reads: the one `path`, or every file its glob matches, in name order."""
        pattern = self.resolve_path(data_dir)
        if not self.is_sharded():
            return [pattern]
        shards = sorted(Path(m) for m in glob.glob(str(pattern), recursive=True) if Path(m).is_file())
        if not shards:
            raise RegistryError(f"source {self.label()!r}: no shard file matches {pattern}")
        return shards


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    sources: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_labels(self) -> "Split":
        labels = [s.label() for s in self.sources]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"two sources share the name {dupes}: give them distinct `name`s (document ids use it)")
        return self


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
