"""The eval-set registry: `evals.yaml` says where each eval set's samples come from and how they are prompted.

    evals:
      gsm8k:
        kind: gsm8k                        # gsm8k | math500 | math | recall: how rows become samples
        path: gsm8k/test.jsonl.gz          # relative paths resolve against CPROX_DATA_DIR
        hf: {path: openai/gsm8k, name: main, split: test}
        source: auto                       # auto (default) | local | hf
        limit: 200                         # optional: the first N rows
        prompt_template: "{question}\\n\\nEnd with a line '#### <number>'."
        system_prompt: null
        description: ...

Where samples come from: `source: local` reads `path` (it must exist); `source: hf` loads `hf` with
`datasets.load_dataset`; `source: auto` reads `path` when that file exists and falls back to `hf` otherwise.
`prompt_template` fills `{name}` placeholders from the sample (`{prompt}` always; per kind also e.g. `{question}`,
`{problem}`, `{subject}`, `{level}`, `{prefix}`, `{title}`: see TEMPLATE_FIELDS); the answer is never available.
Other braces are kept as written (`\\boxed{}`); write `{{` and `}}` for a literal brace around a word.
The eval-set name prefixes sample ids (`gsm8k:17`). `CPROX_EVALS` points at another registry file.
`store_samples` is the `eval_samples` asset's work: one set's samples into the results DuckDB.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import Markdown
from cp_assets.lib.core.versions import samples_version
from cp_assets.lib.corpus.registry import validated_yaml
from cp_assets.lib.evals.generation import GenerationRequest
from cp_assets.lib.evals.samples import AnySample, Sample, hf_samples, read_samples

EVAL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_COMMON = ("prompt", "id", "eval_set")
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "gsm8k": _COMMON + ("question",),
    "math500": _COMMON + ("problem", "subject", "level"),
    "math": _COMMON + ("problem", "subject", "level"),
    "recall": _COMMON + ("prefix", "title", "author", "category"),
}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)\}")
REQUEST_DROP = ("solution",)  # bulky sample metadata left out of generation requests (and so of rollouts)


class EvalRegistryError(ValueError):
    """The eval registry is missing, malformed, or names something that does not exist."""


class HFDataset(BaseModel):
    """Arguments of `datasets.load_dataset`; `fields` renames hub columns to ours ({our_name: hub_name})."""

    model_config = ConfigDict(extra="forbid")
    path: str
    name: str | None = None
    split: str = "test"
    data_files: str | list[str] | None = None
    revision: str | None = None
    streaming: bool = False
    fields: dict[str, str] = Field(default_factory=dict)


class EvalDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""  # the key under `evals:`
    kind: Literal["gsm8k", "math500", "math", "recall"]
    description: str = ""
    path: str | None = None
    hf: HFDataset | None = None
    source: Literal["auto", "local", "hf"] = "auto"
    limit: int | None = Field(default=None, gt=0)
    prompt_template: str = "{prompt}"
    system_prompt: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "EvalDef":
        if self.path is None and self.hf is None:
            raise ValueError("an eval set needs `path` (a local file), `hf` (a Hugging Face dataset) or both")
        if self.source == "local" and self.path is None:
            raise ValueError("`source: local` needs `path`")
        if self.source == "hf" and self.hf is None:
            raise ValueError("`source: hf` needs `hf`")
        allowed = TEMPLATE_FIELDS[self.kind]
        unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(self.prompt_template)
                          if m.group(1) and m.group(1) not in allowed})
        if unknown:
            raise ValueError(f"prompt_template uses {['{' + u + '}' for u in unknown]}; a {self.kind} template may use "
                             f"{['{' + a + '}' for a in allowed]} (write {{{{ and }}}} for literal braces)")
        return self

    def resolve_path(self, data_dir: Path | None = None) -> Path | None:
        if self.path is None:
            return None
        p = Path(self.path).expanduser()
        return p if p.is_absolute() else (data_dir or settings.data_dir()) / p

    def resolved_source(self, data_dir: Path | None = None) -> Literal["local", "hf"]:
        """`local` or `hf`, by the rule in the module docstring."""
        if self.source != "auto":
            return self.source
        local = self.resolve_path(data_dir)
        if local is not None and local.exists():
            return "local"
        if self.hf is not None:
            return "hf"
        raise FileNotFoundError(f"eval set {self.name!r}: {local} not found and no `hf` dataset to fall back on "
                                "(relative paths resolve against CPROX_DATA_DIR)")

    def load(self, limit: int | None = None, data_dir: Path | None = None,
             source: Literal["local", "hf"] | None = None) -> list[AnySample]:
        limit = limit if limit is not None else self.limit
        source = source or self.resolved_source(data_dir)
        if source == "local":
            if self.path is None:
                raise EvalRegistryError(f"eval set {self.name!r} has no local `path`")
            path = self.resolve_path(data_dir)
            if not path.exists():
                raise FileNotFoundError(f"eval set {self.name!r}: {path} not found "
                                        "(relative paths resolve against CPROX_DATA_DIR)")
            return read_samples(path, self.kind, self.name, limit)
        if self.hf is None:
            raise EvalRegistryError(f"eval set {self.name!r} has no `hf` dataset")
        h = self.hf
        return hf_samples(self.kind, h.path, h.name, h.split, eval_set=self.name, limit=limit, data_files=h.data_files,
                          revision=h.revision, streaming=h.streaming, fields=h.fields or None)

    def render(self, sample: Sample) -> str:
        """The text sent to the model: `prompt_template` filled from the sample."""
        def fill(m: re.Match) -> str:
            if m.group(1) is None:
                return m.group()[0]
            value = sample.prompt if m.group(1) == "prompt" else getattr(sample, m.group(1))
            return "" if value is None else str(value)

        return _PLACEHOLDER.sub(fill, self.prompt_template)

    def request(self, sample: Sample) -> GenerationRequest:
        return to_request(sample, self)


class EvalRegistry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    evals: dict[str, EvalDef] = Field(min_length=1)
    file: Path | None = Field(default=None, exclude=True)
    data_dir: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _names(self) -> "EvalRegistry":
        for name, ev in self.evals.items():
            if not EVAL_NAME.match(name):
                raise ValueError(f"eval set name {name!r} must match {EVAL_NAME.pattern} (it prefixes sample ids)")
            ev.name = name
        return self

    def names(self) -> list[str]:
        return list(self.evals)

    def get(self, name: str) -> EvalDef:
        if name not in self.evals:
            raise EvalRegistryError(f"unknown eval set {name!r}: {self.file} defines {sorted(self.evals)}; "
                                    "add it under `evals:` there")
        return self.evals[name]

    def load_samples(self, name: str, limit: int | None = None,
                     source: Literal["local", "hf"] | None = None) -> list[AnySample]:
        return self.get(name).load(limit, self.data_dir, source)


evals_file = settings.evals_file


def load_evals(path: Path | str | None = None, data_dir: Path | str | None = None) -> EvalRegistry:
    path = Path(path) if path else evals_file()
    registry = validated_yaml(path, EvalRegistry, EvalRegistryError, "eval registry; set CPROX_EVALS to your file")
    registry.file = path
    registry.data_dir = Path(data_dir) if data_dir else settings.data_dir()
    return registry


def load_samples(name: str, limit: int | None = None, *, registry: EvalRegistry | None = None,
                 source: Literal["local", "hf"] | None = None) -> list[AnySample]:
    """The samples of eval set `name` (first `limit` rows; default the registry's `limit`, else all)."""
    return (registry or load_evals()).load_samples(name, limit, source)


def to_request(sample: Sample, eval_def: EvalDef) -> GenerationRequest:
    """A generation request: the rendered prompt, and the metadata later stages group and grade by."""
    if sample.eval_set != eval_def.name:
        raise ValueError(f"sample {sample.id!r} belongs to eval set {sample.eval_set!r}, not {eval_def.name!r}")
    meta: dict[str, Any] = {k: v for k, v in sample.metadata.items() if k not in REQUEST_DROP}
    meta.update(kind=eval_def.kind, reference=sample.reference)
    return GenerationRequest(sample_id=sample.id, prompt=eval_def.render(sample), system_prompt=eval_def.system_prompt,
                             eval_set=eval_def.name, metadata=meta)


def sample_rows(name: str, registry: EvalRegistry | None = None) -> list[dict[str, Any]]:
    """One eval set's samples as rows of the results table `eval_samples` (with the prompt sent to models)."""
    registry = registry or load_evals()
    definition = registry.get(name)
    return [{"sample_id": s.id, "row_idx": i, "prompt": s.prompt, "reference": s.reference,
             "request_prompt": to_request(s, definition).prompt, "metadata": s.metadata}
            for i, s in enumerate(registry.load_samples(name))]


def store_samples(name: str, db, log: Callable[[str], None] = print) -> tuple[dict[str, Any], str]:
    """The `eval_samples` asset's work: one eval set's samples replace its rows of `eval_samples` in the results
    DuckDB `db`; returns the metadata (count per level or category, the first ids and prompts) and the content
    version of what models will see."""
    rows = sample_rows(name)
    n = db.replace_samples(name, rows)
    log(f"{name}: {n} samples into {db.path}")
    by = Counter(str(r["metadata"].get("level") or r["metadata"].get("category") or "all") for r in rows)
    return {"samples": n, "by_level_or_category": dict(sorted(by.items())), "results_db": str(db.path),
            "first_id": rows[0]["sample_id"] if rows else None,
            "preview": Markdown("\n".join(f"- `{r['sample_id']}`: {r['prompt'][:120]!r}" for r in rows[:5]))
            }, samples_version(rows)


def samples_consistent(db, name: str) -> tuple[bool, dict]:
    """The `eval_samples` partition's blocking check: it has rows, every prompt (and the prompt sent to models) has
    text, and the row indexes are 0..n-1 once each (a sample's place in the set, which `limit` and reports use)."""
    with db.connect() as con:
        n, empty, idx_distinct, idx_min, idx_max = con.execute(
            "SELECT count(*), count(*) FILTER (WHERE trim(prompt) = '' OR trim(request_prompt) = ''), "
            "count(DISTINCT row_idx), min(row_idx), max(row_idx) FROM eval_samples WHERE eval_set = ?",
            [name]).fetchone()
    figures = {"samples": n, "empty_prompts": empty, "distinct_row_idx": idx_distinct}
    return n > 0 and empty == 0 and idx_distinct == n and (idx_min, idx_max) == (0, n - 1), figures
