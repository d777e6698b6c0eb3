"""The memorization lab's one report page (`CPROX_HOME/reports/memorization.html`): dose-response plots of the
planted items, the dose at which each optimizer starts to extract, and for each hypothesis the answer with its
interval, from what `memorization_report` computed. Plots are embedded (base64 PNG), so the page is one file."""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence


def _img(path: Path | None) -> str:
    if path is None or not Path(path).exists():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%">'


def _num(v, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def table(rows: Sequence[dict], columns: Sequence[str], digits: int = 3) -> str:
    if not rows:
        return "<p><i>no rows</i></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_num(r.get(c), digits)}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _p(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _test_sentences(tests: Sequence[dict]) -> list[str]:
    return [f"{t['kind']} {t['metric']}: Muon {t['muon']:.3f} vs AdamW {t['adamw']:.3f} (difference "
            f"{t['diff']:+.3f}; Welch p {_p(t['welch_p'])}, exact permutation p {_p(t['permutation_p'])}; "
            f"{t['n_runs_muon']} + {t['n_runs_adamw']} runs)" for t in tests if t["diff"] is not None]


def multiplicity(tests: Sequence[dict]) -> str:
    """How much the optimizer tests can say together: the smallest Benjamini-Hochberg-adjusted permutation p over
    every comparison shown (kinds x metrics), and the smallest p an exact permutation test of these run counts can
    give at all (3 + 3 runs: 2 / C(6, 3) = 0.1), so one p below 0.05 from Welch alone is not read as a finding."""
    from scipy.stats import false_discovery_control

    rows = [t for t in tests if t.get("permutation_p") is not None]
    if not rows:
        return ""
    adjusted = false_discovery_control([t["permutation_p"] for t in rows])
    floor = min(1.0, 2 / math.comb(rows[0]["n_runs_muon"] + rows[0]["n_runs_adamw"], rows[0]["n_runs_muon"]))
    verdict = ("no difference is significant at 0.05" if adjusted.min() > 0.05
               else f"{int((adjusted <= 0.05).sum())} of them significant at 0.05")
    return (f" Across these {len(rows)} comparisons the smallest Benjamini-Hochberg-adjusted permutation p is "
            f"{adjusted.min():.3f} ({verdict}); with {rows[0]['n_runs_muon']} + {rows[0]['n_runs_adamw']} runs no "
            f"exact permutation p can fall below {floor:.3f}.")


def optimizer_answer(tests: Sequence[dict], ed50s: Sequence[dict], matched: bool | None,
                     matched_tests: dict | None = None) -> str:
    """'Muon recalls verbatim less': at matched validation loss when the checkpoints allow it, else on the final
    models when their losses match; otherwise no difference is reported, and why. The ED50s are always given."""
    matched_tests = matched_tests or {}
    if matched_tests.get("tests"):
        head = (f"At matched validation loss ({matched_tests['target_val_loss']:.3f}, checkpoints within 5%): "
                + "; ".join(_test_sentences(matched_tests["tests"])) + "." + multiplicity(matched_tests["tests"]))
    elif matched:
        shown = [t for t in tests if t["metric"] in ("greedy_extracted", "exposure")]
        head = ("Final models (validation losses within 5%): " + "; ".join(_test_sentences(shown)) + "."
                + multiplicity(shown))
    else:
        head = ("No difference reported: "
                + (matched_tests.get("why") or "the final validation losses do not match within 5%") + ".")
    parts = []
    for e in ed50s:
        if e["ed50"] is not None:
            ci = f"[{e['ci_low']:.1f}, {e['ci_high']:.1f}]" if e["ci_low"] is not None else "[–]"
            parts.append(f"{e['optimizer']} {e['kind']}: 50% greedy extraction at {e['ed50']:.1f} copies {ci}"
                         + (f" ({e['note']})" if e["note"] else ""))
        else:
            parts.append(f"{e['optimizer']} {e['kind']}: no 50% crossing ({e['note']})")
    if not tests and not parts:
        return "No planted scores yet (materialize canary_memorization)."
    return head + (" Dose for 50% greedy extraction: " + "; ".join(parts) + "." if parts else "")


def contamination_answer(effects: Sequence[dict]) -> str:
    parts = []
    for e in effects:
        if e["gain"] is None:
            continue
        parts.append(f"{e['optimizer']} at {e['dose']} copies: accuracy {e['accuracy']:.2f} "
                     f"[{_num(e['accuracy_lo'])}, {_num(e['accuracy_hi'])}] vs {e['control_accuracy']:.2f} "
                     f"[{_num(e['control_lo'])}, {_num(e['control_hi'])}] unplanted: +{e['gain']:.2f}")
    return "; ".join(parts) if parts else "No planted eval items scored."


def detection_answer(detection: dict | None, membership_view: Sequence[dict]) -> str:
    """'Detectors find what was planted': the contamination flag's precision and recall against the planted eval
    items, and the best membership AUROC of planted against unplanted items per kind."""
    parts = []
    if detection:
        flag = next(r for r in detection["overall"] if r["evidence"] == "flag")
        ngram = next(r for r in detection["overall"] if r["evidence"] == "ngram")
        parts.append(f"contamination flag over the training stream: precision {_num(flag['precision'])}, recall "
                     f"{_num(flag['recall'])} ({flag['tp']} of {flag['n_planted']} planted eval items, {flag['fp']} "
                     f"of {flag['n_unplanted']} unplanted flagged); its n-gram evidence alone: recall "
                     f"{_num(ngram['recall'])}")
    else:
        parts.append("contamination: no planted eval items (eval_per_dose 0)")
    for v in membership_view:
        if v["score"] == "loss / reference loss" and v["reason"] is None:
            parts.append(f"{v['optimizer']} {v['kind']} membership (loss vs reference): AUROC {v['auroc']:.2f} "
                         f"[{_num(v['ci_low'])}, {_num(v['ci_high'])}], n {v['n_planted']} planted / "
                         f"{v['n_unplanted']} unplanted")
    return "; ".join(parts) + "."


def write_page(path: Path, *, experiment: dict, curves_png: Path | None, curves: Sequence[dict],
               ed50s: Sequence[dict], tests: Sequence[dict], effects: Sequence[dict], matched: bool | None,
               sft_summary: str, comparisons: Sequence[dict], matched_tests: dict | None = None,
               tail: Sequence[dict] = (), detection: dict | None = None,
               membership_view: Sequence[dict] = (), sweep: Sequence[dict] = (), sweep_text: str = "") -> Path:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    hyp = [
        ("Muon recalls planted text verbatim less than AdamW",
         optimizer_answer(tests, ed50s, matched, matched_tests) + (" " + sweep_text if sweep_text else "")),
        ("An SFT model sits closer to its training data than its base", sft_summary),
        ("Contamination inflates scores (planted eval items vs unplanted controls)", contamination_answer(effects)),
        ("Detectors find what was planted", detection_answer(detection, membership_view)),
    ]
    body = [f"<h1>Memorization lab</h1><p>Written {now}. Experiment: {html.escape(str(experiment))}</p>",
            "<h2>Answers</h2><ul>" + "".join(f"<li><b>{html.escape(h)}.</b> {html.escape(a)}</li>" for h, a in hyp)
            + "</ul>",
            "<h2>Dose response</h2>", _img(curves_png),
            "<h3>Dose at which greedy extraction crosses 50%</h3>",
            table(ed50s, ["optimizer", "kind", "ed50", "ci_low", "ci_high", "n_items", "n_runs", "note"], 2),
            "<h3>Muon vs AdamW over seeds</h3>",
            table(tests, ["kind", "metric", "adamw", "muon", "diff", "welch_p", "permutation_p", "n_runs_adamw",
                          "n_runs_muon"]),
            "<h3>Muon vs AdamW at matched validation loss (intermediate checkpoints)</h3>",
            f"<p>{html.escape((matched_tests or {}).get('why') or '')}</p>",
            table((matched_tests or {}).get("tests", []), ["kind", "metric", "adamw", "muon", "diff", "welch_p",
                                                           "permutation_p", "n_runs_adamw", "n_runs_muon"]),
            "<h3>Learning-rate sweep (first seed, same token budget)</h3>",
            table(sweep, ["optimizer", "lr_scale", "final_val_loss", "greedy_canary", "greedy_fact", "top_dose",
                          "source"]),
            "<h3>Tail-end memory: Zipf-dosed facts by frequency bucket</h3>",
            table(tail, ["optimizer", "copies", "n_items", "n_runs", "recall", "recall_lo", "recall_hi",
                         "secret_logprob"]),
            "<h3>Planted eval items against unplanted controls</h3>",
            table(effects, ["optimizer", "dose", "n_items", "n_runs", "accuracy", "accuracy_lo", "accuracy_hi",
                            "control_accuracy", "gain", "answer_loss", "control_answer_loss"]),
            "<h3>Curves (pooled over seeds, 95% crossed-bootstrap intervals)</h3>",
            table(curves, ["optimizer", "kind", "dose", "n_runs", "n_items", "greedy_extracted", "greedy_extracted_lo",
                           "greedy_extracted_hi", "p_extract_n", "exposure", "exposure_lo", "exposure_hi",
                           "loss_ratio", "answer_correct"]),
            "<h3>Detectors against the planted truth: the contamination flag over the training stream</h3>",
            table((detection or {}).get("overall", []), ["evidence", "precision", "recall", "tp", "fp", "n_planted",
                                                         "n_unplanted"]),
            table((detection or {}).get("by_dose", []), ["dose", "n", "flag_rate", "ngram_rate", "substring_rate",
                                                         "any_13gram_rate", "mean_rare_share"]),
            "<h3>Membership scores of planted against unplanted items</h3>",
            table(membership_view, ["optimizer", "kind", "score", "auroc", "ci_low", "ci_high", "n_planted",
                                    "n_unplanted", "tpr_at_1pct_fpr"]),
            "<h2>Observational comparisons (recall, extraction, membership)</h2>",
            table(comparisons, ["comparison", "metric", "split", "group_a", "group_b", "mean_a", "mean_b", "diff",
                                "ci_low", "ci_high", "welch_p", "matched", "note"])]
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>Memorization lab</title>"
                   f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    tmp.replace(path)
    return path
