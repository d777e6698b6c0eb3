"""The memorization lab's two comparisons, from the results DuckDB:

- **Muon vs AdamW** (base models trained here, every seed): verbatim-recall exact / normalized rate, character
  similarity and matching words; extraction exact rate and similarity on the base split; membership AUROC. Only
  meaningful at matched validation loss: `matched` says whether every run's final validation loss lies within 5% of
  the highest (`compare_runs.matched_checkpoints`), and the note gives the losses.
- **base vs SFT** (each run's base model and its SFT model): the cosine distance of their rollouts (whole answers)
  to each split, recall, extraction per split, membership AUROC.

Each metric is a `compare_runs.compare` of per-item values (paired on the items every run has, else unpaired), so
every difference comes with a two-level bootstrap interval over seeds and items, and Welch's t-test on the per-run
means (with 3 seeds a group the bootstrap interval is too narrow for continuous metrics: trust a difference only when
Welch's interval excludes 0 too; see compare_runs). Membership AUROC has one value per run, so its interval comes
from resampling runs only. Rows for table `memorization_comparisons`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

from cp_assets.lib.memorization import compare_runs
from cp_assets.lib.reports import report_tables

COLUMNS = ["comparison", "metric", "split", "group_a", "group_b", "n_runs_a", "n_runs_b", "n_items", "mean_a",
           "mean_b", "diff", "ci_low", "ci_high", "welch_p", "welch_ci_low", "welch_ci_high", "matched", "note"]
AUROC_SCORE = "min_k_20"  # the membership score compared across models (every score is in membership_auroc)
TOLERANCE = 0.05


def _per_item(con, sql: str, params: list) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for model_id, item, value in con.execute(sql, params).fetchall():
        if value is not None:
            out[model_id][item] = float(value)
    return out


def metric_tables(con, models: list[str]) -> dict[tuple[str, str | None], dict]:
    """(metric, split) -> {model_id: {item: value}} for the given models."""
    report_tables.ensure_readable(con, "verbatim_recall", "extraction", "membership_auroc", "rollout_proximity")
    ph = ", ".join("?" * len(models))
    out: dict[tuple[str, str | None], dict] = {}
    for metric, col in (("recall_exact", "exact::INT"), ("recall_normalized", "normalized::INT"),
                        ("recall_char_similarity", "char_similarity"), ("recall_prefix_words", "prefix_words")):
        out[(metric, None)] = _per_item(con, f"SELECT model_id, sample_id, {col} FROM verbatim_recall "
                                             f"WHERE model_id IN ({ph})", models)
    splits = [s for (s,) in con.execute(f"SELECT DISTINCT split FROM extraction WHERE model_id IN ({ph}) ORDER BY 1",
                                        models).fetchall()]
    for split in splits:
        for metric, col in (("extraction_exact", "exact::INT"), ("extraction_char_similarity", "char_similarity")):
            out[(metric, split)] = _per_item(con, f"SELECT model_id, text_id, {col} FROM extraction WHERE split = ? "
                                                  f"AND model_id IN ({ph})", [split, *models])
    out[(f"membership_auroc_{AUROC_SCORE}", None)] = _per_item(
        con, f"SELECT model_id, 'auroc', auroc FROM membership_auroc WHERE score = ? AND model_id IN ({ph})",
        [AUROC_SCORE, *models])
    for (split,) in con.execute(f"SELECT DISTINCT split FROM rollout_proximity WHERE model_id IN ({ph}) ORDER BY 1",
                                models).fetchall():
        out[("answer_cosine", split)] = _per_item(
            con, f"SELECT model_id, coalesce(eval_set, '') || '/' || sample_id || '/' || params_hash, cosine "
                 f"FROM rollout_proximity WHERE unit = 'answer' AND split = ? AND model_id IN ({ph})",
            [split, *models])
    return out


def _compare(rows: list, comps: dict, comparison: str, metric: str, split: str | None, values: dict, a: list[str],
             b: list[str], labels: tuple[str, str], matched: bool | None, note: str) -> None:
    missing = [m for m in a + b if not values.get(m)]
    if missing:
        rows.append((comparison, metric, split, labels[0], labels[1], len(a), len(b), 0, None, None, None, None, None,
                     None, None, None, matched, f"not computed: no values for {', '.join(missing)}"))
        return
    ga, gb = {m: values[m] for m in a}, {m: values[m] for m in b}
    common = set.intersection(*(set(v) for v in list(ga.values()) + list(gb.values())))
    c = compare_runs.compare(ga, gb, paired_items=bool(common), label_a=labels[0], label_b=labels[1])
    comps[metric + (f" ({split})" if split else "")] = c
    rows.append((comparison, metric, split, labels[0], labels[1], c.n_runs_a, c.n_runs_b, c.n_items_a, c.mean_a,
                 c.mean_b, c.diff, c.ci_low, c.ci_high, _finite(c.welch_p), _finite(c.welch_ci_low),
                 _finite(c.welch_ci_high), matched,
                 note + ("" if c.paired else " (unpaired items)")))


def optimizer_rows(con, base_split: str, log: Callable[[str], None] = print) -> tuple[list[tuple], dict, dict]:
    """Muon vs AdamW over the base models that trained successfully: rows, figures, {metric: Comparison}."""
    report_tables.ensure_readable(con, "training_runs")
    runs = con.execute("SELECT model_id, optimizer, final_val_loss FROM training_runs WHERE stage = 'base' AND "
                       "status = 'ok' ORDER BY model_id").fetchall()
    adamw = [m for m, o, _ in runs if o == "adamw"]
    muon = [m for m, o, _ in runs if o == "muon"]
    if not adamw or not muon:
        return [], {"note": f"needs base runs of both optimizers (adamw: {len(adamw)}, muon: {len(muon)})"}, {}
    losses = {m: loss for m, _, loss in runs}
    match = compare_runs.matched_checkpoints({m: [(0, loss)] for m, loss in losses.items()}, tolerance=TOLERANCE)
    note = (f"final val losses {', '.join(f'{m} {v:.3f}' for m, v in losses.items())}; "
            f"{'within' if match.within_tolerance else 'NOT within'} {TOLERANCE:.0%} of {match.target_loss:.3f}")
    log(note)
    rows: list[tuple] = []
    comps: dict = {}
    for (metric, split), values in metric_tables(con, adamw + muon).items():
        if metric == "answer_cosine" or (split is not None and split != base_split):
            continue
        _compare(rows, comps, "muon_vs_adamw", metric, split, values, adamw, muon, ("adamw", "muon"),
                 match.within_tolerance, note)
    return rows, {"adamw_runs": len(adamw), "muon_runs": len(muon), "matched": match.within_tolerance,
                  "target_val_loss": match.target_loss, "note": note}, comps


def sft_rows(con, log: Callable[[str], None] = print) -> tuple[list[tuple], dict, dict]:
    """Base vs SFT over the runs that have both: rows, figures, {metric: Comparison}."""
    report_tables.ensure_readable(con, "training_runs")
    ok = {(r, s): m for m, r, s in con.execute("SELECT model_id, run, stage FROM training_runs "
                                               "WHERE status = 'ok'").fetchall()}
    pairs = sorted(r for r, s in ok if s == "sft" and (r, "base") in ok)
    if not pairs:
        return [], {"note": "needs at least one run with a base and an SFT model"}, {}
    base, sft = [ok[(r, "base")] for r in pairs], [ok[(r, "sft")] for r in pairs]
    rows: list[tuple] = []
    comps: dict = {}
    for (metric, split), values in metric_tables(con, base + sft).items():
        _compare(rows, comps, "sft_vs_base", metric, split, values, base, sft, ("base", "sft"), None,
                 f"{len(pairs)} runs: {', '.join(pairs)}")
    log(f"base vs SFT over {len(pairs)} runs: {len(rows)} metrics")
    return rows, {"pairs": len(pairs)}, comps


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def markdown(rows: list[tuple]) -> str:
    lines = ["| metric | split | a | b | diff [95% bootstrap CI] | Welch p | items |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        d = dict(zip(COLUMNS, r))
        if d["mean_a"] is None:
            lines.append(f"| {d['metric']} | {d['split'] or ''} | | | {d['note']} | | |")
            continue
        lines.append(f"| {d['metric']} | {d['split'] or ''} | {d['group_a']} {d['mean_a']:.3f} | {d['group_b']} "
                     f"{d['mean_b']:.3f} | {d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | "
                     f"{'n/a' if d['welch_p'] is None else format(d['welch_p'], '.3f')} | {d['n_items']} |")
    return "\n".join(lines)
