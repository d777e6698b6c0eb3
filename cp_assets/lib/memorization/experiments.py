"""The training experiments of the memorization lab (`training.yaml`): which models are trained here, on what.

A run is one optimizer x seed (`adamw-s0`, `muon-s2`, ...): the partition key of `tiny_models` (base) and
`tiny_sft_models` (the base fine-tuned on the SFT split). This module picks the documents (members, held-out,
SFT), names the models (`tiny-<run>`, `tiny-<run>-sft`) and registers trained checkpoints in
`CPROX_HOME/trained_models.yaml`, which `load_models()` merges into the models registry.

Members are chosen by a seeded hash of the document id, never by the run's seed, so every optimizer and seed trains
on exactly the same documents; the run's seed changes initialization and batch order only.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cp_assets.lib.core import settings
from cp_assets.lib.corpus.registry import validated_yaml
from cp_assets.lib.memorization.planting import PlantSpec

MEMBER_SALT = "cprox-members-v1"


class ExperimentError(ValueError):
    """training.yaml is missing or malformed, or names a run that is not in it."""


class BaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    split: str = "pretrain"
    size: Literal["cpu", "gpu", "test"] = "cpu"
    optimizers: list[Literal["adamw", "muon"]] = ["adamw", "muon"]
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    member_chars: int = Field(default=1_200_000, gt=0)
    epochs: float = Field(default=4.0, gt=0)
    heldout_documents: int = Field(default=150, gt=1)
    # the BPE tokenizer is trained on documents that are neither members nor held out (the next ones in hash order),
    # up to these characters; a split with less than half of min(tokenizer_chars, member characters) left falls
    # back to the members and says so (a leak: membership scores then see a vocabulary fitted to the members)
    tokenizer_chars: int = Field(default=400_000, ge=0)  # 0: the members (leaks; only to reproduce old runs)
    include_recall_documents: bool = True
    target_val_loss: float | None = Field(default=None, gt=0)
    # the learning-rate sweep (`lr_sweep` asset): multiples of each optimizer's learning rates trained at the first
    # seed with the same token budget; 1.0 is the experiment's own run (empty: no sweep)
    lr_sweep: list[float] = Field(default=[], max_length=8)


class SftSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    split: str = "sft"
    epochs: float = Field(default=2.0, gt=0)
    max_chars: int = Field(default=800_000, gt=0)


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base: BaseSpec = BaseSpec()
    sft: SftSpec = SftSpec()
    plant: PlantSpec | None = None  # planted canaries, facts and eval items (None: nothing planted)

    def runs(self) -> list[str]:
        return [run_id(o, s) for o in self.base.optimizers for s in self.base.seeds]


training_file = settings.training_file


def load_experiment(path: Path | None = None) -> Experiment:
    return validated_yaml(Path(path) if path else training_file(), Experiment, ExperimentError,
                          "training experiments; set CPROX_TRAINING to your file")


def run_id(optimizer: str, seed: int) -> str:
    return f"{optimizer}-s{seed}"


def parse_run(run: str) -> tuple[str, int]:
    optimizer, _, seed = run.rpartition("-s")
    if optimizer not in ("adamw", "muon") or not seed.isdigit():
        raise ExperimentError(f"run {run!r}: expected <adamw|muon>-s<seed>, e.g. muon-s0")
    return optimizer, int(seed)


def base_model_id(run: str) -> str:
    return f"tiny-{run}"


def sft_model_id(run: str) -> str:
    return f"tiny-{run}-sft"


def run_dir(run: str, stage: Literal["base", "sft"]) -> Path:
    return settings.home() / "tiny" / stage / run


def reference_dir() -> Path:
    """The reference model: trained like the runs' base models on the members, with nothing planted."""
    return settings.home() / "tiny" / "reference"


REFERENCE_MODEL = "tiny-reference"


LIRA_PREFIX = "tiny-lira-"  # the LiRA references: calibration models, left out of `--trained` model lists


def lab_model(model_id: str) -> bool:
    """A model trained here that the lab evaluates (rollouts, recall, membership): not a LiRA reference."""
    return not model_id.startswith(LIRA_PREFIX)


def lira_dir() -> Path:
    """The LiRA reference models (`lira_references`): `a/`, `b/` and `halves.json`."""
    return settings.home() / "tiny" / "lira"


def sweep_dir(optimizer: str, lr_scale: float, seed: int) -> Path:
    return settings.home() / "tiny" / "sweep" / f"{optimizer}-lr{lr_scale:g}-s{seed}"


def tokenizer_path() -> Path:
    return settings.home() / "tiny" / "tokenizer.json"


def _rank(doc_id: str) -> str:
    return hashlib.sha256(f"{MEMBER_SALT}:{doc_id}".encode()).hexdigest()


@dataclass(frozen=True)
class DocSplit:
    members: list[tuple[str, str]]  # (doc_id, text)
    heldout: list[tuple[str, str]]
    recall_documents: list[str]  # quoted documents: only excerpts around the quotes are members
    tokenizer_docs: list[tuple[str, str]] = ()  # disjoint from members and held out; empty: none were left

    def tokenizer_texts(self) -> tuple[list[str], str]:
        """The texts the tokenizer trains on and where they come from ('disjoint' or 'members', the fallback)."""
        if self.tokenizer_docs:
            return [t for _, t in self.tokenizer_docs], "disjoint"
        return [t for _, t in self.members], "members"

    def member_ids(self) -> list[str]:
        return [d for d, _ in self.members]

    def whole_member_ids(self) -> list[str]:
        """Members trained whole (the pool of the membership and extraction tests)."""
        forced = set(self.recall_documents)
        return [d for d, _ in self.members if d not in forced]


def excerpt(text: str, quotes: Sequence[str], context_chars: int) -> str:
    """The parts of `text` within `context_chars` of an occurrence of any quote, in order, joined by blank lines."""
    spans = []
    for q in quotes:
        start = text.find(q)
        while start >= 0:
            spans.append((max(0, start - context_chars), min(len(text), start + len(q) + context_chars)))
            start = text.find(q, start + 1)
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return "\n\n".join(text[a:b] for a, b in merged)


def choose_members(docs: Iterable[tuple[str, str]], *, member_chars: int, heldout_documents: int,
                   quotes: Sequence[str] = (), context_chars: int = 1500, tokenizer_chars: int = 0) -> DocSplit:
    """Members: the passages the verbatim-recall set quotes (each with `context_chars` around it, so a whole play is
    not trained for one quote), then whole documents in seeded-hash order until `member_chars`; held out: the next
    `heldout_documents` whole documents in that order. Deterministic for a document set.

    A quoted document is trained only in part: its id is listed in `recall_documents`, and the membership and
    extraction tests leave it out of their member pool (its other passages are not members)."""
    ordered = sorted(docs, key=lambda d: _rank(d[0]))
    forced = []
    for doc_id, text in ordered:
        hit = [q for q in quotes if q in text]
        if hit:
            forced.append((doc_id, excerpt(text, hit, context_chars)))
    forced_ids = {d for d, _ in forced}
    members, heldout, chars = list(forced), [], sum(len(t) for _, t in forced)
    tokenizer_docs, tok_chars = [], 0
    for doc in ordered:
        if doc[0] in forced_ids:
            continue
        if chars < member_chars:
            members.append(doc)
            chars += len(doc[1])
        elif len(heldout) < heldout_documents:
            heldout.append(doc)
        elif tok_chars < tokenizer_chars:
            tokenizer_docs.append(doc)
            tok_chars += len(doc[1])
        else:
            break
    if len(heldout) < 2:
        raise ExperimentError(f"only {len(heldout)} documents are left to hold out after {len(members)} members "
                              f"({chars:,} chars): lower member_chars or use a larger split")
    if tok_chars < 0.5 * min(tokenizer_chars, chars):  # too little text left to fit a vocabulary on: fall back
        tokenizer_docs = []
    return DocSplit(members, heldout, sorted(forced_ids), tokenizer_docs)


def sft_documents(docs: Iterable[tuple[str, str]], max_chars: int) -> list[tuple[str, str]]:
    out, chars = [], 0
    for doc in sorted(docs, key=lambda d: _rank(d[0])):
        if chars >= max_chars:
            break
        out.append(doc)
        chars += len(doc[1])
    return out


def register(model_id: str, path: Path, description: str) -> Path:
    """Add or replace `model_id` (backend tiny) in the trained-models registry, under a file lock, atomically."""
    from cp_assets.lib.evals.model_registry import trained_models_file

    target = trained_models_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = yaml.safe_load(target.read_text()) if target.exists() else None
        models = (current or {}).get("models") or {}
        models[model_id] = {"backend": "tiny", "path": str(path), "description": description,
                            "chat_template": False, "batch_size": 16, "truncate_prompt": "left"}
        tmp = target.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text("# Written by the tiny_models / tiny_sft_models assets; merged into models.yaml.\n"
                       + yaml.safe_dump({"models": dict(sorted(models.items()))}, sort_keys=False))
        os.replace(tmp, target)
    return target
