"""How `cprox` prints a table so that it reads in an 80-column terminal and in a log file.

A table that fits the width (COLUMNS, else the terminal, else 80) prints as a rich box table on a terminal and as
plain aligned text (tabulate's `simple`, no box drawing, no wrapped cells) when the stream is a file or a pipe. A
table that does not fit prints one record per row, `column: value` per line (psql's expanded display), so no cell is
ever squeezed into a column a letter wide.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

Cell = str | Text | None
NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?%?$")


def plain(cell: Cell) -> str:
    return "" if cell is None else cell.plain if isinstance(cell, Text) else str(cell)


def yes_no(ok: bool) -> Text:
    """The `ok` cell of a run: "yes", or a red "NO"."""
    return Text("yes") if ok else Text("NO", style="red")


def width() -> int:
    return shutil.get_terminal_size((80, 24)).columns


def _numeric(values: list[str]) -> bool:
    filled = [v for v in values if v]
    return bool(filled) and all(NUMBER.match(v) for v in filled)


def show(columns: Sequence[str], rows: Sequence[Sequence[Cell]], title: str | None = None, *,
         stderr: bool = False, file: TextIO | None = None) -> str:
    """Print the table to stdout (or stderr, or `file`); the layout chosen: "box", "plain" or "records"."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    text = [[plain(c) for c in r] for r in rows]
    widths = [max([cell_len(line) for v in [col] + [r[i] for r in text] for line in (v.splitlines() or [""])])
              for i, col in enumerate(columns)]
    right = [_numeric([r[i] for r in text]) for i in range(len(columns))]
    terminal = stream.isatty()
    needed = sum(widths) + (3 * len(columns) + 1 if terminal else 2 * (len(columns) - 1))
    if not rows:
        layout = "plain"
        body = f"{', '.join(columns)}\n(0 rows)"
    elif needed <= width() and terminal:
        table = Table(title=title, title_justify="left")
        for col, r in zip(columns, right):
            table.add_column(col, justify="right" if r else "left", no_wrap=True)
        for row in rows:
            table.add_row(*(c if isinstance(c, Text) else Text(plain(c)) for c in row))
        Console(file=stream).print(table)
        return "box"
    elif needed <= width():
        layout = "plain"
        body = tabulate(text, headers=list(columns), tablefmt="simple", disable_numparse=True,
                        colalign=["right" if r else "left" for r in right])
    else:
        layout = "records"
        body = records(columns, text)
    print(f"{title}\n{body}" if title else body, file=stream, flush=True)
    return layout


def records(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """One block per row: a `-[ row N ]` rule, then `column: value` lines (continuation lines indented)."""
    pad = max(cell_len(c) for c in columns)
    out = []
    for n, row in enumerate(rows, 1):
        out.append(f"-[ row {n} ]" + "-" * max(0, min(width(), 40) - 10 - len(str(n))))
        for col, value in zip(columns, row):
            first, *rest = value.splitlines() or [""]
            out.append(f"{col.ljust(pad)} : {first}".rstrip())
            out += [f"{'':{pad}}   {line}".rstrip() for line in rest]
    return "\n".join(out)
