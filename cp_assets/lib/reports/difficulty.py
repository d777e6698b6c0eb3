"""The difficulty analysis behind asset `difficulty_report` (no Dagster): are harder eval questions further from the
training data, and are models right more often on questions close to it?

From the results DuckDB, per corpus split and eval set, with bootstrap 95% intervals (`cp_assets.lib.core.stats`):
- the nearest-neighbour distance of each question (`eval_proximity.min_cosine`, and its `percentile`) against its
  difficulty: MATH `level` 1-5 or GSM8K `n_steps` (calculator annotations of the reference solution), both from the
  `eval_samples` metadata (variables `min_cosine_vs_level`, `percentile_vs_level`, `min_cosine_vs_n_steps`, ...);
- question distance against correctness per model (rollouts joined on the sample, an item's correctness being the
  share of its graded rollouts that are right: `min_cosine_vs_correct`), plus accuracy by distance quintile;
- answer distance against correctness per model (`rollout_proximity`, unit 'answer': `answer_cosine_vs_correct`);
- the contamination rate (share of items flagged) per eval set and split.
A positive rho for `*_vs_level` / `*_vs_n_steps` supports "harder questions are further from the training data".
Inputs that are missing or empty are skipped with a note. Rows go to table `proximity_correlations`;
`difficulty_report` is the asset's work (the analysis, the rows, the metadata).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import duckdb

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import Markdown, image
from cp_assets.lib.core.stats import Correlation, accuracy_by_bin, spearman
from cp_assets.lib.reports import report_tables

CORR_COLUMNS = ["eval_set", "split", "variable", "model_id", "n", "rho", "ci_low", "ci_high", "p_value"]
DIFFICULTY = ("level", "n_steps")
HYPOTHESIS = "harder questions are further from the training data"


@dataclass
class CorrRow:
    eval_set: str
    split: str
    variable: str
    model_id: str | None
    corr: Correlation

    def row(self) -> tuple:
        c = self.corr
        return (self.eval_set, self.split, self.variable, self.model_id, c.n,
                *(None if math.isnan(v) else v for v in (c.rho, c.ci_low, c.ci_high, c.p_value)))


@dataclass
class Report:
    embed_model: str | None = None
    correlations: list[CorrRow] = field(default_factory=list)
    # (split, eval_set, difficulty kind) -> difficulty value -> distances
    by_difficulty: dict[tuple[str, str, str], dict[int, list[float]]] = field(default_factory=dict)
    # (split, eval_set, model) -> [(bin, lo, hi, accuracy, n)]
    accuracy_bins: dict[tuple[str, str, str], list[tuple]] = field(default_factory=dict)
    contamination: list[tuple[str, str, int, float]] = field(default_factory=list)  # eval_set, split, n, rate
    notes: list[str] = field(default_factory=list)


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Tables of the results DB that this report reads, with their row counts."""
    present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    wanted = ("eval_samples", "rollouts", "eval_proximity", "rollout_proximity", "contamination")
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in present else 0 for t in wanted}


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, args: list | None = None) -> list[dict[str, Any]]:
    cur = con.execute(sql, args or [])
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def pick_embed_model(con: duckdb.DuckDBPyConnection, table: str, preferred: str | None) -> str | None:
    """The embedding model to report on: `preferred` when the table has it, else the one with most rows
    (`proximity_correlations` has no embedding-model column, so one model per report)."""
    counts = con.execute(f"SELECT embed_model, count(*) FROM {table} GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    names = [c[0] for c in counts]
    if preferred and preferred in names:
        return preferred
    return names[0] if names else None


def _difficulty_part(con, rep: Report, n_boot: int, seed: int) -> None:
    items = _dicts(con, """
        SELECT p.eval_set, p.split, p.sample_id, p.min_cosine, p.percentile,
               TRY_CAST(s.metadata ->> '$.level' AS INTEGER) AS level,
               TRY_CAST(s.metadata ->> '$.n_steps' AS INTEGER) AS n_steps
        FROM eval_proximity p JOIN eval_samples s ON s.sample_id = p.sample_id
        WHERE p.embed_model = ? ORDER BY p.split, p.eval_set, p.sample_id""", [rep.embed_model])
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for it in items:
        groups[(it["split"], it["eval_set"])].append(it)
    found = False
    for (split, eval_set), rows in sorted(groups.items()):
        for kind in DIFFICULTY:
            graded = [r for r in rows if r[kind] is not None]
            if not graded:
                continue
            found = True
            diff = [r[kind] for r in graded]
            for dist in ("min_cosine", "percentile"):
                corr = spearman(diff, [r[dist] for r in graded], n_boot=n_boot, seed=seed)
                rep.correlations.append(CorrRow(eval_set, split, f"{dist}_vs_{kind}", None, corr))
            box: dict[int, list[float]] = defaultdict(list)
            for r in graded:
                if r["min_cosine"] is not None:
                    box[r[kind]].append(r["min_cosine"])
            rep.by_difficulty[(split, eval_set, kind)] = dict(sorted(box.items()))
    if not found:
        rep.notes.append("difficulty: no eval_proximity item has a level or n_steps in eval_samples "
                         "(materialize eval_samples for math500 / gsm8k)")


def _correctness_part(con, rep: Report, n_boot: int, seed: int, n_bins: int) -> None:
    items = _dicts(con, """
        SELECT p.eval_set, p.split, r.model_id, p.sample_id, any_value(p.min_cosine) AS min_cosine,
               avg(r.correct::INTEGER) AS correct
        FROM eval_proximity p JOIN rollouts r ON r.sample_id = p.sample_id
        WHERE p.embed_model = ? AND r.correct IS NOT NULL
        GROUP BY ALL ORDER BY p.split, p.eval_set, r.model_id, p.sample_id""", [rep.embed_model])
    if not items:
        rep.notes.append("correctness: no graded rollout of an item in eval_proximity (materialize rollouts)")
        return
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for it in items:
        groups[(it["split"], it["eval_set"], it["model_id"])].append(it)
    for (split, eval_set, model), rows in sorted(groups.items()):
        dist, correct = [r["min_cosine"] for r in rows], [r["correct"] for r in rows]
        rep.correlations.append(CorrRow(eval_set, split, "min_cosine_vs_correct", model,
                                        spearman(dist, correct, n_boot=n_boot, seed=seed)))
        rep.accuracy_bins[(split, eval_set, model)] = accuracy_by_bin(dist, correct, n_bins)


def _answer_part(con, rep: Report, n_boot: int, seed: int) -> None:
    items = _dicts(con, """
        WITH a AS (SELECT model_id, split, sample_id, params_hash, min(cosine) AS cosine FROM rollout_proximity
                   WHERE unit = 'answer' AND embed_model = ? GROUP BY ALL)
        SELECT r.eval_set, a.split, a.model_id, a.cosine, r.correct::INTEGER AS correct
        FROM a JOIN rollouts r USING (sample_id, model_id, params_hash)
        WHERE r.correct IS NOT NULL ORDER BY a.split, r.eval_set, a.model_id, a.sample_id""", [rep.embed_model])
    if not items:
        rep.notes.append("answers: no graded rollout in rollout_proximity (unit 'answer')")
        return
    groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for it in items:
        groups[(it["split"], it["eval_set"] or "", it["model_id"])].append(it)
    for (split, eval_set, model), rows in sorted(groups.items()):
        corr = spearman([r["cosine"] for r in rows], [r["correct"] for r in rows], n_boot=n_boot, seed=seed)
        rep.correlations.append(CorrRow(eval_set, split, "answer_cosine_vs_correct", model, corr))


def build_report(con: duckdb.DuckDBPyConnection, n_boot: int = 1000, seed: int = 0, n_bins: int = 5,
                 embed_model: str | None = None) -> Report:
    """Every part of the analysis whose inputs exist; the others are skipped with a note."""
    counts, rep = _tables(con), Report()
    if counts["eval_proximity"] and counts["eval_samples"]:
        rep.embed_model = pick_embed_model(con, "eval_proximity", embed_model)
        _difficulty_part(con, rep, n_boot, seed)
        if counts["rollouts"]:
            _correctness_part(con, rep, n_boot, seed, n_bins)
        else:
            rep.notes.append("correctness: no rollouts yet (materialize rollouts)")
    else:
        missing = [t for t in ("eval_proximity", "eval_samples") if not counts[t]]
        rep.notes.append(f"difficulty and correctness: {', '.join(missing)} empty or missing (materialize them)")
    if counts["rollout_proximity"] and counts["rollouts"]:
        rep.embed_model = rep.embed_model or pick_embed_model(con, "rollout_proximity", embed_model)
        _answer_part(con, rep, n_boot, seed)
    else:
        rep.notes.append("answers: rollout_proximity or rollouts empty or missing")
    if counts["contamination"]:
        rep.contamination = [tuple(r) for r in con.execute(
            "SELECT eval_set, split, count(*), avg(flagged::INTEGER) FROM contamination GROUP BY ALL "
            "ORDER BY eval_set, split").fetchall()]
    else:
        rep.notes.append("contamination: table empty or missing (materialize contamination)")
    return rep


def write_correlations(con: duckdb.DuckDBPyConnection, rows: list[CorrRow]) -> int:
    """Replace every row of `proximity_correlations` (the report is unpartitioned) in one transaction."""
    report_tables.ensure(con, "proximity_correlations")
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM proximity_correlations")
        if rows:
            con.executemany(f"INSERT INTO proximity_correlations ({', '.join(CORR_COLUMNS)}) VALUES "
                            f"({', '.join('?' * len(CORR_COLUMNS))})", [r.row() for r in rows])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return len(rows)


def verdict(c: Correlation) -> str:
    """How one rho reads against the hypothesis (positive: harder items are further)."""
    if not c.defined:
        return f"n/a: {c.reason}"
    if c.excludes_zero():
        return "supports (harder is further)" if c.rho > 0 else "contradicts (harder is closer)"
    return "inconclusive (95% CI includes 0)"


def hypothesis_rows(rep: Report) -> list[tuple]:
    """split, eval set, difficulty, n, rho [95% CI], p, verdict: for the min-cosine-vs-difficulty correlations."""
    out = []
    for r in rep.correlations:
        if r.variable in ("min_cosine_vs_level", "min_cosine_vs_n_steps"):
            p = "" if math.isnan(r.corr.p_value) else f"{r.corr.p_value:.2g}"
            out.append((r.split, r.eval_set, r.variable.removeprefix("min_cosine_vs_"), r.corr.n, r.corr.text(),
                        p, verdict(r.corr)))
    return out


def figures(rep: Report, out_dir: Path) -> dict[str, Markdown]:
    """Markdown (tables, inline PNGs) for the asset metadata: hypothesis, correlations, the four plots."""
    from cp_assets.lib.core import plots
    from cp_assets.lib.reports import plots as report_plots
    from cp_assets.lib.reports.sql_models import markdown_table

    md: dict[str, Markdown] = {}
    hyp = hypothesis_rows(rep)
    if hyp:
        md["hypothesis"] = Markdown(
            f"**Hypothesis: {HYPOTHESIS}** (Spearman rho of nearest-neighbour cosine distance vs difficulty, 95% "
            "bootstrap CI; rho > 0 supports it)\n\n"
            + markdown_table(["split", "eval set", "difficulty", "n", "rho [95% CI]", "p", "reading"], hyp))
    if rep.correlations:
        md["correlations"] = markdown_table(CORR_COLUMNS, [r.row() for r in rep.correlations], digits=3)
    for kind, xlabel in (("level", "level"), ("n_steps", "solution steps")):
        panels = {f"{s} / {e}": g for (s, e, k), g in rep.by_difficulty.items() if k == kind}
        if panels:
            png = report_plots.box_strip(panels, out_dir / f"distance_by_{kind}.png",
                                         f"nearest-neighbour distance by {xlabel}", xlabel, "min cosine distance")
            md[f"distance_by_{kind}_plot"] = image(png, f"distance by {xlabel}")
    if rep.accuracy_bins:
        series = {f"{m} / {e} / {s}": ([b[0] for b in bins], [b[3] for b in bins])
                  for (s, e, m), bins in rep.accuracy_bins.items()}
        png = report_plots.lines(series, out_dir / "accuracy_by_distance.png", "accuracy by question distance "
                                 "quintile", "distance quintile (1 = closest)", "accuracy")
        md["accuracy_by_distance_plot"] = image(png, "accuracy by distance quintile")
        md["accuracy_by_distance"] = markdown_table(
            ["split", "eval set", "model", "quintile", "min distance", "max distance", "accuracy", "n"],
            [(s, e, m, *b) for (s, e, m), bins in rep.accuracy_bins.items() for b in bins], digits=3)
    if rep.contamination:
        png = plots.bars([f"{e}/{s}" for e, s, _, _ in rep.contamination], [r for *_, r in rep.contamination],
                         out_dir / "contamination_rate.png", "contamination rate (share flagged)", "rate",
                         [n for _, _, n, _ in rep.contamination])
        md["contamination_plot"] = image(png, "contamination rate")
        md["contamination"] = markdown_table(["eval set", "split", "n", "rate"], rep.contamination, digits=3)
    return md


def difficulty_report(db, *, n_boot: int = 1000, seed: int = 0, n_bins: int = 5, embed_model: str | None = None,
                      out_dir: Path | None = None, warn: Callable[[str], None] = print) -> dict:
    """The `difficulty_report` asset's work: `build_report` over the results DuckDB (`embed_model` default:
    CPROX_EMBED_MODEL when present), `proximity_correlations` replaced, each note passed to `warn`, and the metadata
    (rows written, notes, tables and plots under `out_dir`, default CPROX_HOME/plots/difficulty_report)."""
    with db.connect(read_only=True) as con:
        rep = build_report(con, n_boot=n_boot, seed=seed, n_bins=n_bins,
                           embed_model=embed_model or settings.embed_model())
    with db.connect() as con:
        n = write_correlations(con, rep.correlations)
    for note in rep.notes:
        warn(note)
    return {"correlations_written": n, "embed_model": rep.embed_model or "",
            "notes": Markdown("\n".join(f"- {x}" for x in rep.notes) or "every part ran"),
            **figures(rep, out_dir or settings.home() / "plots" / "difficulty_report")}
