"""The work of each memorization-lab asset, one function per asset (no dagster): train a tiny model, score verbatim
recall, extraction or membership of one model, or compare runs; each stores its rows in the results DuckDB and
returns the asset's metadata rendered with `cp_assets.lib.core.metadata` (the asset body only passes it on).

A diverging training run raises `TrainingDiverged` (cp_assets.lib.tinygpt.train) after its failure row is recorded,
with the run's `model_id` set on the exception so the asset can fail without retries.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from cp_assets.lib.core import settings
from cp_assets.lib.core.metadata import FilePath, Json, Markdown, image
from cp_assets.lib.evals.eval_registry import load_evals
from cp_assets.lib.evals.rollouts import run_eval
from cp_assets.lib.memorization import (compare_runs, dose_response, planted_detection,
                                        planted_scores, planting, references, training)
from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.memorization import extraction as ext
from cp_assets.lib.memorization import membership as mia
from cp_assets.lib.memorization import recall as recall_scores
from cp_assets.lib.memorization import report as rep
from cp_assets.lib.memorization.runs import (
    AUROC_COLUMNS,
    EXTRACTION_COLUMNS,
    MEMBERSHIP_COLUMNS,
    RECALL_COLUMNS,
    auroc_markdown,
    extraction_markdown,
    extraction_rows,
    labelled_documents,
    membership_rows,
    passages,
    recall_markdown,
    recall_params,
    recall_rows,
    scores_by_class,
    trained_members,
)
from cp_assets.lib.reports import report_tables
from cp_assets.lib.tinygpt.config import TrainingDiverged, TrainResult

Log = Callable[[str], None]


def plot_path(name: str):
    return settings.home() / "plots" / name


def split_documents(store, split: str) -> list[tuple[str, str]]:
    """(doc_id, text) of every document of a split; a clear error when `raw_corpus` has not been materialized."""
    docs = [(d.doc_id, d.text) for d in store.iter_documents(split)]
    if not docs:
        raise ValueError(f"split {split!r} has no documents: materialize `raw_corpus` for it first")
    return docs


def record_training(db, model_id: str, rows: tuple[list[tuple], list[tuple]],
                    doc_rows: tuple[str, list[tuple]] | None = None) -> None:
    """Replace the model's run row and curve (and the split's member list) in one transaction per table group."""
    runs_rows, curve_rows = rows
    with db.connect() as con:
        report_tables.replace_tables(con, {"model_id": model_id}, {
            "training_runs": (training.RUN_COLUMNS, runs_rows),
            "training_curves": (training.CURVE_COLUMNS, curve_rows)})
        if doc_rows is not None:
            report_tables.replace_rows(con, "training_documents", {"split": doc_rows[0]}, training.DOC_COLUMNS,
                                       doc_rows[1])


def _jsonable(cfg) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if isinstance(v, (int, float, str, bool, type(None)))}


def training_metadata(out: dict, stage: str) -> dict:
    """Metadata of a finished training run (`train_base` / `train_sft` output): figures, config and loss curve."""
    from cp_assets.lib.tinygpt.plots import loss_curves_png

    result, model_id = out["result"], out["model_id"]
    png = loss_curves_png({model_id: result}, plot_path(f"loss_{model_id}.png"))
    return {"model_id": model_id, "stage": stage, "checkpoint": FilePath(str(out["path"])),
            "n_params": result.n_params, "tokens": result.tokens, "final_train_loss": result.final_train_loss,
            "final_val_loss": result.final_val_loss, "tokens_per_s": result.tokens_per_s,
            "seconds": result.seconds, "config": Json(_jsonable(out["config"])),
            "loss_curve": image(png, f"loss of {model_id}")}


def train_recorded(db, model_id: str, fit: Callable[[], dict]) -> dict:
    """`fit()`; a divergence's failure rows are recorded under the model that diverged: the one `fit` named on the
    exception (a fit that trains several models, as the LiRA references), else `model_id`."""
    try:
        return fit()
    except TrainingDiverged as exc:
        exc.model_id = getattr(exc, "model_id", None) or model_id
        record_training(db, exc.model_id, exc.rows)
        raise


def recall_quotes_of(evals) -> list[str]:
    """The verbatim-recall passages the members must contain (none without a `recall` eval set)."""
    return training.recall_quotes(evals.load_samples("recall")) if "recall" in evals.names() else []


def materialize_tiny_model(store, db, run: str, *, lr_scale: float, log: Log) -> dict:
    """`tiny_models`: train the run's base model on the base split's members, register it, record its rows."""
    experiment = ex.load_experiment()
    split = experiment.base.split
    docs = split_documents(store, split)
    evals = load_evals()
    quotes = recall_quotes_of(evals)
    plant_samples = ({name: evals.load_samples(name) for name in experiment.plant.eval_sets}
                     if experiment.plant and experiment.plant.eval_per_dose else {})
    out = train_recorded(db, ex.base_model_id(run),
                 lambda: training.train_base(docs, quotes, experiment, run, lr_scale=lr_scale,
                                             plant_samples=plant_samples, log=log))
    ex.register(out["model_id"], out["path"], f"tiny GPT, {run}, base on {split}")
    record_training(db, out["model_id"], (out["runs_rows"], out["curve_rows"]), (split, out["doc_rows"]))
    detected = []
    if out["planted_rows"]:
        detected = detect_planted(db, out["stream"], out["planted_rows"], plant_samples, run, log)
        with db.connect() as con:
            report_tables.replace_rows(con, "planted_items", {}, planting.PLANTED_COLUMNS, out["planted_rows"])
    chosen = out["docs"]
    return training_metadata(out, "base") | {
        "members": len(chosen.members), "heldout": len(chosen.heldout),
        "recall_documents": len(chosen.recall_documents), "planted_items": len(out["planted_rows"]),
        "tokenizer_source": chosen.tokenizer_texts()[1], "tokenizer_documents": len(chosen.tokenizer_docs),
        "planted_copies": sum(r[2] for r in out["planted_rows"]),
        "planted_eval_items_flagged": f"{sum(r[5] for r in detected if r[4])} of {sum(r[4] for r in detected)}"}


def detect_planted(db, stream: list[str], planted_rows: list[tuple], samples: dict, run: str, log: Log) -> list:
    """What the contamination detector says about the planted eval items against the stream the model saw (table
    `planted_detection`). Every run of an experiment trains on the same stream: it is checked once, keyed by the
    stream's hash; the other runs read the stored rows."""
    import hashlib

    key = hashlib.sha256("\x00".join(stream).encode()).hexdigest()
    marker = ex.run_dir(run, "base").parent / "planted_detection.key"
    if marker.exists() and marker.read_text() == key:
        with db.connect(read_only=True) as con:
            report_tables.ensure_readable(con, "planted_detection")
            rows = con.execute(f"SELECT {', '.join(planted_detection.DETECTION_COLUMNS)} FROM planted_detection"
                               ).fetchall()
        if rows or not any(r[1] == "eval" for r in planted_rows):
            return rows
    rows = planted_detection.detection_rows(stream, planting.items_from_rows(planted_rows), samples,
                                            index_dir=marker.parent / f".stream-index-{run}", log=log)
    with db.connect() as con:
        report_tables.replace_rows(con, "planted_detection", {}, planted_detection.DETECTION_COLUMNS, rows)
    marker.write_text(key)
    return rows


def materialize_reference_model(store, db, *, log: Log) -> dict:
    """`reference_model`: the base members with nothing planted (AdamW, the first seed), registered as
    `tiny-reference`: the model that never saw a planted item, against which planted-text losses are compared."""
    experiment = ex.load_experiment()
    split = experiment.base.split
    evals = load_evals()
    quotes = recall_quotes_of(evals)
    run = ex.run_id("adamw", experiment.base.seeds[0])
    out = train_recorded(db, ex.REFERENCE_MODEL,
                 lambda: training.train_base(split_documents(store, split), quotes, experiment, run,
                                             reference=True, log=log))
    ex.register(out["model_id"], out["path"], f"tiny GPT reference ({run}, nothing planted) on {split}")
    record_training(db, out["model_id"], (out["runs_rows"], out["curve_rows"]))
    return training_metadata(out, "reference")


def checkpoint_scores(out_dir, items, spec, final_rows: list[tuple], run: str, model_id: str, log: Log) -> list[tuple]:
    """Greedy extraction, log p and loss of every planted item at each intermediate checkpoint of the run (and the
    final model's, from `final_rows`), with the checkpoint's validation loss: the matched-loss comparison's input."""
    from cp_assets.lib.tinygpt.model import load_checkpoint

    result = TrainResult.load(out_dir)
    optimizer, seed = ex.parse_run(run)
    out = []
    for step, tokens, val_loss, path in result.checkpoints:
        if Path(path).resolve() == Path(out_dir).resolve():
            rows = final_rows
        else:
            model, tokenizer = load_checkpoint(path)
            rows = planted_scores.score_model(model, tokenizer, items, spec, run=run, model_id=model_id, full=False,
                                              log=log)
        named = [dict(zip(planted_scores.SCORE_COLUMNS, r)) for r in rows]
        out += [(model_id, run, optimizer, seed, int(step), int(tokens), val_loss, d["item_id"], d["kind"], d["dose"],
                 d["greedy_extracted"], d["secret_logprob"], d["loss"]) for d in named]
    log(f"{model_id}: planted items scored at {len(result.checkpoints)} checkpoints")
    return out


def materialize_canary_memorization(db, run: str, *, log: Log) -> dict:
    """`canary_memorization`: score the run's base model on every planted item (table `planted_scores`) and
    summarize by kind and dose (table `canary_memorization`); metadata: the run's dose-response plot."""
    from cp_assets.lib.tinygpt.model import load_checkpoint

    experiment = ex.load_experiment()
    if experiment.plant is None:
        raise ValueError(f"{settings.training_file()}: no `plant:` section, so nothing was planted to score")
    with db.connect(read_only=True) as con:
        items = planting.items_from_rows(con.execute(
            f"SELECT {', '.join(planting.PLANTED_COLUMNS)} FROM planted_items ORDER BY kind, dose, item_id").fetchall())
    if not items:
        raise ValueError("table planted_items is empty: materialize `tiny_models` with a `plant:` section first")
    model, tokenizer = load_checkpoint(ex.run_dir(run, "base"))
    reference = load_checkpoint(ex.reference_dir())[0] if (ex.reference_dir() / "config.json").exists() else None
    if reference is None:
        log("no reference model yet (materialize `reference_model`): ref_loss and loss_ratio stay empty")
    model_id = ex.base_model_id(run)
    rows = planted_scores.score_model(model, tokenizer, items, experiment.plant, reference=reference, run=run,
                                      model_id=model_id, log=log)
    summary = dose_response.run_summary(rows, experiment.plant.extraction_samples)
    ckpt_rows = checkpoint_scores(ex.run_dir(run, "base"), items, experiment.plant, rows, run, model_id, log)
    with db.connect() as con:
        report_tables.replace_tables(con, {"model_id": model_id}, {
            "planted_scores": (planted_scores.SCORE_COLUMNS, rows),
            "canary_memorization": (dose_response.MEMORIZATION_COLUMNS, summary),
            "planted_checkpoint_scores": (dose_response.CHECKPOINT_COLUMNS, ckpt_rows)})
    named = [dict(zip(dose_response.MEMORIZATION_COLUMNS, r)) for r in summary]
    png = dose_response.run_plot(named, plot_path(f"dose_response_{model_id}.png"), f"{model_id}: planted items")
    return {"model_id": model_id, "items": len(rows), "reference": reference is not None,
            "greedy_extracted": sum(r[8] for r in rows),
            "by_dose": Markdown(dose_response.markdown(named)), "dose_response": image(png, "dose response")}


def materialize_tiny_sft_model(store, db, run: str, *, lr_scale: float, log: Log) -> dict:
    """`tiny_sft_models`: fine-tune the run's base model on the SFT split, register it, record its rows."""
    experiment = ex.load_experiment()
    split = experiment.sft.split
    docs = split_documents(store, split)
    out = train_recorded(db, ex.sft_model_id(run),
                 lambda: training.train_sft(docs, experiment, run, lr_scale=lr_scale, log=log))
    ex.register(out["model_id"], out["path"], f"tiny GPT, {run}, base fine-tuned on {split}")
    record_training(db, out["model_id"], (out["runs_rows"], out["curve_rows"]))
    return training_metadata(out, "sft") | {"sft_documents": out["n_documents"]}


def materialize_verbatim_recall(db, backend, model_id: str, *, eval_set: str, max_tokens: int, limit: int | None,
                                log: Log) -> dict:
    """`verbatim_recall`: greedy completions of the recall prefixes, scored; table `verbatim_recall`."""
    samples = load_evals().load_samples(eval_set, limit)
    figures, stored = run_eval(backend, eval_set, recall_params(max_tokens), db, limit=limit, log=log)
    rows = recall_rows(model_id, samples, stored)
    with db.connect() as con:
        report_tables.replace_rows(con, "verbatim_recall", {"model_id": model_id}, RECALL_COLUMNS, rows)
    summary = recall_scores.summarize([dict(zip(RECALL_COLUMNS, r)) for r in rows], by="category")
    png = recall_scores.recall_plot(summary, plot_path(f"verbatim_recall_{model_id}.png"),
                                    f"{model_id}: verbatim recall by category")
    overall = next((s for s in summary if s.get("category") in (None, "all", "overall")), summary[-1])
    return {"items": len(rows), "generated": figures["generated"],
            "exact_rate": overall.get("exact_rate"), "normalized_rate": overall.get("normalized_rate"),
            "mean_char_similarity": overall.get("char_similarity"), "by_category": Json(summary),
            "recall_plot": image(png, "recall by category"), "longest_recalled": Markdown(recall_markdown(rows))}


def materialize_extraction(store, db, backend, spec, model_id: str, split: str, *, prefix_tokens: int,
                           suffix_tokens: int, n: int, seed: int, members_only: bool, log: Log) -> dict:
    """`extraction`: k-extractability of windows of the split (members only for models trained on it when
    `members_only`); table `extraction`. `spec`: the model's registry entry."""
    docs = split_documents(store, split)
    info = trained_members(spec)
    members = set(info["members"]) if info and info["split"] == split else None
    if members is not None and members_only:
        docs = [d for d in docs if d[0] in members]
    rows, figures = extraction_rows(backend, split, docs, members, prefix_tokens=prefix_tokens,
                                    suffix_tokens=suffix_tokens, n=n, seed=seed, log=log)
    with db.connect() as con:
        report_tables.replace_rows(con, "extraction", {"model_id": model_id, "split": split}, EXTRACTION_COLUMNS, rows)
    named = [dict(zip(EXTRACTION_COLUMNS, r)) for r in rows]
    summary = ext.summarize_extraction(named)
    png = ext.distance_histogram(named, plot_path(f"extraction_{model_id}_{split}.png"),
                                 f"{model_id} on {split}: edit distance of {suffix_tokens}-token continuations")
    return figures | {
        "members_known": members is not None, "summary": Json(summary), "exact_rate": summary.get("exact_rate"),
        "edit_distance_histogram": image(png, "edit distances"),
        "closest_continuations": Markdown(extraction_markdown(named, suffix_tokens))}


def materialize_membership(store, db, backend, spec, model_id: str, *, n: int, words: int, max_tokens: int,
                           seed: int, log: Log) -> dict:
    """`membership`: MIA scores of member and non-member passages and their AUROCs; tables `membership_scores`,
    `membership_auroc`. `spec`: the model's registry entry."""
    with db.connect(read_only=True) as con:
        split, labels, member_ids, other_ids = labelled_documents(spec, con, ex.load_experiment().base.split)
    docs = [d for d in split_documents(store, split) if d[0] in member_ids | other_ids]
    members = passages([d for d in docs if d[0] in member_ids], n, words, seed)
    nonmembers = passages([d for d in docs if d[0] in other_ids], n, words, seed)
    lira = None
    side, why = references.lira_halves(split, n, words, seed) if labels == "exact" else (None, "proxy labels")
    if side:
        from cp_assets.lib.evals.model_registry import load_models
        from cp_assets.lib.evals.rollouts import backend_for

        registry = load_models()
        lira = (side, {h: backend_for(registry.get(references.lira_model_id(h))) for h in references.HALVES})
    else:
        log(f"no ref_out / lira scores: {why}")
    rows, aurocs, inference, figures = membership_rows(backend, members, nonmembers, labels=labels,
                                                       max_tokens=max_tokens, lira=lira, log=log)
    with db.connect() as con:
        report_tables.replace_tables(con, {"model_id": model_id}, {
            "membership_scores": (MEMBERSHIP_COLUMNS, rows), "membership_auroc": (AUROC_COLUMNS, aurocs),
            "dataset_inference": (mia.DATASET_INFERENCE_COLUMNS, inference)})
    png = mia.roc_plot(scores_by_class(rows), plot_path(f"membership_{model_id}.png"),
                       f"{model_id}: membership ROC ({labels} labels, {split})")
    return figures | {"split": split, "auroc": Markdown(auroc_markdown(aurocs)), "roc": image(png, "ROC curves"),
                      "dataset_inference": Json([dict(zip(mia.DATASET_INFERENCE_COLUMNS, r)) for r in inference])}


def materialize_memorization_report(db, *, log: Log) -> dict:
    """`memorization_report`: Muon vs AdamW and base vs SFT comparisons; table `memorization_comparisons`."""
    with db.connect() as con:
        opt, opt_meta, opt_comps = rep.optimizer_rows(con, ex.load_experiment().base.split, log=log)
        sft, sft_meta, sft_comps = rep.sft_rows(con, log=log)
        report_tables.replace_rows(con, "memorization_comparisons", {}, rep.COLUMNS, opt + sft)
    meta: dict = {"optimizer": Json(opt_meta), "sft": Json(sft_meta), "rows": len(opt) + len(sft)}
    for name, rows, comps, title in (("muon_vs_adamw", opt, opt_comps, "Muon vs AdamW (base models, all seeds)"),
                                     ("sft_vs_base", sft, sft_comps, "base vs SFT")):
        if not rows:
            continue
        meta[f"{name}_table"] = Markdown(rep.markdown(rows))
        if comps:
            png = compare_runs.comparison_plot(comps, plot_path(f"{name}.png"), title)
            meta[f"{name}_plot"] = image(png, title)
    return meta | planted_report(db, [dict(zip(rep.COLUMNS, r)) for r in opt + sft], opt_meta.get("matched"),
                                 log=log)


def planted_report(db, comparisons: list[dict], matched: bool | None, *, log: Log) -> dict:
    """The planted-item half of the report: dose-response curves over seeds, ED50 per optimizer, Muon vs AdamW,
    the causal effect of contamination; and the one report page (CPROX_HOME/reports/memorization.html)."""
    from cp_assets.lib.memorization import report_page

    with db.connect(read_only=True) as con:
        report_tables.ensure_readable(con, "planted_scores", "planted_checkpoint_scores")
        scores = [dict(zip(planted_scores.SCORE_COLUMNS, r)) for r in con.execute(
            f"SELECT {', '.join(planted_scores.SCORE_COLUMNS)} FROM planted_scores").fetchall()]
        ckpts = [dict(zip(dose_response.CHECKPOINT_COLUMNS, r)) for r in con.execute(
            f"SELECT {', '.join(dose_response.CHECKPOINT_COLUMNS)} FROM planted_checkpoint_scores").fetchall()]
        report_tables.ensure_readable(con, "planted_detection", "lr_sweep")
        sweep = [dict(zip(references.SWEEP_COLUMNS, r)) for r in con.execute(
            f"SELECT {', '.join(references.SWEEP_COLUMNS)} FROM lr_sweep ORDER BY optimizer, lr_scale").fetchall()]
        detected = [dict(zip(planted_detection.DETECTION_COLUMNS, r)) for r in con.execute(
            f"SELECT {', '.join(planted_detection.DETECTION_COLUMNS)} FROM planted_detection").fetchall()]
    curves = dose_response.pooled_curves(scores) if scores else []
    ed50s = dose_response.ed50(scores) if scores else []
    tests = dose_response.optimizer_tests(scores) if scores else []
    effects = dose_response.contamination_effect(scores) if scores else []
    matched_tests = dose_response.matched_tests(ckpts) if ckpts else {"tests": [], "why": "no checkpoint scores"}
    tail = dose_response.tail_buckets(scores)
    detection = planted_detection.detection_summary(detected) if detected else None
    member_view = planted_detection.membership_view(scores) if scores else []
    png = dose_response.curves_plot(curves, plot_path("dose_response.png")) if curves else None
    sft = [c for c in comparisons if c["comparison"] == "sft_vs_base" and c["metric"] == "answer_cosine"]
    sft_text = "; ".join(f"answers to {c['split']}: base {c['mean_a']:.3f} vs SFT {c['mean_b']:.3f} cosine distance "
                         f"(SFT - base {c['diff']:+.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}])" for c in sft
                         if c["mean_a"] is not None and c["diff"] is not None) \
        or "Not measured: needs rollouts and rollout_proximity of base and SFT models."
    page = report_page.write_page(settings.home() / "reports" / "memorization.html",
                                  experiment=ex.load_experiment().model_dump(), curves_png=png, curves=curves,
                                  ed50s=ed50s, tests=tests, effects=effects, matched=matched, sft_summary=sft_text,
                                  comparisons=comparisons, matched_tests=matched_tests, tail=tail,
                                  detection=detection, membership_view=member_view, sweep=sweep,
                                  sweep_text=references.sweep_sentence(references.best_lrs(sweep)))
    log(f"planted items: {len(scores)} scores over {len({s['model_id'] for s in scores})} models; page {page}")
    out = {"report_page": FilePath(str(page)), "planted_scores": len(scores),
           "ed50": Json(ed50s), "optimizer_tests": Json(tests), "contamination_effect": Json(effects),
           "matched_loss_tests": Json(matched_tests), "tail_recall": Json(tail),
           "planted_detection": Json(detection), "planted_membership": Json(member_view),
           "lr_sweep": Json(references.best_lrs(sweep))}
    if png is not None:
        out["dose_response"] = image(png, "planted items: dose response")
    return out
