"""Do the observational detectors find what was planted? (issue 16, item 4; no dagster)

The lab knows exactly which eval items the base models trained on, and how often. Two detectors are scored against
that truth:
- contamination: the `contamination` asset's evidence (`cp_assets.lib.reports.contamination.contamination_rows`:
  the n-gram index with its rare-match rule and the GPT-4 substring probes; no embedding evidence) run over the base
  training stream exactly as the models saw it (the member documents and every planted copy, one document each).
  The items: every planted eval item (its dose 0 copies are the controls) and `controls_per_set` other test
  questions of each set, drawn by a seed (never planted). Table `planted_detection`, one row per item;
  `detection_summary` gives precision and recall against the planted truth, overall and by dose, and which evidence
  fired.
- membership: each base model's own scores of the planted items (`planted_scores`: the loss, and the loss against
  the reference model that never saw them), as a membership test of planted (dose >= 1) against unplanted (dose 0)
  items of the same kind: AUROC with its interval and the true n of each class (`membership_view`).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Callable, Sequence

from cp_assets.lib.memorization.planting import PlantedItem

DETECTION_COLUMNS = ["eval_set", "sample_id", "item_id", "dose", "planted", "flagged", "flag_reason", "rare_share",
                     "contaminated_share", "longest_span", "substring_hits", "ngram_overlap", "n_tokens"]
STREAM_SPLIT = "training_stream"


def _eval_set(item: PlantedItem) -> str:
    return item.item_id.split("-")[1]  # eval-<set>-<dose>-<j>


def detection_rows(stream: Sequence[str], items: Sequence[PlantedItem], samples_by_set: dict[str, Sequence], *,
                   index_dir: Path, controls_per_set: int = 200, seed: int = 0,
                   log: Callable[[str], None] = print) -> list[tuple]:
    """`planted_detection` rows: the contamination evidence of every planted eval item and of `controls_per_set`
    unplanted questions per set against the training `stream` (its n-gram index is built in `index_dir`, then
    removed)."""
    from cp_assets.lib.corpus.exact.ngram_index import NgramIndex
    from cp_assets.lib.reports.contamination import COLUMNS, contamination_rows

    evals = [it for it in items if it.kind == "eval"]
    if not evals:
        return []
    index_dir = Path(index_dir)
    shutil.rmtree(index_dir, ignore_errors=True)
    index = NgramIndex(index_dir / "stream.json")
    index.update([(f"stream-{i:07d}", t) for i, t in enumerate(stream)], log=log)
    out = []
    try:
        for eval_set in sorted({_eval_set(it) for it in evals}):
            planted = {it.source: it for it in evals if _eval_set(it) == eval_set}
            pool = [s for s in samples_by_set.get(eval_set, []) if s.id not in planted]
            rng = random.Random(f"cprox-detection-controls:{seed}:{eval_set}")
            others = rng.sample(pool, min(controls_per_set, len(pool)))
            by_id = {s.id: s for s in samples_by_set.get(eval_set, [])}
            chosen = [by_id[sid] for sid in sorted(planted) if sid in by_id] + others
            rows = contamination_rows(eval_set, STREAM_SPLIT, [(s.id, s.prompt) for s in chosen], index, stream)
            for s, row in zip(chosen, rows):
                r = dict(zip(COLUMNS, row))
                it = planted.get(s.id)
                out.append((eval_set, s.id, it.item_id if it else None, it.dose if it else None,
                            bool(it and it.dose > 0), bool(r["flagged"]), r["flag_reason"], r["rare_share"],
                            r["contaminated_share"], r["longest_span"], r["substring_hits"], r["ngram_overlap"],
                            r["n_tokens"]))
            log(f"planted detection, {eval_set}: {sum(r[5] for r in out if r[0] == eval_set)} of "
                f"{len(chosen)} items flagged ({len(planted)} planted items, {len(others)} other questions)")
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    return out


def _prf(rows: Sequence[dict], flag: Callable[[dict], bool]) -> dict:
    pos = [r for r in rows if r["planted"]]
    neg = [r for r in rows if not r["planted"]]
    tp, fp = sum(flag(r) for r in pos), sum(flag(r) for r in neg)
    return {"n_planted": len(pos), "n_unplanted": len(neg), "tp": tp, "fp": fp,
            "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / len(pos) if pos else None}


def detection_summary(rows: Sequence[dict]) -> dict:
    """{'overall': precision/recall of the flag and of each evidence alone, 'by_dose': the share flagged (and by
    which evidence) at each dose, dose 0 being the planted controls and None the other questions}."""
    evidence = {"flag": lambda r: r["flagged"],
                "ngram": lambda r: "ngram" in (r["flag_reason"] or ""),
                "substring": lambda r: "substring" in (r["flag_reason"] or ""),
                "any_13gram": lambda r: (r["ngram_overlap"] or 0) > 0}
    overall = [{"evidence": name, **_prf(rows, f)} for name, f in evidence.items()]
    by_dose = []
    for dose in sorted({r["dose"] for r in rows}, key=lambda d: -1 if d is None else d):
        group = [r for r in rows if r["dose"] == dose]
        by_dose.append({"dose": "not planted" if dose is None else dose, "n": len(group),
                        **{f"{name}_rate": sum(f(r) for r in group) / len(group) for name, f in evidence.items()},
                        "mean_rare_share": sum(r["rare_share"] for r in group) / len(group)})
    return {"overall": overall, "by_dose": by_dose}


def membership_view(scores: Sequence[dict], n_boot: int = 1000) -> list[dict]:
    """Per optimizer and kind: AUROC of planted (dose >= 1) against unplanted (dose 0) items, pooled over seeds,
    from the model's loss alone and from its loss against the reference model's (both oriented higher = planted)."""
    from cp_assets.lib.memorization.membership import auroc

    out = []
    for opt in sorted({s["optimizer"] for s in scores if s["optimizer"]}):
        for kind in sorted({s["kind"] for s in scores}):
            group = [s for s in scores if s["optimizer"] == opt and s["kind"] == kind]
            for name, key in (("loss", "loss"), ("loss / reference loss", "loss_ratio")):
                pos = [-s[key] if s[key] is not None else None for s in group if s["dose"] > 0]
                neg = [-s[key] if s[key] is not None else None for s in group if s["dose"] == 0]
                if not pos or not neg:
                    continue
                a = auroc(pos, neg, n_boot=n_boot)
                out.append({"optimizer": opt, "kind": kind, "score": name, "auroc": a.auroc, "ci_low": a.ci_low,
                            "ci_high": a.ci_high, "n_planted": a.n_members, "n_unplanted": a.n_nonmembers,
                            "tpr_at_1pct_fpr": a.tpr_at_1pct_fpr, "reason": a.reason})
    return out
