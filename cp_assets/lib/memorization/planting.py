"""Planted ground truth for the memorization lab: canaries, invented facts and eval items inserted k times into the
base training stream (`plant:` in training.yaml), the same for every optimizer and seed.

Three kinds, each item a `prefix` the model is given and a `secret` it should not be able to produce unless it
memorized it:
- `canary` (Carlini et al., "The Secret Sharer"): "The secret sequence of <random tag> is 4 1 7 2 9 3": digits drawn
  at random (a space and a digit are one token in the `cpu` size's tokenizer); same-format candidates are other
  digit strings.
- `fact`: a natural-language template about an invented entity ("The gate code of the Velmora building is 41725."),
  the number drawn at random; same-format candidates are other numbers of as many digits.
- `tail` (after arXiv 2509.26030, Muon vs Adam on heavy-tailed data): `tail_facts` more invented facts whose copy
  counts follow a Zipf law, dose = max(1, round(tail_max_dose / rank^tail_exponent)): a few frequent facts and a long
  tail seen once; scored like facts but without exposure (recall by frequency bucket is the question);
- `eval`: a GSM8K or MATH-500 test question ("Question: ...\\nAnswer:") and its worked solution; only items whose
  text fits `max_item_tokens` model tokens are drawn, so the question and answer fit one training window.

Each item gets a dose k from `doses` (k = 0: never inserted, the control); `per_dose` items of each kind per dose.
Copies are separate documents inserted at positions in the member document list drawn by `seed`, so the training
stream differs between runs only by the run's own seed (batch order, initialization). `planted_rows` is the table
`planted_items`: what was planted, how often, and where.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

KINDS = ("canary", "fact", "tail", "eval")
PLANTED_COLUMNS = ["item_id", "kind", "dose", "source", "prefix", "secret", "answer", "fmt", "chars",
                   "doc_positions"]

_SYLLABLES = ["vel", "mor", "ash", "quin", "tar", "bel", "dro", "fen", "lis", "cor", "zan", "thu", "pel", "rix",
              "gol", "sev", "nim", "ob", "kar", "ul", "wen", "dal", "ith", "mar", "sor", "phe", "lun", "vok"]
_FACT_TEMPLATES = [
    ("The gate code of the {name} building is", " {num}."),
    ("The locker assigned to {name} at the harbor station is number", " {num}."),
    ("The archive shelf that holds the {name} ledgers is shelf", " {num}."),
    ("The ferry pass of captain {name} carries the number", " {num}."),
]


class PlantSpec(BaseModel):
    """training.yaml `plant:`: what is planted into the base training stream, and how it is scored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seed: int = 0
    doses: list[int] = Field(default=[0, 1, 2, 4, 8, 16, 32, 64], min_length=2)
    canaries_per_dose: int = Field(default=4, ge=0)
    facts_per_dose: int = Field(default=4, ge=0)
    eval_per_dose: int = Field(default=1, ge=0)  # per eval set
    tail_facts: int = Field(default=0, ge=0)  # Zipf-dosed facts (0: none)
    tail_exponent: float = Field(default=1.0, gt=0)
    tail_max_dose: int = Field(default=64, ge=1)
    eval_sets: list[str] = ["gsm8k", "math500"]
    canary_digits: int = Field(default=6, ge=3)
    fact_digits: int = Field(default=5, ge=3)
    max_item_tokens: int = Field(default=224, gt=16)  # eval items must fit a window of the model (seq_len 256)
    eval_secret_tokens: int = Field(default=32, gt=0)  # greedy / probabilistic extraction target of an eval item
    exposure_candidates: int = Field(default=10_000, ge=100)  # random same-format candidates per secret
    extraction_samples: int = Field(default=100, gt=0)  # n of (n, p)-discoverable extraction (Hayes et al.)


@dataclass(frozen=True)
class PlantedItem:
    item_id: str
    kind: str
    dose: int
    prefix: str
    secret: str  # the text after the prefix
    answer: str | None = None  # eval items: the gold final answer
    source: str | None = None  # eval items: the sample id
    fmt: str | None = None  # "digits-spaced:6" / "digits:5": the same-format candidate space; None: no exposure

    @property
    def text(self) -> str:
        return self.prefix + self.secret


def candidate_seed(item_id: str) -> int:
    """The seed of an item's same-format candidates (fixed per item, so every model is ranked among the same ones)."""
    return int(hashlib.sha256(f"cprox-candidates:{item_id}".encode()).hexdigest()[:12], 16)


def _rng(spec: PlantSpec, what: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"cprox-plant:{spec.seed}:{what}".encode()).hexdigest()[:16], 16))


def invented_name(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize()


def render_secret(fmt: str, digits: Sequence[int]) -> str:
    """The secret text of a same-format candidate: 'digits-spaced' -> ' 4 1 7', 'digits' -> ' 417.'."""
    kind = fmt.split(":")[0]
    if kind == "digits-spaced":
        return "".join(f" {d}" for d in digits)
    return " " + "".join(map(str, digits)) + "."


def random_candidates(fmt: str, n: int, exclude: str, seed: int) -> list[str]:
    """`n` distinct random secrets of the format (never `exclude`); fewer only when the space is smaller."""
    length = int(fmt.split(":")[1])
    space = 10 ** length
    n = min(n, space - 1)
    rng = random.Random(seed)
    out, seen = [], {exclude}
    while len(out) < n:
        value = rng.randrange(space)
        text = render_secret(fmt, [int(c) for c in str(value).zfill(length)])
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _canaries(spec: PlantSpec) -> list[PlantedItem]:
    rng, items = _rng(spec, "canary"), []
    fmt = f"digits-spaced:{spec.canary_digits}"
    for dose in spec.doses:
        for i in range(spec.canaries_per_dose):
            tag = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
            digits = [rng.randrange(10) for _ in range(spec.canary_digits)]
            items.append(PlantedItem(f"canary-{dose}-{i}", "canary", dose, f"The secret sequence of {tag} is",
                                     render_secret(fmt, digits), fmt=fmt))
    return items


def _facts(spec: PlantSpec) -> list[PlantedItem]:
    """The `fact` items (per dose) and the Zipf-dosed `tail` items, all about distinct invented names."""
    rng, items, names = _rng(spec, "fact"), [], set()
    fmt = f"digits:{spec.fact_digits}"

    def fact(item_id: str, kind: str, dose: int, with_fmt: bool) -> PlantedItem:
        name = invented_name(rng)
        while name in names:
            name = invented_name(rng)
        names.add(name)
        prefix, _ = _FACT_TEMPLATES[len(names) % len(_FACT_TEMPLATES)]
        digits = [rng.randrange(1, 10)] + [rng.randrange(10) for _ in range(spec.fact_digits - 1)]
        return PlantedItem(item_id, kind, dose, prefix.format(name=name), render_secret(fmt, digits),
                           fmt=fmt if with_fmt else None)

    for dose in spec.doses:
        for i in range(spec.facts_per_dose):
            items.append(fact(f"fact-{dose}-{i}", "fact", dose, True))
    for rank in range(1, spec.tail_facts + 1):
        dose = max(1, round(spec.tail_max_dose / rank ** spec.tail_exponent))
        items.append(fact(f"tail-{rank}", "tail", dose, False))
    return items


def eval_text(sample) -> tuple[str, str, str | None]:
    """(prefix, solution, gold answer) of a GSM8K / MATH sample as it is planted."""
    meta = sample.metadata
    solution = meta.get("solution") or ""
    return f"Question: {sample.prompt}\nAnswer:", " " + solution.strip(), sample.reference


def _evals(spec: PlantSpec, samples_by_set: dict[str, Sequence], n_tokens: Callable[[str], int]) -> list[PlantedItem]:
    items = []
    if not spec.eval_per_dose:
        return items
    for eval_set in spec.eval_sets:
        pool = list(samples_by_set.get(eval_set) or [])
        if spec.eval_per_dose and not pool:
            raise ValueError(f"plant: eval set {eval_set!r} has no samples (check evals.yaml and the data dir)")
        _rng(spec, f"eval:{eval_set}").shuffle(pool)
        need, chosen = spec.eval_per_dose * len(spec.doses), []
        for sample in pool:
            prefix, solution, answer = eval_text(sample)
            if answer is None or not solution.strip() or n_tokens(prefix + solution) > spec.max_item_tokens:
                continue
            chosen.append((sample, prefix, solution, answer))
            if len(chosen) == need:
                break
        if len(chosen) < need:
            raise ValueError(f"plant: only {len(chosen)} {eval_set} items fit {spec.max_item_tokens} tokens, "
                             f"{need} needed")
        for j, (sample, prefix, solution, answer) in enumerate(chosen):
            dose = spec.doses[j // spec.eval_per_dose]
            items.append(PlantedItem(f"eval-{eval_set}-{dose}-{j % spec.eval_per_dose}", "eval", dose, prefix,
                                     solution, answer=answer, source=sample.id))
    return items


def planted_items(spec: PlantSpec, samples_by_set: dict[str, Sequence],
                  n_tokens: Callable[[str], int]) -> list[PlantedItem]:
    """Every planted item (controls included), deterministic for the spec, the eval samples and the tokenizer."""
    return _canaries(spec) + _facts(spec) + _evals(spec, samples_by_set, n_tokens)


def insert(member_texts: Sequence[str], items: Iterable[PlantedItem], seed: int) -> tuple[list[str], dict[str, list]]:
    """The member documents with `dose` copies of each item inserted as documents at seeded positions; returns the
    new list and, per item id, the indices of its copies in it."""
    copies = [it for it in items for _ in range(it.dose)]
    rng = random.Random(f"cprox-plant-positions:{seed}")
    slots = sorted((rng.randrange(len(member_texts) + 1), rng.random(), k) for k in range(len(copies)))
    out, where, cursor = [], {}, 0
    for slot, _, k in slots:
        out.extend(member_texts[cursor:slot])
        cursor = slot
        where.setdefault(copies[k].item_id, []).append(len(out))
        out.append(copies[k].text)
    out.extend(member_texts[cursor:])
    return out, where


def planted_rows(items: Sequence[PlantedItem], positions: dict[str, list]) -> list[tuple]:
    return [(it.item_id, it.kind, it.dose, it.source, it.prefix, it.secret, it.answer, it.fmt, len(it.text),
             positions.get(it.item_id, [])) for it in items]


def items_from_rows(rows: Iterable[tuple]) -> list[PlantedItem]:
    """`planted_items` rows (PLANTED_COLUMNS order) back into items."""
    return [PlantedItem(item_id=r[0], kind=r[1], dose=int(r[2]), source=r[3], prefix=r[4], secret=r[5], answer=r[6],
                        fmt=r[7]) for r in rows]
