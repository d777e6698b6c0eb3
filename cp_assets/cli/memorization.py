"""`cprox train` and `cprox memorization`: the memorization lab from the command line, in-process (runs are recorded
in DAGSTER_HOME like the UI's).

  cprox train [--run muon-s0 ...] [--no-sft]           tiny_models (+ tiny_sft_models) for each run of training.yaml;
      with a `plant:` section, first reference_model, and canary_memorization after each base model; without --run
      (the whole lab) also lira_references first and lr_sweep last (when training.yaml has base.lr_sweep)
  cprox memorization [--model ID ...] [--split S ...] [--skip recall|extraction|membership ...]
      verbatim_recall and membership per model, extraction per model x split, then memorization_report; the default
      models are every model trained here; prints the comparison table
"""

from __future__ import annotations

from rich.console import Console

from cp_assets.cli.tables import show, yes_no

err = Console(stderr=True)
COLUMNS = ["asset", "partition", "ok", "figures", "seconds"]


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def cmd_train(args) -> int:
    from cp_assets.cli.common import instance, materialize
    from cp_assets.cli.progress import training_bars
    from cp_assets.lib.memorization.experiments import load_experiment

    inst, experiment = instance(), load_experiment()
    runs = args.run or experiment.runs()
    planted = experiment.plant is not None and not args.no_plant
    whole = not args.run  # the whole lab: also the LiRA references and the learning-rate sweep
    steps = ([("reference_model", None)] if planted else []) + ([("lira_references", None)] if whole else [])
    for run in runs:
        steps += [("tiny_models", run)] + ([("canary_memorization", run)] if planted else []) \
            + ([] if args.no_sft else [("tiny_sft_models", run)])
    if whole and experiment.base.lr_sweep:
        steps.append(("lr_sweep", None))
    table, failed, broken = [], False, set()
    for asset, run in steps:
        if run in broken:
            continue  # no SFT or planted scores without the run's base model
        with training_bars():  # one bar per training run: steps, tokens/s, loss, ETA
            res = materialize(inst, [asset], run, args.log_level)
        m = res.metadata.get(asset, {})
        failed |= not res.ok
        if not res.ok and asset == "tiny_models":
            broken.add(run)
        figures = (f"{m.get('greedy_extracted')} of {m.get('items')} planted items extracted greedily"
                   if asset == "canary_memorization" else f"{m.get('points')} points" if asset == "lr_sweep" else
                   f"val loss {_fmt(m.get('tiny-lira-a_val_loss'))} / {_fmt(m.get('tiny-lira-b_val_loss'))}"
                   if asset == "lira_references" else
                   f"{m.get('model_id')}: val loss {_fmt(m.get('final_val_loss'))}, "
                   f"{_fmt(m.get('tokens_per_s'), 0)} tokens/s")
        table.append([asset, run or "", yes_no(res.ok), figures if res.ok else "see the run's logs",
                      f"{res.seconds:.1f}"])
    show(COLUMNS, table, "training", stderr=True)
    return 1 if failed else 0


def _trained_models() -> list[str]:
    from cp_assets.lib.evals.model_registry import load_models

    from cp_assets.lib.memorization.experiments import lab_model

    return [m for m, spec in load_models().models.items() if spec.backend == "tiny" and lab_model(m)]


def _figures(asset: str, m: dict) -> str:
    if asset == "verbatim_recall":
        return f"exact {_fmt(m.get('exact_rate'))}, normalized {_fmt(m.get('normalized_rate'))}"
    if asset == "membership":
        return f"{m.get('passages')} passages ({m.get('labels')} labels)"
    return f"exact {_fmt(m.get('exact_rate'))} of {m.get('prompts')}"


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
    table, failed = [], False
    steps = []
    for m in models:
        if "recall" not in skip:
            steps.append(("verbatim_recall", m, m))
        if "membership" not in skip:
            steps.append(("membership", m, m))
        if "extraction" not in skip:
            steps += [("extraction", f"{m} x {s}", dg.MultiPartitionKey({"model": m, "split": s})) for s in splits]
    from cp_assets.cli.progress import Bar

    bar = Bar("memorization", len(steps), every=0)  # a line per model x step in a log file
    for n, (asset, label, key) in enumerate(steps):
        bar.update(n, f"{asset} {label}")
        res = materialize(inst, [asset], key, args.log_level)
        failed |= not res.ok
        table.append([asset, label, yes_no(res.ok), _figures(asset, res.metadata.get(asset, {})) if res.ok
                      else "see the run's logs", f"{res.seconds:.1f}"])
    bar.update(len(steps), "done")
    bar.close()
    sql = _lab_sql_reports()  # the SQL reports over the lab's tables (optimizer_memorization, base_vs_sft, ...)
    res = materialize(inst, ["memorization_report", *sql], None, args.log_level)
    failed |= not res.ok
    table.append(["memorization_report", "", yes_no(res.ok),
                  f"{res.metadata.get('memorization_report', {}).get('rows', 0)} comparisons", f"{res.seconds:.1f}"])
    table.append([", ".join(sql), "", yes_no(res.ok), ", ".join(
        f"{res.metadata.get(a, {}).get('rows', 0)} rows" for a in sql), ""])
    show(COLUMNS, table, "memorization", stderr=True)
    if res.ok:
        _print_comparisons()
    return 1 if failed else 0


LAB_ASSETS = {"tiny_models", "tiny_sft_models", "reference_model", "lira_references", "lr_sweep", "canary_memorization",
              "verbatim_recall",
              "extraction", "membership", "memorization_report"}


def _lab_sql_reports() -> list[str]:
    """The unpartitioned report assets (SQL models) that read a table of the memorization lab."""
    from cp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    return sorted(k.to_user_string() for k in graph.get_all_asset_keys()
                  if graph.get(k).group_name == "reports" and graph.get(k).partitions_def is None
                  and {p.to_user_string() for p in graph.get(k).parent_keys} & LAB_ASSETS)


def _print_comparisons() -> None:
    from cp_assets.cli.reports import results_path
    from cp_assets.lib.reports import report_tables
    from cp_assets.lib.reports.results_db import ResultsDB

    with ResultsDB(results_path()).connect(read_only=True) as con:
        report_tables.ensure_readable(con, "memorization_comparisons")
        rows = con.execute("SELECT comparison, metric, coalesce(split, ''), mean_a, mean_b, diff, ci_low, ci_high, "
                           "matched, note FROM memorization_comparisons ORDER BY 1, 2, 3").fetchall()
    show(["comparison", "metric", "split", "a", "b", "b - a [95% CI]", "matched"],
         [[comp, metric, split, _fmt(a), _fmt(b), f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if d is not None else note,
           "" if matched is None else str(matched)] for comp, metric, split, a, b, d, lo, hi, matched, note in rows],
         "memorization_comparisons (b - a, 95% bootstrap interval over seeds and items)")


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train the memorization lab's models (training.yaml) in-process")
    t.add_argument("--run", action="append", help="repeatable, e.g. muon-s0; default: every run of training.yaml")
    t.add_argument("--no-sft", action="store_true", help="base models only")
    t.add_argument("--no-plant", action="store_true",
                   help="skip the reference model and the planted-item scores (the runs still train on what "
                        "training.yaml plants)")
    t.add_argument("--log-level", default="WARNING")
    t.set_defaults(fn=cmd_train)
    m = sub.add_parser("memorization", help="verbatim recall, extraction, membership and the comparisons")
    m.add_argument("--model", action="append", help="repeatable; default: every model trained here")
    m.add_argument("--split", action="append", help="extraction splits (default: the training and SFT splits)")
    m.add_argument("--skip", action="append", choices=["recall", "extraction", "membership"])
    m.add_argument("--log-level", default="WARNING")
    m.set_defaults(fn=cmd_memorization)
