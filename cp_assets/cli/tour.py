"""`cprox tour`: what `make demo` made, where the UI is, and five commands to try, printed 80 columns wide.

  cprox tour [--width 80]

The last step of `make demo`. Plain text (no box drawing, no colour), so it reads the same in a terminal and in a log
file; the row counts come from the results DuckDB (read-only), and a table the demo did not make says so.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

UI_ADDRESS = "http://127.0.0.1:3000"


@dataclass(frozen=True)
class Step:
    command: str  # arguments after `cprox`
    shows: str


COMMANDS = [
    Step('trace "Shall I compare thee to a summer\'s day" --split pretrain',
         "Verbatim spans of the text in the pretrain split's exact 8-gram index: how often each span occurs and in "
         "which documents (Sonnet 18)."),
    Step('search "Janet\'s ducks lay 16 eggs per day" --split midtrain --k 3',
         "The three nearest chunks in pgvector (MiniLM embeddings, HNSW) to the first GSM8K test question: the "
         "midtrain split holds GSM8K train problems much like it."),
    Step('sql "SELECT eval_set, split, n_items, n_flagged, n_dirty FROM contamination_summary"',
         "Per eval set and split: how many questions the contamination checks flag (n-gram, substring or embedding "
         "evidence) and how many are Llama-2 'dirty'. Any report table can be queried (read-only); `SELECT *` "
         "prints one record per row when a table is wider than the terminal, `cprox sql \"SHOW TABLES\"` lists "
         "them."),
    Step('annotate "Natalia sold 48 clips in April." --tree all',
         "Each sentence placed in the cluster tree over every split: the named path from the root to its nearest "
         "leaf, and how far it sits."),
    Step('sql "SELECT * FROM optimizer_memorization"',
         "The memorization lab: per optimizer (AdamW, Muon), the validation loss and how much the tiny models "
         "recall verbatim, extract from their training data, and give away to a membership test."),
]

# what each capability of the demo left in the results DuckDB: (label, table)
MADE = [
    ("eval questions", "eval_samples"),
    ("model answers (rollouts)", "rollouts"),
    ("question-to-corpus distances", "eval_proximity"),
    ("contamination checks", "contamination"),
    ("verbatim spans in answers", "rollout_spans"),
    ("named clusters", "cluster_names"),
    ("tiny models trained", "training_runs"),
    ("verbatim-recall attempts", "verbatim_recall"),
    ("extraction attempts", "extraction"),
    ("membership scores", "membership_scores"),
    ("optimizer / SFT comparisons", "memorization_comparisons"),
]


def table_counts(path: Path) -> dict[str, int | None]:
    """Rows per table of MADE in the results DuckDB (None: no such table); {} when there is no file."""
    if not path.exists():
        return {}
    import duckdb

    from cp_assets.lib.reports.results_db import ResultsDB

    out: dict[str, int | None] = {}
    with ResultsDB(path, lock_timeout_s=30).connect(read_only=True) as con:
        for _, table in MADE:
            try:
                out[table] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except duckdb.CatalogException:
                out[table] = None
    return out


def tour_text(counts: dict[str, int | None], results: Path, cprox: str = ".venv/bin/cprox", width: int = 80) -> str:
    """The tour as plain text, no line longer than `width`."""
    def para(text: str, indent: str = "") -> list[str]:
        return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                             break_on_hyphens=False) or [""]

    rule = "-" * width
    lines = [rule, "corpus-proximity: a tour", rule, "", "What has been made (results DuckDB):"]
    if counts:
        pad = max(len(label) for label, _ in MADE)
        for label, table in MADE:
            n = counts.get(table)
            lines.append(f"  {label.ljust(pad)}  " + (f"{n:>7,}  {table}" if n is not None else f"{'-':>7}  "
                                                      f"{table} (not made yet)"))
    else:
        lines += para(f"nothing yet: no results database at {results}. Run `make demo` first.", "  ")
    lines += para(f"Files: {results}", "  ")
    lines += ["", "The Dagster UI:", f"  make ui    then open {UI_ADDRESS}"]
    lines += para("Assets grouped by domain (corpus, evals, reports, clusters, memorization), each with its "
                  "description, owners and partitions (split x shard, eval sets, models, training runs); every "
                  "materialization carries counts, rates, plots and tables. `make ui` reads the registries in the "
                  "repo root; `make ui SIZE=demo` keeps the demo's slice.", "  ")
    lines += ["", "Five commands to try (cprox is " + cprox + "):"]
    for n, step in enumerate(COMMANDS, 1):
        command = f"cprox {step.command}"
        lines.append("")
        lines += textwrap.wrap(command, width, initial_indent=f"{n}. ", subsequent_indent="     ",
                               break_on_hyphens=False, break_long_words=False)
        lines += para(step.shows, "   ")
    lines += [""] + para("More: README.md and docs/ (one page per domain); `cprox -h` lists every command.")
    lines.append(rule)
    return "\n".join(lines)


def cmd_tour(args) -> int:
    import os
    import sys

    from cp_assets.lib.core import settings

    path = settings.results_db()
    exe = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    try:
        cprox = os.path.relpath(exe) if exe and exe.name == "cprox" else "cprox"
    except ValueError:
        cprox = str(exe)
    print(tour_text(table_counts(path), path, cprox if len(cprox) < 40 else "cprox", args.width))
    return 0


def add_parsers(sub) -> None:
    t = sub.add_parser("tour", help="what the demo made, the UI address and five commands to try")
    t.add_argument("--width", type=int, default=80, help="line width (default 80)")
    t.set_defaults(fn=cmd_tour)
