"""`cprox train` and `cprox memorization`: the memorization lab from the command line, in-process (runs are recorded
in DAGSTER_HOME like the UI's).

  cprox train [--run muon-s0 ...] [--no-sft]           tiny_models (+ tiny_sft_models) for each run of training.yaml
  cprox memorization [--model ID ...] [--split S ...] [--skip recall|extraction|membership ...]
      verbatim_recall and membership per model, extraction per model x split, then memorization_report; the default
      models are every model trained here; prints the comparison table
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

err = Console(stderr=True)


def _table(title: str) -> Table:
    table = Table(title=title)
    for col in ("asset", "partition", "ok", "figures", "seconds"):
        table.add_column(col, overflow="fold")
    return table


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def cmd_train(args) -> int:
    from cp_assets.cli.common import instance, materialize
    from cp_assets.lib.memorization.experiments import load_experiment

    inst, experiment = instance(), load_experiment()
    runs = args.run or experiment.runs()
    table, failed = _table("training"), False
    for run in runs:
        for asset in ["tiny_models"] + ([] if args.no_sft else ["tiny_sft_models"]):
            t0 = time.perf_counter()
            ok, md = materialize(inst, [asset], run, args.log_level)
            m = md.get(asset, {})
            failed |= not ok
            table.add_row(asset, run, "yes" if ok else "[red]NO[/red]",
                          f"{m.get('model_id')}: val loss {_fmt(m.get('final_val_loss'))}, "
                          f"{_fmt(m.get('tokens_per_s'), 0)} tokens/s" if ok else "see the run's logs",
                          f"{time.perf_counter() - t0:.1f}")
            if not ok:
                break  # no SFT without its base
    err.print(table)
    return 1 if failed else 0


def _trained_models() -> list[str]:
    from cp_assets.lib.evals.model_registry import load_models

    return [m for m, spec in load_models().models.items() if spec.backend == "tiny"]


def cmd_memorization(args) -> int:
    import dagster as dg

    from cp_assets.cli.common import add_models, instance, materialize
    from cp_assets.lib.memorization.experiments import load_experiment

    inst = instance()
    models = args.model or _trained_models()
    if not models:
        err.print("no models: train some first (`cprox train`) or name them with --model")
        return 2
    add_models(inst, models)
    experiment = load_experiment()
    splits = args.split or sorted({experiment.base.split, experiment.sft.split})
    skip = set(args.skip or [])
    table, failed = _table("memorization"), False
    steps = []
    for m in models:
        if "recall" not in skip:
            steps.append(("verbatim_recall", m, m))
        if "membership" not in skip:
            steps.append(("membership", m, m))
        if "extraction" not in skip:
            steps += [("extraction", f"{m} x {s}", dg.MultiPartitionKey({"model": m, "split": s})) for s in splits]
    for asset, label, key in steps:
        t0 = time.perf_counter()
        ok, md = materialize(inst, [asset], key, args.log_level)
        failed |= not ok
        m = md.get(asset, {})
        figures = {"verbatim_recall": lambda: f"exact {_fmt(m.get('exact_rate'))}, normalized "
                                              f"{_fmt(m.get('normalized_rate'))}",
                   "membership": lambda: f"{m.get('passages')} passages ({m.get('labels')} labels)",
                   "extraction": lambda: f"exact {_fmt(m.get('exact_rate'))} of {m.get('prompts')}"}[asset]
        table.add_row(asset, label, "yes" if ok else "[red]NO[/red]", figures() if ok else "see the run's logs",
                      f"{time.perf_counter() - t0:.1f}")
    t0 = time.perf_counter()
    ok, md = materialize(inst, ["memorization_report"], None, args.log_level)
    failed |= not ok
    table.add_row("memorization_report", "", "yes" if ok else "[red]NO[/red]",
                  f"{md.get('memorization_report', {}).get('rows', 0)} comparisons", f"{time.perf_counter() - t0:.1f}")
    err.print(table)
    if ok:
        _print_comparisons()
    return 1 if failed else 0


def _print_comparisons() -> None:
    from cp_assets.cli.reports import results_path
    from cp_assets.lib.reports import report_tables
    from cp_assets.lib.reports.results_db import ResultsDB

    with ResultsDB(results_path()).connect(read_only=True) as con:
        report_tables.ensure_readable(con, "memorization_comparisons")
        rows = con.execute("SELECT comparison, metric, coalesce(split, ''), mean_a, mean_b, diff, ci_low, ci_high, "
                           "matched, note FROM memorization_comparisons ORDER BY 1, 2, 3").fetchall()
    table = Table(title="memorization_comparisons (b - a, 95% bootstrap interval over seeds and items)")
    for col in ("comparison", "metric", "split", "a", "b", "b - a [95% CI]", "matched"):
        table.add_column(col, overflow="fold")
    for comp, metric, split, a, b, d, lo, hi, matched, note in rows:
        interval = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if d is not None else note
        table.add_row(comp, metric, split, _fmt(a), _fmt(b), interval, "" if matched is None else str(matched))
    Console().print(table)


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train the memorization lab's models (training.yaml) in-process")
    t.add_argument("--run", action="append", help="repeatable, e.g. muon-s0; default: every run of training.yaml")
    t.add_argument("--no-sft", action="store_true", help="base models only")
    t.add_argument("--log-level", default="WARNING")
    t.set_defaults(fn=cmd_train)
    m = sub.add_parser("memorization", help="verbatim recall, extraction, membership and the comparisons")
    m.add_argument("--model", action="append", help="repeatable; default: every model trained here")
    m.add_argument("--split", action="append", help="extraction splits (default: the training and SFT splits)")
    m.add_argument("--skip", action="append", choices=["recall", "extraction", "membership"])
    m.add_argument("--log-level", default="WARNING")
    m.set_defaults(fn=cmd_memorization)
