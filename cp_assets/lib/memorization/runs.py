"""One model's memorization tests, as rows for the results DuckDB: verbatim recall, Carlini-style extraction from a
split, and membership inference on a labelled member / non-member set. Called by the asset bodies
(`verbatim_recall`, `extraction`, `membership`); the scores themselves live in recall_scores, extraction and
membership.

Labelled sets: a model trained here knows exactly which documents it saw (`members.json`, written by
`tiny_models`); its members are those documents (an SFT model's too: it started from them) and its non-members the
held-out documents of the same split. For a model trained elsewhere the same two sets are used, but the labels are
only a proxy (`labels = 'proxy'`): nobody here knows what it trained on.
"""

from __future__ import annotations

import random
import time
from typing import Callable, Sequence

from cp_assets.lib.evals.generation import GenerationError, SamplingParams
from cp_assets.lib.evals.scoring import ScoringUnavailable
from cp_assets.lib.memorization import extraction as ext
from cp_assets.lib.memorization import membership as mia
from cp_assets.lib.memorization import recall as recall_scores
from cp_assets.lib.memorization.training import members_of
from cp_assets.lib.reports import report_tables

RECALL_COLUMNS = ["model_id", "sample_id", "category", "title", "exact", "normalized", "char_distance",
                  "word_distance", "char_similarity", "word_similarity", "prefix_words", "n_words", "completion",
                  "params_hash"]
EXTRACTION_COLUMNS = ["model_id", "split", "text_id", "doc_id", "member", "prefix_tokens", "suffix_tokens", "exact",
                      "matching_prefix", "token_match_fraction", "char_distance", "char_similarity", "target_text",
                      "generated_text"]
MEMBERSHIP_COLUMNS = ["model_id", "text_id", "doc_id", "member", "n_tokens", "truncated", "score", "value"]
AUROC_COLUMNS = ["model_id", "score", "labels", "n_members", "n_nonmembers", "auroc", "ci_low", "ci_high",
                 "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "reason", "tpr_at_01pct_fpr"]


# ---------------------------------------------------------------------------------------------- verbatim recall
def recall_rows(model_id: str, samples: Sequence, rollouts: Sequence) -> list[tuple]:
    """Score each stored greedy rollout of the recall set against its sample's continuation."""
    by_id = {s.id: s for s in samples}
    rows = []
    for r in rollouts:
        s = by_id.get(r.sample_id)
        if s is None:
            continue
        sc = recall_scores.score_recall(s.continuation, r.completion)
        rows.append((model_id, s.id, s.category, s.title, sc.exact, sc.normalized, sc.char_distance,
                     sc.word_distance, sc.char_similarity, sc.word_similarity, sc.prefix_words, sc.n_words,
                     r.completion, r.params_hash))
    return rows


def recall_params(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0, logprobs=False)


# ---------------------------------------------------------------------------------------------- extraction
def _ids_capability(backend) -> None:
    if not hasattr(backend, "generate_from_ids") or not hasattr(backend, "tokenizer"):
        raise GenerationError(backend.model_id, f"extraction needs exact token prefixes: the {backend.backend} "
                              "backend cannot continue from token ids (use a local, tiny or vllm model)")


def extraction_rows(backend, split: str, docs: Sequence[tuple[str, str]], members: set[str] | None, *,
                    prefix_tokens: int = 32, suffix_tokens: int = 32, n: int = 200, seed: int = 0,
                    batch_size: int = 16, max_doc_chars: int = 20_000,
                    log: Callable[[str], None] = print) -> tuple[list[tuple], dict]:
    """Sample `n` windows of P + S tokens from the split's documents (the model's tokenizer), greedy-generate S
    tokens after each P-token prefix, and score them. `members`: the documents the model trained on (None: unknown)."""
    _ids_capability(backend)
    limit = backend.context_length() if hasattr(backend, "context_length") else None
    if limit is not None and prefix_tokens + suffix_tokens > limit:
        raise GenerationError(backend.model_id, f"extraction windows of {prefix_tokens} + {suffix_tokens} tokens "
                              f"exceed the model's context length {limit}: lower prefix_tokens / suffix_tokens")
    tok = backend.tokenizer
    docs = [(d, t[:max_doc_chars]) for d, t in docs]
    ids = [tok.encode(t) for _, t in docs]
    prompts = ext.make_prompts(ids, prefix_tokens=prefix_tokens, suffix_tokens=suffix_tokens, n=n, seed=seed)
    log(f"{backend.model_id} x {split}: {len(prompts)} extraction prompts (P={prefix_tokens}, S={suffix_tokens}) "
        f"from {len(docs):,} documents")
    rows, t0 = [], time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        outs = backend.generate_from_ids([list(p.prefix_ids) for p in batch], suffix_tokens)
        for p, gen in zip(batch, outs):
            doc_id = docs[p.text_index][0]
            target_text, gen_text = tok.decode(list(p.target_ids)), tok.decode(list(gen))
            sc = ext.score_extraction(list(p.target_ids), list(gen), target_text, gen_text)
            rows.append((backend.model_id, split, f"{doc_id}@{p.offset}", doc_id,
                         None if members is None else doc_id in members, prefix_tokens, suffix_tokens,
                         sc["exact"], sc["matching_prefix"], sc["token_match_fraction"], sc["char_distance"],
                         sc["char_similarity"], target_text, gen_text))
        done = start + len(batch)
        log(f"{backend.model_id} x {split}: {done}/{len(prompts)} prompts "
            f"({done / (time.perf_counter() - t0):.1f}/s)")
    return rows, {"prompts": len(prompts), "seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------------------------------------- membership
def passages(docs: Sequence[tuple[str, str]], n: int, words: int, seed: int) -> list[tuple[str, str, str]]:
    """Up to `n` passages of `words` words (text_id, doc_id, text), one per document, at seeded offsets."""
    rng = random.Random(seed)
    picked = list(docs)
    rng.shuffle(picked)
    out = []
    for doc_id, text in picked:
        w = text.split()
        if len(w) < words:
            continue
        start = rng.randrange(0, len(w) - words + 1)
        out.append((f"{doc_id}@{start}", doc_id, " ".join(w[start:start + words])))
        if len(out) >= n:
            break
    return out


def membership_rows(backend, members: Sequence[tuple[str, str, str]], nonmembers: Sequence[tuple[str, str, str]],
                    *, labels: str, max_tokens: int = 256, batch_size: int = 16, ks: Sequence[int] = (10, 20, 50),
                    lira: tuple[dict, dict] | None = None,
                    log: Callable[[str], None] = print) -> tuple[list[tuple], list[tuple], list[tuple], dict]:
    """Score every passage with the model (teacher forcing), compute the membership scores, the AUROC of each at
    telling members from non-members (and of the text-only blind baseline), and dataset inference over the sets.
    Returns (score rows, AUROC rows, dataset-inference rows, figures). Raises ScoringUnavailable when the model gives
    no token logprobs. `lira`: (doc id -> half, half -> reference backend) of the LiRA references
    (`references.py`): adds the scores `ref_out` and `lira`."""
    if not hasattr(backend, "score"):
        raise ScoringUnavailable(backend.model_id, f"the {backend.backend} backend gives no token logprobs for a "
                                 "given text, which membership inference needs")
    items = [(t, d, x, True) for t, d, x in members] + [(t, d, x, False) for t, d, x in nonmembers]
    rows, per_text, t0 = [], [], time.perf_counter()
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        for (text_id, doc_id, _, member), ts in zip(batch, backend.score([x for _, _, x, _ in batch],
                                                                       max_tokens=max_tokens)):
            values = mia.scores(ts, ks=ks)
            per_text.append({"member": member, **values})
            rows.extend((backend.model_id, text_id, doc_id, member, ts.n_tokens, ts.truncated, name, value)
                        for name, value in values.items())
        done = start + len(batch)
        log(f"{backend.model_id}: scored {done}/{len(items)} passages ({done / (time.perf_counter() - t0):.1f}/s)")
    if lira:
        from cp_assets.lib.memorization.references import lira_scores

        side, refs = lira
        got = lira_scores([x for _, _, x, _ in items], [d for _, d, _, _ in items], [r["loss"] for r in per_text],
                          side, refs, max_tokens=max_tokens)
        for (text_id, doc_id, _, member), row, (ref_out, lr) in zip(items, per_text, got):
            row["ref_out"], row["lira"] = ref_out, lr
            rows += [(backend.model_id, text_id, doc_id, member, None, None, "ref_out", ref_out),
                     (backend.model_id, text_id, doc_id, member, None, None, "lira", lr)]
        log(f"{backend.model_id}: LiRA references scored {len(items)} passages")
    blind = mia.blind_scores([x for _, _, x, _ in items], [m for *_, m in items])
    for (text_id, doc_id, _, member), row, value in zip(items, per_text, blind):
        row["blind_bow"] = value  # the text-only baseline: never asks the model
        rows.append((backend.model_id, text_id, doc_id, member, None, None, "blind_bow", value))
    evaluated = mia.evaluate(per_text)
    inference = mia.dataset_inference(backend.model_id, per_text, [k for k in per_text[0] if k not in
                                                                   ("member", "blind_bow")] if per_text else [])
    aurocs = [(backend.model_id, e["score"], labels, e["n_members"], e["n_nonmembers"], e["auroc"], e["ci_low"],
               e["ci_high"], e["tpr_at_1pct_fpr"], e["tpr_at_5pct_fpr"], e.get("reason"), e["tpr_at_01pct_fpr"])
              for e in evaluated]
    return rows, aurocs, inference, {"passages": len(items), "members": len(members), "nonmembers": len(nonmembers),
                                     "labels": labels, "seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------------------------------------- labels and tables
def trained_members(spec) -> dict | None:
    """members.json of a model trained here ({'split', 'members', 'heldout', ...}), None for any other model."""
    return members_of(spec.path) if spec.backend == "tiny" and spec.path else None


def labelled_documents(spec, con, base_split: str) -> tuple[str, str, set, set]:
    """(split, labels, member ids, non-member ids): the model's own members.json when it was trained here
    (`exact`), else the experiment's member / held-out documents from `training_documents` (`proxy`)."""
    info = trained_members(spec)
    if info:
        return info["split"], "exact", set(info["members"]), set(info["heldout"])
    report_tables.ensure_readable(con, "training_documents")
    rows = con.execute("SELECT doc_id, role FROM training_documents WHERE split = ?", [base_split]).fetchall()
    if not rows:
        raise ValueError(f"model {spec.id!r} was not trained here and no labelled set exists yet: materialize one "
                         f"`tiny_models` partition first (it writes the {base_split!r} member / held-out documents)")
    return base_split, "proxy", {d for d, r in rows if r == "member"}, {d for d, r in rows if r == "heldout"}


def scores_by_class(rows: Sequence[tuple]) -> dict[str, tuple[list, list]]:
    """score -> (member values, non-member values) from `membership_rows` rows, for `membership.roc_plot`."""
    out: dict[str, tuple[list, list]] = {}
    for _, _, _, member, _, _, score, value in rows:
        if value is not None:
            out.setdefault(score, ([], []))[0 if member else 1].append(value)
    return out


def _cell(text, width: int = 70) -> str:
    return str(text)[:width].replace("|", "/").replace("\n", " ")


def _fmt(x) -> str:
    return "n/a" if x is None or x != x else f"{x:.3f}"


def recall_markdown(rows: Sequence[tuple], top: int = 10) -> str:
    """The `top` recall rows with the most matching words."""
    best = sorted(rows, key=lambda r: (-r[10], r[1]))[:top]
    return "| item | category | matching words | completion |\n|---|---|---|---|\n" + "\n".join(
        f"| {r[1]} | {r[2]} | {r[10]}/{r[11]} | {_cell(r[12], 80)} |" for r in best)


def extraction_markdown(named: Sequence[dict], suffix_tokens: int, top: int = 5) -> str:
    """The `top` windows whose generation matches the most target tokens."""
    best = sorted(named, key=lambda r: (-r["matching_prefix"], r["text_id"]))[:top]
    return "| window | matched tokens | target | generated |\n|---|---|---|---|\n" + "\n".join(
        f"| {r['text_id']} | {r['matching_prefix']}/{suffix_tokens} | {_cell(r['target_text'])} | "
        f"{_cell(r['generated_text'])} |" for r in best)


def auroc_markdown(aurocs: Sequence[tuple]) -> str:
    named = [dict(zip(AUROC_COLUMNS, a)) for a in aurocs]
    n = max((a["n_nonmembers"] or 0 for a in named), default=0)
    return (f"n = {max((a['n_members'] or 0 for a in named), default=0)} members, {n} non-members (TPR at 0.1% FPR "
            f"needs 1,000+ non-members to mean anything)\n\n"
            "| score | AUROC [95% CI] | TPR@0.1%FPR | TPR@1%FPR | TPR@5%FPR |\n|---|---|---|---|---|\n" + "\n".join(
                f"| {a['score']} | {_fmt(a['auroc'])} [{_fmt(a['ci_low'])}, {_fmt(a['ci_high'])}] | "
                f"{_fmt(a['tpr_at_01pct_fpr'])} | {_fmt(a['tpr_at_1pct_fpr'])} | {_fmt(a['tpr_at_5pct_fpr'])} |"
                for a in named))
