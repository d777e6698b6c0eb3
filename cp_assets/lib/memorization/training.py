"""Training runs of the memorization lab, end to end: documents -> members / held-out -> tokenizer -> base model
(or SFT from a base) -> checkpoint registered as a model -> rows for the results DuckDB.

The asset bodies (`tiny_models`, `tiny_sft_models`) call `train_base` / `train_sft`. The shared tokenizer is trained
once (under a file lock) on documents that are neither members nor held out, and reused by every run, so runs differ
only by optimizer and seed.
A diverging run raises `TrainingDiverged` (from cp_assets.lib.tinygpt.train) after its failure is written; its earlier
checkpoints stay on disk. A checkpoint damaged on disk (it fails its sha256 manifest, see cp_assets.lib.core.integrity)
is a training result, not a cache: it is never rebuilt silently, and `CorruptCheckpoint` names the file and the
partition to re-materialize (`retrain_hint`).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

from cp_assets.lib.core import integrity
from cp_assets.lib.memorization import experiments as ex
from cp_assets.lib.memorization import planting
from cp_assets.lib.memorization.experiments import DocSplit, Experiment
from cp_assets.lib.tinygpt.checkpoint import CorruptCheckpoint, retrain_hint  # noqa: F401  (retrain_hint re-exported)

RUN_COLUMNS = ["model_id", "run", "stage", "optimizer", "seed", "status", "n_params", "tokens", "final_train_loss",
               "final_val_loss", "tokens_per_s", "seconds", "path", "error", "size", "finished_at"]
CURVE_COLUMNS = ["model_id", "step", "tokens", "train_loss", "val_loss", "lr", "seconds"]
DOC_COLUMNS = ["split", "doc_id", "role", "recall_quoted", "chars"]


def recall_quotes(samples: Iterable) -> list[str]:
    """The passages of the verbatim-recall set (prefix + continuation), CRLF read as LF: documents that contain one
    are made members, so the recall test asks about text the model really saw."""
    out = []
    for s in samples:
        text = (s.prefix + s.continuation).replace("\r\n", "\n")
        if len(text) >= 40:
            out.append(text)
    return out


def document_rows(split: str, docs: DocSplit) -> list[tuple]:
    """Role `member` (trained whole), `recall_excerpt` (only the passages around recall quotes), `heldout`."""
    forced = set(docs.recall_documents)
    return ([(split, d, "recall_excerpt" if d in forced else "member", d in forced, len(t)) for d, t in docs.members]
            + [(split, d, "heldout", False, len(t)) for d, t in docs.heldout])


def shared_tokenizer(texts: Sequence[str], vocab_size: int, log: Callable[[str], None] = print):
    """The experiment's BPE tokenizer: trained once from `texts` (documents disjoint from the members and the held-out
    ones, see `DocSplit.tokenizer_texts`; keyed by their hash), then loaded."""
    import hashlib

    from cp_assets.lib.tinygpt import model as tiny_gpt

    path = ex.tokenizer_path()
    key = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16] + f"-v{vocab_size}"
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = path.with_suffix(".key")
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path.exists() and stamp.exists() and stamp.read_text() == key):
            log(f"training the shared BPE tokenizer (vocab {vocab_size}) on {len(texts):,} member documents")
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
            tiny_gpt.train_tokenizer(list(texts), vocab_size, tmp)
            os.replace(tmp, path)
            stamp.write_text(key)
        return tiny_gpt.BPETokenizer.load(path)


def run_rows(model_id: str, run: str, stage: str, size: str, result=None, error: str | None = None,
          path: Path | None = None) -> tuple[list[tuple], list[tuple]]:
    optimizer, seed = ex.parse_run(run)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    if result is None:
        return [(model_id, run, stage, optimizer, seed, "failed", None, None, None, None, None, None,
                 str(path) if path else None, error, size, now)], []
    curve = [(model_id, int(r["step"]), int(r["tokens"]), r.get("train_loss"), r.get("val_loss"), r.get("lr"),
              r.get("seconds")) for r in result.curve]
    return [(model_id, run, stage, optimizer, seed, "ok", result.n_params, result.tokens, result.final_train_loss,
             result.final_val_loss, result.tokens_per_s, result.seconds, str(path), None, size, now)], curve


def plant(member_texts: list[str], experiment: Experiment, tokenizer, plant_samples: dict | None,
          log: Callable[[str], None] = print) -> tuple[list[str], list[tuple]]:
    """The member texts with the experiment's planted copies inserted, and the `planted_items` rows (none planted:
    the texts as they are, no rows)."""
    spec = experiment.plant
    if spec is None:
        return member_texts, []
    items = planting.planted_items(spec, plant_samples or {}, lambda t: len(tokenizer.encode(t)))
    texts, where = planting.insert(member_texts, items, spec.seed)
    copies = sum(it.dose for it in items)
    log(f"planted {len(items)} items ({', '.join(f'{k} {sum(it.kind == k for it in items)}' for k in planting.KINDS)}"
        f"; doses {spec.doses}): {copies:,} copies, {sum(len(it.text) * it.dose for it in items):,} characters")
    return texts, planting.planted_rows(items, where)


def train_base(docs: Iterable[tuple[str, str]], quotes: Sequence[str], experiment: Experiment, run: str, *,
               lr_scale: float = 1.0, plant_samples: dict | None = None, reference: bool = False,
               out_as: tuple[str, Path, str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Train one base run; returns {'result', 'docs', 'runs_rows', 'curve_rows', 'doc_rows', 'planted_rows',
    'path', 'model_id'}. `reference`: the reference model instead (AdamW, the run's seed, nothing planted).
    `out_as`: (model id, checkpoint folder, stage) of a run that is not the experiment's own (the LR sweep's).
    On divergence, `TrainingDiverged` carries `rows` (the failure row) as an attribute."""
    from cp_assets.lib.tinygpt import train

    spec = experiment.base
    optimizer, seed = ex.parse_run(run)
    chosen = ex.choose_members(docs, member_chars=spec.member_chars, heldout_documents=spec.heldout_documents,
                               quotes=quotes if spec.include_recall_documents else (),
                               tokenizer_chars=spec.tokenizer_chars)
    size = train.SIZES[spec.size]
    tok_texts, tok_source = chosen.tokenizer_texts()
    if tok_source != "disjoint":
        log("WARNING: no documents are left after the members and the held-out ones: the tokenizer is trained on "
            "the members (membership scores then see a vocabulary fitted to them)")
    tokenizer = shared_tokenizer(tok_texts, size.vocab_size, log)
    member_texts, val_texts = [t for _, t in chosen.members], [t for _, t in chosen.heldout]
    planted_rows: list[tuple] = []
    if not reference:
        member_texts, planted_rows = plant(member_texts, experiment, tokenizer, plant_samples, log)
    member_tokens = sum(map(len, tokenizer.encode_batch(member_texts)))
    cfg = train.TrainConfig(optimizer=optimizer, seed=seed, total_tokens=int(spec.epochs * member_tokens),
                            target_val_loss=spec.target_val_loss, lr_scale=lr_scale)
    model_id, out = ex.base_model_id(run), ex.run_dir(run, "base")
    stage = "reference" if reference else "base"
    if reference:
        model_id, out = ex.REFERENCE_MODEL, ex.reference_dir()
    if out_as:
        model_id, out, stage = out_as
    log(f"{model_id}: {len(member_texts):,} member documents ({member_tokens:,} tokens, "
        f"{len(chosen.recall_documents)} quoted by the recall set), {len(val_texts):,} held out; {cfg}")
    try:
        result = train.train(member_texts, val_texts, size, cfg, out, tokenizer=tokenizer, log=log)
    except train.TrainingDiverged as exc:
        exc.rows = run_rows(model_id, run, stage, spec.size, error=str(exc), path=out)
        raise
    _write_members(out, experiment.base.split, chosen)
    runs_rows, curve_rows = run_rows(model_id, run, stage, spec.size, result, path=out)
    return {"result": result, "docs": chosen, "runs_rows": runs_rows, "curve_rows": curve_rows, "path": out,
            "model_id": model_id, "doc_rows": document_rows(experiment.base.split, chosen), "config": cfg,
            "planted_rows": planted_rows, "stream": member_texts if planted_rows else []}


def train_sft(docs: Iterable[tuple[str, str]], experiment: Experiment, run: str, *, lr_scale: float = 1.0,
              log: Callable[[str], None] = print) -> dict:
    """Fine-tune the run's base checkpoint on the SFT split (its tokenizer reused)."""
    from cp_assets.lib.tinygpt import model as tiny_gpt
    from cp_assets.lib.tinygpt import train

    optimizer, seed = ex.parse_run(run)
    base = ex.run_dir(run, "base")
    if not (base / "config.json").exists():
        raise FileNotFoundError(f"no base checkpoint for run {run!r} at {base}: materialize `tiny_models` first")
    try:
        tiny_gpt.verify_checkpoint(base)
    except integrity.CorruptFile as exc:
        raise CorruptCheckpoint(exc, base) from None
    sft_docs = ex.sft_documents(docs, experiment.sft.max_chars)
    n_val = max(2, len(sft_docs) // 20)
    val, train_docs = sft_docs[:n_val], sft_docs[n_val:]
    texts = [t for _, t in train_docs]
    tokenizer = tiny_gpt.BPETokenizer.load(base)
    sft_tokens = sum(map(len, tokenizer.encode_batch(texts)))
    cfg = train.TrainConfig.sft(optimizer, seed, total_tokens=int(experiment.sft.epochs * sft_tokens))
    if lr_scale != 1.0:
        cfg = dataclasses.replace(cfg, lr_scale=cfg.lr_scale * lr_scale)
    model_id, out = ex.sft_model_id(run), ex.run_dir(run, "sft")
    log(f"{model_id}: fine-tuning {base} on {len(texts):,} {experiment.sft.split} documents "
        f"({sft_tokens:,} tokens), {n_val} held out; {cfg}")
    try:
        result = train.train(texts, [t for _, t in val], None, cfg, out, init_from=base, log=log)
    except train.TrainingDiverged as exc:
        exc.rows = run_rows(model_id, run, "sft", experiment.base.size, error=str(exc), path=out)
        raise
    (out / "sft_documents.json").write_text(json.dumps({"split": experiment.sft.split,
                                                        "train": [d for d, _ in train_docs],
                                                        "heldout": [d for d, _ in val]}))
    runs_rows, curve_rows = run_rows(model_id, run, "sft", experiment.base.size, result, path=out)
    return {"result": result, "runs_rows": runs_rows, "curve_rows": curve_rows, "path": out, "model_id": model_id,
            "config": cfg, "n_documents": len(texts)}


def _write_members(out: Path, split: str, docs: DocSplit) -> None:
    (out / "members.json").write_text(json.dumps({"split": split, "members": docs.whole_member_ids(),
                                                  "heldout": [d for d, _ in docs.heldout],
                                                  "recall_documents": docs.recall_documents,
                                                  "tokenizer_source": docs.tokenizer_texts()[1],
                                                  "tokenizer_documents": [d for d, _ in docs.tokenizer_docs]}))


def members_of(model_path: Path | str) -> dict | None:
    """The member / held-out document ids a trained model saw ({'split', 'members', 'heldout'}), or None for models
    trained elsewhere. An SFT model's file points at its base's (its base members are members too)."""
    path = Path(model_path)
    for candidate in (path / "members.json", path.parent.parent / "base" / path.name / "members.json"):
        if candidate.exists():
            return json.loads(candidate.read_text())
    return None
