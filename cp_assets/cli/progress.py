"""Progress of the long `cprox` commands (training, the memorization lab), readable on a terminal and in a log file.

`Bar` is a tqdm bar (at most 80 columns) when stderr is a terminal; in a file or a pipe it prints plain lines
instead (`desc: 120/480 steps (25%), 0:04 elapsed, ETA 0:12, ...`) at each quarter, or at every update with
`every=1`, so a log holds a few readable lines rather than carriage-return redraws.
`training_bars()` shows one bar per `train()` call of cp_assets.lib.tinygpt (base runs and SFT runs alike), fed by
the trainer's progress hook, around an in-process Dagster run.
"""

from __future__ import annotations

import shutil
import sys
import time
from contextlib import contextmanager
from typing import Iterator, TextIO

from tqdm import tqdm

WIDTH = 80


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Bar:
    """`total` units of work; `update(done, note)` says how many are done and what to show beside them."""

    def __init__(self, desc: str, total: int, unit: str = "step", *, every: float = 0.25,
                 stream: TextIO | None = None):
        self.desc, self.total, self.unit, self.every = desc, max(int(total), 1), unit, every
        self.stream = stream or sys.stderr
        self.done, self.t0, self._printed = 0, time.perf_counter(), -1.0
        self.tty = self.stream.isatty()
        self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, leave=True,
                         ncols=min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns), mininterval=0.5,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                    "[{elapsed}<{remaining}{postfix}]") if self.tty else None

    def update(self, done: int, note: str = "") -> None:
        done = min(int(done), self.total)
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(done - self._bar.n)
        elif done > self.done or done == 0:
            frac = done / self.total
            if done == self.total or frac - self._printed >= self.every - 1e-9 or self._printed < 0:
                self._printed = frac
                self._line(done, note)
        self.done = done

    def _line(self, done: int, note: str) -> None:
        elapsed = time.perf_counter() - self.t0
        eta = f", ETA {clock(elapsed / done * (self.total - done))}" if 0 < done < self.total else ""
        unit = self.unit + ("s" if self.total != 1 else "")
        print(f"{self.desc}: {done}/{self.total} {unit} ({done / self.total:.0%}), {clock(elapsed)} elapsed{eta}"
              + (f", {note}" if note else ""), file=self.stream, flush=True)

    def write(self, text: str) -> None:
        """A line that does not break the bar."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


@contextmanager
def training_bars(stream: TextIO | None = None) -> Iterator[None]:
    """A `Bar` per tiny-GPT training run while the block runs (steps, tokens/s, loss, ETA)."""
    from cp_assets.lib.tinygpt.progress import Progress, on_progress

    current: dict[str, Bar] = {}

    def show(p: Progress) -> None:
        bar = current.get(p.tag)
        if bar is None or p.step == 0:
            for old in current.values():
                old.close()
            current.clear()
            bar = current[p.tag] = Bar(p.tag.strip("[]"), p.total_steps, stream=stream)
        note = f"{p.tokens_per_s:,.0f} tok/s, loss {p.loss:.3f}" if p.loss is not None else \
            f"val {p.val_loss:.3f}" if p.val_loss is not None else ""
        bar.update(p.step, note)

    with on_progress(show):
        try:
            yield
        finally:
            for bar in current.values():
                bar.close()
