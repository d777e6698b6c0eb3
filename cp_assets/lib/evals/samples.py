"""Eval samples: GSM8K, MATH-500, Hendrycks MATH and verbatim-recall rows as typed objects with stable ids.

Every sample has `id` (`<eval_set>:<key>`: the 0-based row number of the file, or the recall file's `id` field, e.g.
`gsm8k:17`, `math500:3`, `math:42`, `recall:sonnet18`), `eval_set`, `prompt` (the question/problem/prefix, before any
template), `reference` (the gold answer or continuation; None where a MATH solution boxes nothing) and `metadata`.
Rows come from local JSONL(.gz) files or from the Hugging Face hub (`hf_samples`). Bad input raises
`cp_assets.lib.corpus.sources.BadRecord` naming file, line and field.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import (
    Any,
    ClassVar,
    Iterable,
    Iterator,
    Literal,
    Protocol,
    runtime_checkable,
)

from pydantic import BaseModel, ConfigDict

from cp_assets.lib.corpus.formats import BadRecord, jsonl_records

Kind = Literal["gsm8k", "math500", "math", "recall"]
KINDS: tuple[str, ...] = ("gsm8k", "math500", "math", "recall")


@runtime_checkable
class Sample(Protocol):
    """What every eval sample offers, whatever its eval set."""

    @property
    def id(self) -> str: ...
    @property
    def eval_set(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def reference(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------------------------- answer extraction

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?|-?\.\d+")
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def normalize_number(text: str) -> str | None:
    """'1,000' -> '1000', '$18.00' -> '18', '-3.50' -> '-3.5'; None when `text` holds no number."""
    cleaned = text.replace("$", "").replace(",", "").strip()
    match = re.search(r"-?\d*\.?\d+", cleaned)
    if not match:
        return None
    try:
        value = Decimal(match.group())
    except InvalidOperation:
        return None
    out = format(value.normalize(), "f") if value != value.to_integral() else str(value.to_integral())
    return "0" if out in ("-0", "") else out


def _boxed_at(text: str, start: int) -> tuple[str, int] | None:
    """Content and end of the `\\boxed{...}` (or `\\boxed 5`) whose command ends at `start`; None if unbalanced."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] != "{":  # `\boxed 5`: the argument runs to whitespace or `$`
        m = re.match(r"[^\s$]+", text[i:])
        return (m.group(), i + m.end()) if m else None
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2  # an escaped character (`\{`, `\}`) does not open or close a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j], j + 1
        j += 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last top-level `\\boxed{...}` / `\\fbox{...}` in `text`, braces balanced; None if none."""
    found, pos = None, 0
    while (m := _BOX.search(text, pos)) is not None:
        got = _boxed_at(text, m.end())
        if got is None:
            pos = m.end()
            continue
        found, pos = got[0].strip(), got[1]
    return found


# ---------------------------------------------------------------------------------------------- sample types

class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    eval_set: str
    locator: str = ""  # file:line (or hf:path/split#row) the sample was read from

    FIELDS: ClassVar[tuple[str, ...]] = ()


def _field(rec: dict, name: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if name not in rec or rec[name] is None:
        raise BadRecord(where, "missing_field", f"field {name!r} is missing")
    value = rec[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadRecord(where, "bad_field", f"field {name!r} is {type(value).__name__}, not "
                        f"{'/'.join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))}")
    return value


class GSM8KSample(_Base):
    """A GSM8K problem; `reference` is the number after the solution's final `#### `."""

    question: str
    answer: str  # the full worked solution, with <<a*b=c>> calculator annotations
    reference: str
    n_steps: int

    FIELDS: ClassVar[tuple[str, ...]] = ("question", "answer")

    @property
    def prompt(self) -> str:
        return self.question

    @property
    def reference_value(self) -> Decimal:
        return Decimal(self.reference)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps, "solution": self.answer}

    @classmethod
    def from_record(cls, rec: dict, key: str, eval_set: str, where: str) -> "GSM8KSample":
        question, answer = _field(rec, "question", where), _field(rec, "answer", where)
        if "####" not in answer:
            raise BadRecord(where, "bad_field", "field 'answer' has no final '#### <number>'")
        final = answer.rsplit("####", 1)[1].strip()
        reference = normalize_number(final)
        if reference is None or not re.fullmatch(r"\$?-?[\d,]*\.?\d+", final):
            raise BadRecord(where, "bad_field", f"field 'answer' ends with '#### {final}', not a number")
        return cls(id=f"{eval_set}:{key}", eval_set=eval_set, locator=where, question=question, answer=answer,
                   reference=reference, n_steps=len(re.findall(r"<<[^>]*>>", answer)))


class Math500Sample(_Base):
    """A MATH-500 problem (PRM800K split) with its gold `answer`, subject and level 1-5."""

    problem: str
    answer: str
    subject: str
    level: int
    unique_id: str
    solution: str

    FIELDS: ClassVar[tuple[str, ...]] = ("problem", "answer", "subject", "level", "unique_id", "solution")

    @property
    def prompt(self) -> str:
        return self.problem

    @property
    def reference(self) -> str:
        return self.answer

    @property
    def metadata(self) -> dict[str, Any]:
        return {"level": self.level, "subject": self.subject, "unique_id": self.unique_id, "solution": self.solution}

    @classmethod
    def from_record(cls, rec: dict, key: str, eval_set: str, where: str) -> "Math500Sample":
        level = _field(rec, "level", where, int)
        if not 1 <= level <= 5:
            raise BadRecord(where, "bad_field", f"field 'level' is {level}, not 1-5")
        return cls(id=f"{eval_set}:{key}", eval_set=eval_set, locator=where, level=level,
                   **{f: _field(rec, f, where) for f in cls.FIELDS if f != "level"})


def parse_level(value: Any, where: str) -> int | None:
    """'Level 3' or 3 -> 3; 'Level ?' -> None (a few Hendrycks MATH rows have no level); anything else is an error."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(?:Level\s*)?([1-5?])\s*", value)
        if m:
            return None if m.group(1) == "?" else int(m.group(1))
    raise BadRecord(where, "bad_field", f"field 'level' is {value!r}, not 'Level 1'..'Level 5' or 'Level ?'")


class MathSample(_Base):
    """A Hendrycks MATH test problem; `reference` is the last \\boxed{...} of the solution (None if it boxes nothing)."""

    problem: str
    level: int | None  # None for 'Level ?'
    subject: str  # the file's `type`
    solution: str
    reference: str | None

    FIELDS: ClassVar[tuple[str, ...]] = ("problem", "level", "type", "solution")

    @property
    def prompt(self) -> str:
        return self.problem

    @property
    def metadata(self) -> dict[str, Any]:
        return {"level": self.level, "subject": self.subject, "solution": self.solution}

    @classmethod
    def from_record(cls, rec: dict, key: str, eval_set: str, where: str) -> "MathSample":
        if "level" not in rec:
            raise BadRecord(where, "missing_field", "field 'level' is missing")
        solution = _field(rec, "solution", where)
        return cls(id=f"{eval_set}:{key}", eval_set=eval_set, locator=where, problem=_field(rec, "problem", where),
                   level=parse_level(rec["level"], where), subject=_field(rec, "type", where), solution=solution,
                   reference=last_boxed(solution))


class RecallSample(_Base):
    """A verbatim-recall item: the model sees `prefix` and should continue with `continuation`."""

    prefix: str
    continuation: str
    category: str
    title: str
    author: str
    source: str

    FIELDS: ClassVar[tuple[str, ...]] = ("id", "prefix", "continuation", "category", "title", "author", "source")

    @property
    def prompt(self) -> str:
        return self.prefix

    @property
    def reference(self) -> str:
        return self.continuation

    @property
    def metadata(self) -> dict[str, Any]:
        return {"category": self.category, "title": self.title, "author": self.author, "source": self.source}

    @classmethod
    def from_record(cls, rec: dict, key: str, eval_set: str, where: str) -> "RecallSample":
        key = str(_field(rec, "id", where, (str, int)))
        if not key.strip():
            raise BadRecord(where, "bad_field", "field 'id' is empty")
        return cls(id=f"{eval_set}:{key}", eval_set=eval_set, locator=where,
                   **{f: _field(rec, f, where) for f in cls.FIELDS if f != "id"})


SAMPLE_TYPES: dict[str, type[_Base]] = {
    "gsm8k": GSM8KSample, "math500": Math500Sample, "math": MathSample, "recall": RecallSample}
AnySample = GSM8KSample | Math500Sample | MathSample | RecallSample


# ---------------------------------------------------------------------------------------------- readers

def _sample_type(kind: str) -> type[_Base]:
    if kind not in SAMPLE_TYPES:
        raise ValueError(f"unknown eval kind {kind!r}; known kinds: {list(SAMPLE_TYPES)}")
    return SAMPLE_TYPES[kind]


def _build(records: Iterable[tuple[str, "dict | BadRecord"]], kind: str, eval_set: str | None, limit: int | None,
           rename: dict[str, str] | None = None) -> Iterator[AnySample]:
    cls, eval_set = _sample_type(kind), eval_set or kind
    seen: set[str] = set()
    for row, (where, rec) in enumerate(records):
        if limit is not None and row >= limit:
            return
        if isinstance(rec, BadRecord):
            raise rec
        if rename:
            rec = {**rec, **{ours: rec[theirs] for ours, theirs in rename.items() if theirs in rec}}
        sample = cls.from_record(rec, str(row), eval_set, where)
        if sample.id in seen:
            raise BadRecord(where, "duplicate_id", f"sample id {sample.id!r} occurs twice (field 'id')")
        seen.add(sample.id)
        yield sample


def read_samples(path: Path | str, kind: str, eval_set: str | None = None, limit: int | None = None) -> list[AnySample]:
    """Samples of a local JSONL(.gz) file; row numbers count non-blank lines from 0. `eval_set` defaults to `kind`."""
    _sample_type(kind)
    records = ((where, rec) for where, _, rec in jsonl_records(Path(path)))
    return list(_build(records, kind, eval_set, limit))


def hf_samples(kind: str, path: str, name: str | None = None, split: str = "test", *, eval_set: str | None = None,
               limit: int | None = None, data_files: str | list[str] | None = None, revision: str | None = None,
               streaming: bool = False, fields: dict[str, str] | None = None) -> list[AnySample]:
    """Samples of a Hugging Face dataset: `datasets.load_dataset(path, name, split=..., streaming=...)`.

    `fields` renames hub columns to ours ({our_name: hub_name}). Ids count rows of the split from 0, as for files;
    they match the local file's ids only where the hub split holds the same rows in the same order.
    """
    _sample_type(kind)
    import datasets  # heavy import, only for hub sources

    ds = datasets.load_dataset(path, name=name, split=split, data_files=data_files, revision=revision, streaming=streaming)
    if limit is not None and not streaming:
        ds = ds.select(range(min(limit, len(ds))))
    records = ((f"hf:{path}/{split}#{i}", dict(rec)) for i, rec in enumerate(ds))
    return list(_build(records, kind, eval_set, limit, rename=fields))
