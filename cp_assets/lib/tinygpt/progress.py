"""Progress of the tiny-GPT trainer, for displays: `on_progress(callback)` calls `callback(Progress)` before the first
step and after every step of every `train()` in this process while the block runs. The CLI drives a progress bar
with it around an in-process Dagster run (`cprox train`), without passing anything through the asset code."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass(frozen=True)
class Progress:
    """Where a `train()` call stands after a step."""

    tag: str  # "[muon seed 0]", "[adamw seed 1 sft]"
    step: int
    total_steps: int
    tokens: int
    loss: float | None  # None before the first step
    val_loss: float | None  # at evaluation steps
    tokens_per_s: float  # training steps only (evaluation and checkpoint writes excluded)


_listeners: list[Callable[[Progress], None]] = []


@contextmanager
def on_progress(callback: Callable[[Progress], None]) -> Iterator[Callable[[Progress], None]]:
    _listeners.append(callback)
    try:
        yield callback
    finally:
        _listeners.remove(callback)


def report(progress: Progress) -> None:
    for callback in list(_listeners):
        callback(progress)
