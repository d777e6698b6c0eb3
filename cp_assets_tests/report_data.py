"""Synthetic rows for the proximity-report tables, written through `report_tables.replace_rows` with their fixed
schemas (the assets producing them are tested elsewhere), plus eval samples and graded rollouts.

Two splits with opposite trends, so a report that got the sign wrong shows it:
- `near`: distance grows with MATH-500 level and GSM8K steps (harder is further);
- `far`: distance shrinks with level and steps (harder is closer).
Model `m1` is right exactly on the questions closest to the split (min_cosine below the split's median).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cp_assets.lib.reports import report_tables
from cp_assets.lib.reports.results_db import ResultsDB
from cp_assets.lib.evals.generation import Rollout, SamplingParams

EMBED = "all-MiniLM-L6-v2"
SPLITS = ("near", "far")
EMBED_SHARE = {"near": 1.0, "far": 0.25}  # `far` embedded at an `embed_sample` rate: a quarter of its chunks
MATH_LEVELS = [1 + i % 5 for i in range(40)]  # 8 items per level
GSM_STEPS = [2 + i % 6 for i in range(30)]  # 5 items per step count 2..7
# contaminated_share of the math500 items against split `near`: clean < 0.2 <= not_clean, not_dirty < 0.8 <= dirty
SHARES = [0.0, 0.1, 0.19, 0.2, 0.5, 0.79, 0.8, 0.95, 1.0] + [0.0] * 31
FLAGGED_SHARE = 0.8  # items flagged: contaminated_share >= 0.8


def _distance(difficulty: int, split: str, rng: np.random.Generator, scale: float) -> float:
    trend = scale * difficulty if split == "near" else scale * (6 - difficulty)
    return float(0.2 + trend + rng.normal(0, 0.02))


def samples() -> dict[str, list[dict]]:
    math = [{"sample_id": f"math500:{i}", "row_idx": i, "prompt": f"Problem {i}: compute {i}+{i}.",
             "request_prompt": f"Problem {i}", "reference": str(2 * i), "metadata": {"level": lvl, "subject": "Algebra"}}
            for i, lvl in enumerate(MATH_LEVELS)]
    gsm = [{"sample_id": f"gsm8k:{i}", "row_idx": i, "prompt": f"Janet has {i} ducks.", "request_prompt": f"Q{i}",
            "reference": str(i), "metadata": {"n_steps": s, "solution": "a <<1+1=2>> b\n#### 2"}}
           for i, s in enumerate(GSM_STEPS)]
    return {"math500": math, "gsm8k": gsm}


def fill(path: Path) -> dict:
    """Write every table; returns what the tests compare against."""
    rng = np.random.default_rng(7)
    db = ResultsDB(path)
    evals = samples()
    for name, rows in evals.items():
        db.replace_samples(name, rows)
    prox: dict[tuple[str, str], float] = {}
    with db.connect() as con:
        report_tables.ensure(con)
        for split in SPLITS:
            ref = [(split, EMBED, "v1", f"{split}:doc{i}#0", float(c)) for i, c in enumerate(np.linspace(0.1, 0.7, 50))]
            report_tables.replace_rows(con, "reference_distances", {"split": split, "embed_model": EMBED},
                                       columns("reference_distances"), ref)
            for eval_set, rows in evals.items():
                key = "level" if eval_set == "math500" else "n_steps"
                scale = 0.05 if key == "level" else 0.04
                out, neighbors = [], []
                for r in rows:
                    d = _distance(r["metadata"][key], split, rng, scale)
                    prox[(r["sample_id"], split)] = d
                    pct = float(np.clip((d - 0.1) / 0.6 * 100, 0, 100))
                    chunk = f"{split}:doc{r['row_idx'] % 7}#{r['row_idx'] % 3}"
                    out.append((eval_set, r["sample_id"], split, EMBED, d, float(np.sqrt(2 * d)), d - 1, pct, chunk,
                                chunk.split("#")[0], f"chunk text near {r['sample_id']}", EMBED_SHARE[split]))
                    neighbors += [(eval_set, r["sample_id"], split, EMBED, k, f"{chunk}{k}", chunk.split("#")[0],
                                   d + 0.01 * k, None, None) for k in (1, 2)]
                where = {"eval_set": eval_set, "split": split}
                report_tables.replace_rows(con, "eval_proximity", where, columns("eval_proximity"), out)
                report_tables.replace_rows(con, "eval_neighbors", where, columns("eval_neighbors"),
                                           neighbors)
                cont = [(eval_set, r["sample_id"], split, 8, 40, share, share, int(share * 40), _bucket(share),
                         int(share >= 0.5), prox[(r["sample_id"], split)], None, share >= FLAGGED_SHARE, None, share,
                         EMBED_SHARE[split])
                        for r, share in zip(rows, SHARES if split == "near" else [0.0] * len(rows))]
                report_tables.replace_rows(con, "contamination", where, columns("contamination"), cont)
    rollouts, answers = _rollouts(evals["math500"], prox)
    db.write_rollouts(rollouts)
    with db.connect() as con:
        for split in SPLITS:
            rows = [a for a in answers if a[1] == split]
            report_tables.replace_rows(con, "rollout_proximity", {"model_id": "m1", "split": split},
                                       columns("rollout_proximity"), rows)
        report_tables.ensure(con, "rollout_spans")
    return {"db": db, "prox": prox, "rollouts": rollouts, "answers": answers}


def columns(table: str) -> list[str]:
    return [part.split()[0] for part in report_tables.DDL[table].replace("\n", " ").split(",")]


def _bucket(share: float) -> str:
    return "clean" if share < 0.2 else "dirty" if share >= 0.8 else "not_clean"


def _rollouts(math: list[dict], prox: dict) -> tuple[list[Rollout], list[tuple]]:
    """m1 on math500: right on the items closer than the median of split `near`; one answer unit per rollout and
    split, whose percentile is 10 * row_idx % 100 (so 8 rollouts in each 20-point bin)."""
    near = sorted(prox[(r["sample_id"], "near")] for r in math)
    median = near[len(near) // 2]
    params = SamplingParams(max_tokens=16)
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rollouts, answers = [], []
    for r in math:
        correct = prox[(r["sample_id"], "near")] < median
        rollouts.append(Rollout(sample_id=r["sample_id"], eval_set="math500", model_id="m1", backend="local",
                                prompt=r["prompt"], completion=f"answer {r['reference']}", params=params,
                                params_hash=params.key(), finish_reason="stop", latency_s=0.1, started_at=t,
                                finished_at=t, correct=correct))
        for split in SPLITS:
            pct = float(10 * r["row_idx"] % 100)
            answers.append(("m1", split, "math500", r["sample_id"], params.key(), "answer", 0, 0, 10,
                            f"answer {r['reference']}", EMBED, "c#0", "c", 0.1 + pct / 200, None, None, pct,
                            EMBED_SHARE[split]))
    return rollouts, answers
