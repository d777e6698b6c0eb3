"""Contamination of eval items by a corpus split: n-gram overlap, the GPT-4 substring check, embedding distance, a flag.

Evidence per (eval item, split), from the split's n-gram index (`ngram_index.py`, `trace.py`) and the eval item's
nearest chunk (`eval_proximity`):
- `ngram_overlap`: share of the item's token 13-grams (`n`, configurable) that occur in the split (GPT-3 style).
- `contaminated_share`: share of the item's tokens inside a match of >= 10 tokens (`min_span`) (Llama 2 style), and
  its `bucket`: clean (< 20%), not_clean (20-80%), dirty (>= 80%). Llama 2's four subsets overlap: its "not clean"
  is not_clean + dirty, its "not dirty" is clean + not_clean (the SQL report counts all four).
- `substring_hits`: how many of three random 50-character substrings of the item, taken after removing spaces and
  symbols (and lowercasing), occur in the split normalized the same way (GPT-4 style); the substrings are seeded by
  the item's id, so reruns agree. One pass over the split finds every item's substrings (Aho-Corasick).
- `nn_distance`: cosine distance of the item to its nearest chunk, and `nn_percentile` in the split's reference
  distribution (see report_tables.py); `embed_share`: the share of the split's chunks that hold a vector (below 1
  under an `embed_sample` rate, where `nn_distance` is an upper bound and the embedding evidence can miss an item;
  the n-gram and substring evidence always read every token).

- `rare_share`: the same share, from matches all of whose windows (8-grams) occur in at most 10 documents of the
  split (`max_span_docs`): boilerplate such as "Express your answer as a common fraction." or a LaTeX/Asymptote preamble
  is 10+ WordPiece tokens long and occurs in hundreds of MATH documents, and would make clean items "not clean".

The flag (`FlagRule`, docs/reports.md): an item is `flagged` when any of
  ngram      rare_share >= 0.5 (most of the item inside rare verbatim matches of >= 10 tokens),
  substring  substring_hits >= 3 (all three substrings; GPT-4's rule is any one),
  embedding  nn_distance <= 0.15 (cosine), the paraphrase evidence n-grams miss;
thresholds chosen on the dev half of the planted GSM8K benchmark (`choose_rule`, test_contamination.py);
`flag_reason` lists which. Verbatim copies trip the first two, paraphrases and changed numbers the third.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cp_assets.lib.corpus.embed_sample import embed_shares
from cp_assets.lib.corpus.encoder import model_slug
from cp_assets.lib.corpus.exact.ngram_index import NgramIndex, tokenize
from cp_assets.lib.corpus.exact.ngram_search import longest_many, window_docs_many
from cp_assets.lib.reports.trace import covered, kgram_presence, rare_covered

CLEAN_BELOW, DIRTY_FROM = 0.2, 0.8
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass(frozen=True)
class NgramEvidence:
    n_tokens: int
    ngram_overlap: float
    contaminated_share: float
    longest_span: int
    rare_share: float = 0.0  # contaminated_share from windows found in <= max_span_docs documents only


def bucket(share: float) -> str:
    return "clean" if share < CLEAN_BELOW else "dirty" if share >= DIRTY_FROM else "not_clean"


def ngram_evidence(index: NgramIndex, texts: Sequence[str], n: int = 13, min_span: int = 10,
                   max_span_docs: int = 10, common_above: int = 1000) -> list[NgramEvidence]:
    """n-gram overlap and Llama-2 token share of each text against the split, and the share from rare windows
    (`index.n`-token windows found in at most `max_span_docs` documents; a window with more than `common_above`
    occurrences in one index segment counts as common without counting its documents), from one index pass."""
    toks = tokenize(index.tokenizer, texts)
    segments = index.segments
    longest = longest_many(segments, [t.ids for t in toks])
    wants = [lg.length[:max(len(tk) - index.n + 1, 0)] >= index.n for tk, lg in zip(toks, longest)]
    docs = window_docs_many(segments, [t.ids for t in toks], index.n, wants, cap=common_above)
    out = []
    for tk, lg, want, n_docs in zip(toks, longest, wants, docs):
        present = kgram_presence(lg.length, n)
        share = covered(lg.length, min_span)
        rare = np.zeros(len(tk), dtype=bool)
        rare[:len(want)] = want & (n_docs >= 0) & (n_docs <= max_span_docs)
        rare_cov = rare_covered(lg.length, rare, index.n, min_span)
        out.append(NgramEvidence(len(tk), float(present.mean()) if len(present) else 0.0,
                                 float(share.mean()) if len(share) else 0.0,
                                 int(lg.length.max()) if len(tk) else 0,
                                 float(rare_cov.mean()) if len(rare_cov) else 0.0))
    return out


def normalize(text: str) -> str:
    """Letters and digits only, lowercased (GPT-4's check removes spaces and symbols)."""
    return _NOT_WORD.sub("", text).lower()


def substring_probes(key: str, text: str, k: int = 3, length: int = 50) -> list[str]:
    """k random substrings of `length` characters of the normalized text, seeded by `key` (the item id). A text
    shorter than `length` gives itself when it has at least 20 characters, and nothing otherwise."""
    norm = normalize(text)
    if len(norm) <= length:
        return [norm] if len(norm) >= 20 else []
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"))
    starts = rng.choice(len(norm) - length + 1, size=min(k, len(norm) - length + 1), replace=False)
    return [norm[s:s + length] for s in sorted(starts)]


def substring_hits(probes: Sequence[Sequence[str]], corpus: Iterable[str]) -> list[int]:
    """For each item's probes: how many occur in some corpus text (normalized), in one pass over the corpus."""
    import ahocorasick_rs

    patterns = sorted({p for ps in probes for p in ps})
    if not patterns:
        return [0 for _ in probes]
    ac = ahocorasick_rs.AhoCorasick(patterns)
    found: set[int] = set()
    for text in corpus:
        found.update(m for m, _, _ in ac.find_matches_as_indexes(normalize(text), overlapping=True))
        if len(found) == len(patterns):
            break
    hit = {patterns[i] for i in found}
    return [sum(p in hit for p in set(ps)) for ps in probes]


@dataclass(frozen=True)
class FlagRule:
    """The flag's thresholds. The defaults are those `choose_rule` picks on the dev half of the planted GSM8K
    benchmark (`cp_assets_tests/test_contamination.py` checks it and scores the other half with them)."""

    min_share: float = 0.5              # rare_share at or above: n-gram evidence (most of the item)
    min_substring_hits: int = 3         # substring_hits at or above: substring evidence (all 3 probes)
    max_nn_cosine: float = 0.15         # nn_distance at or below: embedding evidence

    def reasons(self, rare_share: float, hits: int, nn_distance: float | None) -> list[str]:
        return [name for name, on in (
            ("ngram", rare_share >= self.min_share),
            ("substring", hits >= self.min_substring_hits),
            ("embedding", nn_distance is not None and nn_distance <= self.max_nn_cosine)) if on]

    def apply(self, ev: NgramEvidence, hits: int, nn_distance: float | None) -> tuple[bool, str | None]:
        reasons = self.reasons(ev.rare_share, hits, nn_distance)
        return bool(reasons), ",".join(reasons) or None

    def explain(self, row: dict) -> str:
        """Which evidence fired for a `contamination` row (named), each value against its threshold."""
        said = {
            "ngram": f"n-gram: {row['rare_share']:.0%} of its tokens lie in rare verbatim matches of >= 10 tokens "
                     f"(flag at >= {self.min_share:.0%}; longest match {row['longest_span']} tokens)",
            "substring": f"substring: {row['substring_hits']} of its 50-character probes occur in the split "
                         f"(flag at >= {self.min_substring_hits})",
            "embedding": f"embedding: nearest chunk at cosine distance {row['nn_distance']:.3f} "
                         f"(flag at <= {self.max_nn_cosine})"}
        return "; ".join(said[r] for r in self.reasons(row["rare_share"], row["substring_hits"], row["nn_distance"]))


# the grid `choose_rule` searches (every value a researcher would plausibly pick)
SHARE_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
HITS_GRID = (1, 2, 3)
COSINE_GRID = tuple(round(0.05 + 0.025 * i, 3) for i in range(13))  # 0.05 .. 0.35


@dataclass(frozen=True)
class RuleScore:
    rule: FlagRule
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    positives: int
    controls: int


def score_rule(rule: FlagRule, rows: Sequence[dict], positive: Sequence[bool]) -> RuleScore:
    """Precision / recall / F1 of a rule's flag over named contamination rows with known labels."""
    flags = np.array([bool(rule.reasons(r["rare_share"], r["substring_hits"], r["nn_distance"])) for r in rows])
    pos = np.asarray(positive, dtype=bool)
    tp, fp = int((flags & pos).sum()), int((flags & ~pos).sum())
    precision, recall = tp / max(tp + fp, 1), tp / max(int(pos.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return RuleScore(rule, precision, recall, f1, tp, fp, int(pos.sum()), int((~pos).sum()))


def choose_rule(rows: Sequence[dict], positive: Sequence[bool]) -> RuleScore:
    """The rule of the grid with the best F1 on labelled (dev) rows; ties go to the strictest rule (higher share
    and hits, lower cosine), so a plateau never widens the flag."""
    scores = (score_rule(FlagRule(share, hits, cos), rows, positive)
              for share in SHARE_GRID for hits in HITS_GRID for cos in COSINE_GRID)
    return max(scores, key=lambda sc: (round(sc.f1, 9), sc.rule.min_share, sc.rule.min_substring_hits,
                                       -sc.rule.max_nn_cosine))


COLUMNS = ["eval_set", "sample_id", "split", "ngram_n", "n_tokens", "ngram_overlap", "contaminated_share",
           "longest_span", "bucket", "substring_hits", "nn_distance", "nn_percentile", "flagged", "flag_reason",
           "rare_share", "embed_share"]


def contamination_rows(eval_set: str, split: str, items: Sequence[tuple[str, str]], index: NgramIndex,
                       corpus: Iterable[str], nearest: dict[str, tuple[float, float | None]] | None = None,
                       n: int = 13, min_span: int = 10, max_span_docs: int = 10,
                       rule: FlagRule = FlagRule(), embed_share: float | None = None) -> list[tuple]:
    """Rows of the `contamination` table for items ((sample_id, text)); `nearest`: sample_id -> (nn_distance,
    nn_percentile) from eval_proximity (absent: no embedding evidence); `embed_share`: the split's embedded share
    (`embed_sample.embed_shares`), written on every row."""
    nearest = nearest or {}
    evidence = ngram_evidence(index, [t for _, t in items], n=n, min_span=min_span, max_span_docs=max_span_docs)
    hits = substring_hits([substring_probes(sid, t) for sid, t in items], corpus)
    rows = []
    for (sid, _), ev, h in zip(items, evidence, hits):
        dist, pct = nearest.get(sid, (None, None))
        flagged, reason = rule.apply(ev, h, dist)
        rows.append((eval_set, sid, split, n, ev.n_tokens, ev.ngram_overlap, ev.contaminated_share,
                     ev.longest_span, bucket(ev.contaminated_share), h, dist, pct, flagged, reason, ev.rare_share,
                     embed_share))
    return rows


def contamination_report(store, db, index: NgramIndex, embed_model: str, eval_set: str, split: str, *,
                         rule: FlagRule = FlagRule(), n: int = 13, min_span: int = 10, max_span_docs: int = 10,
                         plot_dir=None, log=print, warn=None) -> dict:
    """The `contamination` asset's work: every stored item of the eval set against the split (n-gram index,
    substrings over the split's documents, nearest chunk from `eval_proximity`), rows replaced in the results DB;
    returns the metadata: counts, buckets, evidence, a plot, the most contaminated items, and for every flagged item
    which evidence fired (`FlagRule.explain`)."""
    from cp_assets.lib.core import plots, settings
    from cp_assets.lib.core.metadata import explorer_link, image, snippet, table
    from cp_assets.lib.reports import report_tables

    t0 = time.perf_counter()
    samples = {s["sample_id"]: s["prompt"] for s in db.samples(eval_set)}
    if not samples:
        raise ValueError(f"eval set {eval_set!r} has no samples: materialize `eval_samples` for it first")
    with db.connect(read_only=True) as con:
        report_tables.ensure_readable(con, "eval_proximity")
        near = {sid: (d, p, doc, text) for sid, d, p, doc, text in con.execute(
            "SELECT sample_id, min_cosine, percentile, nn_doc_id, nn_text FROM eval_proximity "
            "WHERE eval_set = ? AND split = ? AND embed_model = ?", [eval_set, split, embed_model]).fetchall()}
    if not near:
        (warn or log)(f"no eval_proximity rows for {eval_set} x {split}: no embedding evidence")
    share = embed_shares(store, model_slug(embed_model)).get(split) if near else None
    rows = contamination_rows(eval_set, split, list(samples.items()), index,
                              (d.text for d in store.iter_documents(split)),
                              {sid: v[:2] for sid, v in near.items()}, n=n, min_span=min_span,
                              max_span_docs=max_span_docs, rule=rule, embed_share=share)
    with db.connect() as con:
        report_tables.replace_rows(con, "contamination", {"eval_set": eval_set, "split": split}, COLUMNS, rows)
    secs = time.perf_counter() - t0
    named = [dict(zip(COLUMNS, r)) for r in rows]
    flagged = [r for r in named if r["flagged"]]
    log(f"{eval_set} x {split}: {len(flagged)}/{len(rows)} flagged in {secs:.1f}s")
    buckets = {b: sum(r["bucket"] == b for r in named) for b in ("clean", "not_clean", "dirty")}
    reasons = {k: sum(k in (r["flag_reason"] or "") for r in named) for k in ("ngram", "substring", "embedding")}
    png = plots.bars(list(buckets) + [f"flag:{k}" for k in reasons], list(buckets.values()) + list(reasons.values()),
                     Path(plot_dir or settings.home() / "plots") / f"contamination_{eval_set}_{split}.png",
                     f"{eval_set} in {split}: Llama-2 buckets and flag evidence", "items")
    top = sorted(named, key=lambda r: (-r["contaminated_share"], 9 if r["nn_distance"] is None else r["nn_distance"]))
    explained = [{"sample": r["sample_id"], "evidence": rule.explain(r), "item": samples[r["sample_id"]],
                  "nearest": (near.get(r["sample_id"]) or (None,) * 4)[3]} for r in flagged]
    return {
        "items": len(rows), "flagged": len(flagged), "flagged_rate": round(len(flagged) / len(rows), 4),
        **{f"bucket_{b}": k for b, k in buckets.items()}, **{f"evidence_{k}": v for k, v in reasons.items()},
        "with_embedding_evidence": len(near), "embed_share": share, "seconds": round(secs, 2),
        "rule": f"ngram: rare_share >= {rule.min_share}; substring: hits >= {rule.min_substring_hits}; "
                f"embedding: nn cosine <= {rule.max_nn_cosine}",
        "most_contaminated": table([r | {"item": snippet(samples[r["sample_id"]], 60),
                                         "explore": explorer_link(text=samples[r["sample_id"]])} for r in top[:10]], {
            "sample_id": "sample", "item": "item", "contaminated_share": "share in >=10-token matches",
            "ngram_overlap": "13-gram overlap", "substring_hits": "substrings", "nn_distance": "nn distance",
            "flag_reason": "reason", "explore": "explorer"}, digits=3),
        "why_flagged": table(explained[:50], {"sample": "sample", "evidence": "evidence that fired",
                                              "item": "item (start)", "nearest": "nearest chunk (start)"},
                             width=160) if explained else "no item flagged",
        "plot": image(png, "buckets and evidence"),
    }
