"""Models trained only to judge the lab's own: the LiRA reference models and the learning-rate sweep (no dagster).

LiRA references (Carlini et al. 2022, "Membership Inference Attacks From First Principles", online, with one IN and
one OUT model per passage): the passages the `membership` test scores (its defaults: 150 a class, 64 words, seed 0;
`runs.passages` over the member documents trained whole and over the held-out ones) are cut by a seeded hash of their
document id into halves `a` and `b`. Reference `a` trains on half a's passages, each in `CONTEXT_WORDS` words of its
document on either side (a held-out document can be a whole play: training on whole documents would cost several
base runs), `b` on half b's, each like the base runs (same size, tokenizer and epochs; AdamW, the first seed; nothing
planted), validating on the other half. Every passage of the membership test is then IN for one reference and OUT
for the other (a `membership` run with other n / words / seed gets no LiRA scores and says so),
and `lira_scores` gives, from mean token logprobs l (target), l_in, l_out (references):
- `ref_out` = l - l_out: the reference-model attack (offline: only the model that never saw the passage);
- `lira` = [(l - l_out)^2 - (l - l_in)^2] / (2 s^2): the log-likelihood ratio of l under Gaussians centred on l_in
  and l_out with one global variance s^2 (the variance of l_in - l_out over the passages; LiRA's fixed-variance
  variant, the one it recommends with few reference models). Both are higher = member.
The references' halves are in `halves.json`; they are registered as models `tiny-lira-a` and `tiny-lira-b`.

The learning-rate sweep (`lr_sweep` in training.yaml): every optimizer of the experiment trained at each multiple
of its learning rates, at the first seed, on the same members with the same planted items and the same token budget;
table `lr_sweep` has the final validation loss and the greedy extraction of the planted canaries and facts per point.
The multiple 1.0 is the experiment's own run (`tiny_models`), read from its rows, not trained again. `best_lrs` picks
each optimizer's best multiple by validation loss, so the report can say whether the comparison ran at each
optimizer's best learning rate.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cp_assets.lib.memorization import experiments as ex

Log = Callable[[str], None]
HALVES = ("a", "b")
PASSAGES = {"n": 150, "words": 64, "seed": 0}  # the `membership` asset's defaults (MembershipConfig)
CONTEXT_WORDS = 250
SWEEP_COLUMNS = ["optimizer", "seed", "lr_scale", "model_id", "source", "final_val_loss", "tokens", "seconds",
                 "n_items", "greedy_canary", "greedy_fact", "top_dose"]


def lira_model_id(half: str) -> str:
    return f"tiny-lira-{half}"


def halves(doc_ids: Sequence[str], seed: int = 0) -> dict[str, str]:
    """doc id -> 'a' or 'b', by a seeded hash (about half each; the same for any order of the ids)."""
    return {d: HALVES[int(hashlib.sha256(f"cprox-lira:{seed}:{d}".encode()).hexdigest(), 16) % 2] for d in doc_ids}


def passage_excerpts(docs, chosen, *, n: int, words: int, seed: int, context: int = CONTEXT_WORDS) -> dict:
    """doc id -> (passage text id, the passage with `context` words of its document on either side), for the
    passages `membership` scores (the same documents in the same order, the same `runs.passages`)."""
    from cp_assets.lib.memorization.runs import passages

    whole, heldout = set(chosen.whole_member_ids()), {d for d, _ in chosen.heldout}
    pool = [d for d in docs if d[0] in whole | heldout]
    texts = dict(pool)
    out = {}
    for ids in (whole, heldout):
        for text_id, doc_id, _ in passages([d for d in pool if d[0] in ids], n, words, seed):
            w = texts[doc_id].split()
            start = int(text_id.rpartition("@")[2])
            out[doc_id] = (text_id, " ".join(w[max(0, start - context):start + words + context]))
    return out


def train_lira_references(docs, quotes: Sequence[str], experiment, *, log: Log = print) -> list[dict]:
    """Train references `a` and `b` on the two halves of the membership passages (in context); returns each one's
    training output ({'model_id', 'path', 'result', 'runs_rows', 'curve_rows', 'config', 'n_documents'})."""
    from cp_assets.lib.memorization import training
    from cp_assets.lib.tinygpt import train

    spec = experiment.base
    docs = list(docs)
    chosen = ex.choose_members(docs, member_chars=spec.member_chars, heldout_documents=spec.heldout_documents,
                               quotes=quotes if spec.include_recall_documents else (),
                               tokenizer_chars=spec.tokenizer_chars)
    excerpts = passage_excerpts(docs, chosen, **PASSAGES)
    side = halves(list(excerpts), seed=spec.seeds[0])
    size = train.SIZES[spec.size]
    tokenizer = training.shared_tokenizer(chosen.tokenizer_texts()[0], size.vocab_size, log)
    root = ex.lira_dir()
    root.mkdir(parents=True, exist_ok=True)
    run = ex.run_id("adamw", spec.seeds[0])
    outs = []
    for half in HALVES:
        texts = [t for d, (_, t) in excerpts.items() if side[d] == half]
        val = [t for d, (_, t) in excerpts.items() if side[d] != half][:40]
        n_tokens = sum(map(len, tokenizer.encode_batch(texts)))
        cfg = train.TrainConfig(optimizer="adamw", seed=spec.seeds[0], total_tokens=int(spec.epochs * n_tokens),
                                n_checkpoints=0)
        model_id, out = lira_model_id(half), root / half
        log(f"{model_id}: {len(texts):,} passages of half {half} in context ({n_tokens:,} tokens); {cfg}")
        try:
            result = train.train(texts, val, size, cfg, out, tokenizer=tokenizer, log=log)
        except train.TrainingDiverged as exc:
            exc.rows = training.run_rows(model_id, run, "lira", spec.size, error=str(exc), path=out)
            exc.model_id = model_id  # half b's divergence is recorded as half b's
            raise
        runs_rows, curve_rows = training.run_rows(model_id, run, "lira", spec.size, result, path=out)
        outs.append({"model_id": model_id, "path": out, "result": result, "runs_rows": runs_rows,
                     "curve_rows": curve_rows, "config": cfg, "n_documents": len(texts)})
    (root / "halves.json").write_text(json.dumps({"split": spec.split, "halves": side, "passages": PASSAGES,
                                                  "passage_ids": {d: t for d, (t, _) in excerpts.items()}}))
    return outs


def lira_halves(split: str, n: int, words: int, seed: int) -> tuple[dict[str, str] | None, str | None]:
    """(doc id -> half, None) of trained references over `split` whose passages are those of a membership run with
    these n / words / seed; else (None, why not)."""
    path = ex.lira_dir() / "halves.json"
    if not path.exists() or not all((ex.lira_dir() / h / "config.json").exists() for h in HALVES):
        return None, "no LiRA references (materialize `lira_references`)"
    info = json.loads(path.read_text())
    if info.get("split") != split:
        return None, f"the LiRA references are of split {info.get('split')!r}, not {split!r}"
    if info.get("passages") != {"n": n, "words": words, "seed": seed}:
        return None, (f"the LiRA references trained on the passages of n/words/seed {info.get('passages')}, this "
                      f"membership run scores n={n}, words={words}, seed={seed}")
    return info["halves"], None


def lira_scores(texts: Sequence[str], doc_ids: Sequence[str], target: Sequence[float | None], side: dict[str, str],
                references: dict, *, max_tokens: int = 256) -> list[tuple[float | None, float | None]]:
    """(ref_out, lira) per passage; `target`: the target model's mean token logprob of each; `references`: half ->
    backend with `score`. A passage outside both halves, or without a score, gets (None, None)."""
    from cp_assets.lib.memorization.membership import loss

    ref = {h: [loss(ts) for ts in references[h].score(list(texts), max_tokens=max_tokens)] for h in HALVES}
    pairs = []
    for i, d in enumerate(doc_ids):
        h = side.get(d)
        if h is None or target[i] is None or ref["a"][i] is None or ref["b"][i] is None:
            pairs.append(None)
            continue
        pairs.append((target[i], ref[h][i], ref["b" if h == "a" else "a"][i]))
    diffs = [li - lo for p in pairs if p for _, li, lo in [p]]
    s2 = float(np.var(diffs)) if len(diffs) > 1 and np.var(diffs) > 0 else 1.0
    return [(None, None) if p is None else (p[0] - p[2], ((p[0] - p[2]) ** 2 - (p[0] - p[1]) ** 2) / (2 * s2))
            for p in pairs]


def sweep_points(experiment) -> list[tuple[str, float]]:
    """(optimizer, lr multiple) of every run the sweep trains (the multiple 1.0 is the experiment's own run)."""
    return [(o, s) for o in experiment.base.optimizers for s in experiment.base.lr_sweep if not math.isclose(s, 1.0)]


def greedy_by_kind(rows: Sequence[dict]) -> tuple[int, float | None, float | None, int | None]:
    """(n items, greedy extraction of canaries, of facts) at the top dose of `planted_scores`-like rows, and that
    dose."""
    top = max((r["dose"] for r in rows if r["kind"] in ("canary", "fact")), default=None)
    out = []
    for kind in ("canary", "fact"):
        g = [r["greedy_extracted"] for r in rows if r["kind"] == kind and r["dose"] == top]
        out.append(sum(g) / len(g) if g else None)
    return len(rows), out[0], out[1], top


def sweep_row(optimizer: str, seed: int, scale: float, model_id: str, source: str, result, rows: Sequence[dict]):
    n, canary, fact, top = greedy_by_kind(rows)
    return (optimizer, seed, scale, model_id, source, result["final_val_loss"], result["tokens"], result["seconds"],
            n, canary, fact, top)


def best_lrs(rows: Sequence[dict]) -> list[dict]:
    """Per optimizer: the multiple with the lowest final validation loss, and whether it is the default (1.0)."""
    out = []
    for opt in sorted({r["optimizer"] for r in rows}):
        mine = [r for r in rows if r["optimizer"] == opt and r["final_val_loss"] is not None]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["final_val_loss"])
        default = next((r for r in mine if math.isclose(r["lr_scale"], 1.0)), None)
        out.append({"optimizer": opt, "best_lr_scale": best["lr_scale"], "best_val_loss": best["final_val_loss"],
                    "default_val_loss": default["final_val_loss"] if default else None,
                    "points": len(mine), "default_is_best": bool(default) and math.isclose(best["lr_scale"], 1.0)})
    return out


def sweep_sentence(best: Sequence[dict]) -> str:
    if not best:
        return "No learning-rate sweep (training.yaml base.lr_sweep is empty, or lr_sweep was not materialized)."
    parts = [f"{b['optimizer']}: best multiple {b['best_lr_scale']:g} (val loss {b['best_val_loss']:.3f}"
             + (f"; the default 1.0 gives {b['default_val_loss']:.3f}" if b["default_val_loss"] is not None else "")
             + f"; {b['points']} points)" for b in best]
    fair = all(b["default_is_best"] for b in best)
    return ("Learning-rate sweep at the same budget: " + "; ".join(parts) + ". "
            + ("Each optimizer's default learning rate is its best: the comparison runs at the best of each."
               if fair else "Not every optimizer's default learning rate is its best: the seeds compare them at "
                            "the defaults, so read the optimizer difference next to the sweep."))



# ---------------------------------------------------------------------------------------------- the assets' work
def materialize_lira_references(store, db, *, log: Log = print) -> dict:
    """`lira_references`: train both references, register them, record their training rows."""
    from cp_assets.lib.evals.eval_registry import load_evals
    from cp_assets.lib.memorization import materialize as mat

    experiment = ex.load_experiment()
    docs = mat.split_documents(store, experiment.base.split)
    quotes = mat.recall_quotes_of(load_evals())
    outs = mat.train_recorded(db, lira_model_id("a"), lambda: train_lira_references(docs, quotes, experiment, log=log))
    meta: dict = {"split": experiment.base.split}
    for out in outs:
        ex.register(out["model_id"], out["path"], f"LiRA reference on half {out['model_id'][-1]} of the "
                                                  f"membership pool of {experiment.base.split}")
        mat.record_training(db, out["model_id"], (out["runs_rows"], out["curve_rows"]))
        meta[f"{out['model_id']}_documents"] = out["n_documents"]
        meta[f"{out['model_id']}_val_loss"] = out["result"].final_val_loss
    return meta | {"seconds": round(sum(o["result"].seconds for o in outs), 1)}


def materialize_lr_sweep(store, db, *, log: Log = print) -> dict:
    """`lr_sweep`: train every (optimizer, multiple) of the sweep, score its planted items (greedy), read the
    multiple 1.0 from the experiment's own runs; table `lr_sweep`, and a plot of validation loss by multiple."""
    from cp_assets.lib.core.metadata import Markdown, image, table
    from cp_assets.lib.evals.eval_registry import load_evals
    from cp_assets.lib.memorization import materialize as mat
    from cp_assets.lib.memorization import planted_scores, planting, training
    from cp_assets.lib.reports import report_tables
    from cp_assets.lib.tinygpt.model import load_checkpoint

    experiment = ex.load_experiment()
    if not experiment.base.lr_sweep:
        raise ValueError(f"{ex.training_file()}: base.lr_sweep is empty, so there is no sweep to train")
    seed = experiment.base.seeds[0]
    docs = mat.split_documents(store, experiment.base.split)
    evals = load_evals()
    quotes = mat.recall_quotes_of(evals)
    plant_samples = ({name: evals.load_samples(name) for name in experiment.plant.eval_sets}
                     if experiment.plant and experiment.plant.eval_per_dose else {})
    rows = []
    for opt, scale in sweep_points(experiment):
        run, out_dir = ex.run_id(opt, seed), ex.sweep_dir(opt, scale, seed)
        model_id = f"tiny-sweep-{opt}-lr{scale:g}-s{seed}"
        out = mat.train_recorded(db, model_id, lambda: training.train_base(
            docs, quotes, experiment, run, lr_scale=scale, plant_samples=plant_samples,
            out_as=(model_id, out_dir, "sweep"), log=log))
        mat.record_training(db, model_id, (out["runs_rows"], out["curve_rows"]))
        scored = []
        if out["planted_rows"]:
            model, tokenizer = load_checkpoint(out_dir)
            scored = planted_scores.score_model(model, tokenizer, planting.items_from_rows(out["planted_rows"]),
                                                experiment.plant, run=run, model_id=model_id, full=False, log=log)
        result = {"final_val_loss": out["result"].final_val_loss, "tokens": out["result"].tokens,
                  "seconds": out["result"].seconds}
        rows.append(sweep_row(opt, seed, scale, model_id, "lr_sweep", result,
                              [dict(zip(planted_scores.SCORE_COLUMNS, r)) for r in scored]))
        log(f"lr sweep: {opt} x {scale:g}: val loss {result['final_val_loss']:.3f}")
    with db.connect() as con:
        report_tables.ensure(con, "training_runs", "planted_scores")
        for opt in experiment.base.optimizers:  # the multiple 1.0: the experiment's own run at the first seed
            model_id = ex.base_model_id(ex.run_id(opt, seed))
            got = con.execute("SELECT final_val_loss, tokens, seconds FROM training_runs WHERE model_id = ? AND "
                              "status = 'ok'", [model_id]).fetchone()
            if got is None:
                log(f"lr sweep: {model_id} is not trained yet: the multiple 1.0 of {opt} is missing")
                continue
            scored = [dict(zip(["kind", "dose", "greedy_extracted"], r)) for r in con.execute(
                "SELECT kind, dose, greedy_extracted FROM planted_scores WHERE model_id = ?", [model_id]).fetchall()]
            rows.append(sweep_row(opt, seed, 1.0, model_id, "tiny_models",
                                  dict(zip(["final_val_loss", "tokens", "seconds"], got)), scored))
        rows.sort(key=lambda r: (r[0], r[2]))
        report_tables.replace_rows(con, "lr_sweep", {}, SWEEP_COLUMNS, rows)
    named = [dict(zip(SWEEP_COLUMNS, r)) for r in rows]
    best = best_lrs(named)
    png = sweep_plot(named, mat.plot_path("lr_sweep.png"))
    return {"points": len(rows), "best": Markdown(sweep_sentence(best)),
            "sweep": table(named, {"optimizer": "optimizer", "lr_scale": "lr x", "final_val_loss": "val loss",
                                   "greedy_canary": "canaries extracted (top dose)",
                                   "greedy_fact": "facts extracted (top dose)", "source": "from"}, digits=3),
            "plot": image(png, "validation loss by learning-rate multiple")}


def sweep_plot(rows: Sequence[dict], path: Path) -> Path:
    from cp_assets.lib.core.plots import pyplot

    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    for opt in sorted({r["optimizer"] for r in rows}):
        pts = sorted((r["lr_scale"], r["final_val_loss"]) for r in rows if r["optimizer"] == opt
                     and r["final_val_loss"] is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=opt)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning-rate multiple (1 = the experiment's default)")
    ax.set_ylabel("final validation loss")
    ax.set_title("learning-rate sweep, same token budget")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
