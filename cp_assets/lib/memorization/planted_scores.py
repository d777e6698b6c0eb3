"""Score one trained model on every planted item (table `planted_scores`, one row per model x item).

Per item, with the model's own tokenizer (`<|endoftext|>` + prefix; the secret is the rest of the text's ids):
- `greedy_extracted`: greedy decoding from the prefix reproduces the secret's ids exactly (an eval item's secret is
  the first `eval_secret_tokens` tokens of its solution);
- `secret_logprob` and `p_extract_n`: log p(secret | prefix) at temperature 1 and the chance that at least one of
  n samples reproduces it, 1 - (1 - p)^n ((n, p)-discoverable extraction, Hayes et al. 2024: p is exact, no sampling);
- `exposure` (canaries and facts; The Secret Sharer): log2(R + 1) - log2(rank), where rank is the secret's place
  by log-likelihood among itself and R random secrets of the same format (ties count half);
- `loss`, `ref_loss`, `loss_ratio`: mean loss per token of the whole planted text under the model and under a
  reference model that never saw any planted item;
- eval items: `answer_correct` (greedy answer graded against the gold answer) and `answer_loss` (mean loss of the
  whole solution given the question).
Candidates share the prefix, so it runs once and its keys and values are reused for every candidate batch.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from cp_assets.lib.memorization.planting import PlantedItem, PlantSpec, candidate_seed, random_candidates

SCORE_COLUMNS = ["model_id", "run", "optimizer", "seed", "item_id", "kind", "dose", "secret_tokens",
                 "greedy_extracted", "secret_logprob", "p_extract_n", "exposure", "candidates", "loss", "ref_loss",
                 "loss_ratio", "answer_correct", "answer_loss", "completion"]


def split_ids(tokenizer, item: PlantedItem, secret_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """(BOS + prefix ids, secret ids) as the model saw the text in training (tokenized whole)."""
    full, head = tokenizer.encode(item.text), tokenizer.encode(item.prefix)
    cut = len(head) if full[:len(head)] == head else len(tokenizer.encode(item.prefix.rstrip()))
    secret = full[cut:]
    if secret_tokens is not None:
        secret = secret[:secret_tokens]
    return [tokenizer.bos_id] + full[:cut], secret


def suffix_logprobs(model, prefix: Sequence[int], suffixes: Sequence[Sequence[int]], batch: int = 256) -> np.ndarray:
    """log p(suffix | prefix) for each suffix, teacher-forced; the prefix's keys and values are computed once."""
    import torch

    out = np.zeros(len(suffixes))
    with torch.inference_mode():
        caches = [[] for _ in model.blocks]
        first = torch.log_softmax(model._logits(torch.tensor([list(prefix)], device=model.device), None, None,
                                                caches)[0, -1], -1)
        P = len(prefix)
        for lo in range(0, len(suffixes), batch):
            chunk = suffixes[lo:lo + batch]
            B, S = len(chunk), max(len(s) for s in chunk)
            ids = torch.zeros(B, S, dtype=torch.long)
            valid = torch.zeros(B, S, dtype=torch.bool)
            for i, s in enumerate(chunk):
                ids[i, :len(s)] = torch.tensor(list(s))
                valid[i, :len(s)] = True
            ids, valid = ids.to(model.device), valid.to(model.device)
            total = first[ids[:, 0]]
            if S > 1:
                T = S - 1
                pos = (P + torch.arange(T, device=model.device)).expand(B, T)
                mask = torch.cat([torch.ones(T, P, dtype=torch.bool, device=model.device),
                                  torch.ones(T, T, dtype=torch.bool, device=model.device).tril()], dim=1)
                mine = [[k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)] for k, v in caches]
                logits = model._logits(ids[:, :T], pos, mask.expand(B, 1, T, P + T), mine)
                step = logits.gather(-1, ids[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
                total = total + (step * valid[:, 1:]).sum(1)
            out[lo:lo + B] = total.double().cpu().numpy()
    return out


def text_losses(model, token_lists: Sequence[Sequence[int]]) -> list[float]:
    """Mean loss per predicted token of each id list (its first id is the context start)."""
    import torch

    out = []
    with torch.inference_mode():
        for ids in token_lists:
            ids = list(ids)[: model.config.seq_len + 1]
            x = torch.tensor([ids[:-1]], device=model.device)
            y = torch.tensor([ids[1:]], device=model.device)
            out.append(float(model(x, y)))
    return out


def exposure_suffixes(tokenizer, item: PlantedItem, prefix: Sequence[int], secret: Sequence[int],
                      n: int) -> list[list[int]]:
    """The secret's ids, then those of `n` random same-format candidates (none without a format), each as the
    continuation of `prefix`: the suffixes `suffix_logprobs` ranks the secret among."""
    cands = random_candidates(item.fmt, n, item.secret, seed=candidate_seed(item.item_id)) if item.fmt and n else []
    return [list(secret)] + [ids[len(prefix) - 1:] for ids in tokenizer.encode_batch([item.prefix + c for c in cands])]


def exposure(secret_lp: float, candidate_lps: np.ndarray) -> float:
    """log2(R + 1) - log2(rank); rank 1 = the secret is likelier than every candidate (ties count half)."""
    rank = 1 + float(np.sum(candidate_lps > secret_lp)) + 0.5 * float(np.sum(candidate_lps == secret_lp))
    return math.log2(len(candidate_lps) + 1) - math.log2(rank)


def _grade(item: PlantedItem, completion: str) -> bool | None:
    from cp_assets.lib.evals.grading import grade_gsm8k, grade_math

    if item.source and item.source.startswith("gsm8k"):
        return grade_gsm8k(item.answer or "", completion)
    return grade_math(item.answer, completion)


def score_model(model, tokenizer, items: Sequence[PlantedItem], spec: PlantSpec, *, reference=None,
                run: str = "", model_id: str = "", full: bool = True,
                log: Callable[[str], None] = print) -> list[tuple]:
    """One `planted_scores` row per item for a loaded model (and the loaded reference model, or None). `full=False`
    (intermediate checkpoints): greedy extraction, log p and loss only, no exposure and no eval answers."""
    from cp_assets.lib.memorization.experiments import parse_run

    optimizer, seed = parse_run(run) if run else (None, None)
    t0, seq_len = time.perf_counter(), model.config.seq_len
    pairs = [split_ids(tokenizer, it, spec.eval_secret_tokens if it.kind == "eval" else None) for it in items]
    greedy = {}
    for kind in sorted({it.kind for it in items}):
        idx = [i for i, it in enumerate(items) if it.kind == kind]
        if not idx:
            continue
        n_new = max(len(pairs[i][1]) for i in idx)
        outs, _ = model.generate([pairs[i][0] for i in idx], n_new)
        greedy.update({i: o for i, o in zip(idx, outs)})
    full_ids = [[tokenizer.bos_id] + tokenizer.encode(it.text) for it in items]
    losses = text_losses(model, full_ids)
    ref_losses = text_losses(reference, full_ids) if reference is not None else [None] * len(items)
    rows = []
    for i, it in enumerate(items):
        prefix, secret = pairs[i]
        extracted = greedy[i][:len(secret)] == secret
        # the secret and its candidates in one pass over the shared prefix
        suffixes = exposure_suffixes(tokenizer, it, prefix, secret, spec.exposure_candidates if full else 0)
        lps = suffix_logprobs(model, prefix, suffixes)
        lp = float(lps[0])
        p = math.exp(lp)
        p_n = 1.0 - (1.0 - p) ** spec.extraction_samples if p < 1 else 1.0
        expo, n_cand = (exposure(lp, lps[1:]), len(suffixes) - 1) if len(suffixes) > 1 else (None, None)
        correct, answer_loss, completion = None, None, tokenizer.decode(greedy[i])
        if it.kind == "eval" and full:
            sol = tokenizer.encode(it.text)[len(prefix) - 1:]
            room = seq_len - len(prefix)
            outs, _ = model.generate([prefix], max(1, min(room, len(sol) + 24)), eos_id=tokenizer.eos_id)
            completion = tokenizer.decode(outs[0])
            correct = _grade(it, completion)
            answer_loss = -float(suffix_logprobs(model, prefix, [sol[:room]])[0]) / max(1, len(sol[:room]))
        ratio = losses[i] / ref_losses[i] if ref_losses[i] else None
        rows.append((model_id, run, optimizer, seed, it.item_id, it.kind, it.dose, len(secret), bool(extracted), lp,
                     p_n, expo, n_cand, losses[i], ref_losses[i], ratio, correct, answer_loss, completion[:400]))
        if full and ((i + 1) % 16 == 0 or i + 1 == len(items)):
            log(f"{model_id}: scored {i + 1}/{len(items)} planted items ({(i + 1) / (time.perf_counter() - t0):.1f}"
                f" items/s)")
    return rows
