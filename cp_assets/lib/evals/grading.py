"""Grade a completion against a sample's reference: GSM8K numbers, MATH answers (math-verify), verbatim recall.

`grade(sample, completion)` returns True/False, or None where the sample cannot be graded (a MATH solution that
boxes nothing, a gold answer math-verify cannot parse).

- GSM8K: the model's final answer is the first number after the last `####`, else the last number in the completion;
  `$` and thousands commas are dropped and numbers compare as Decimal (so `18.0 == 18`).
- MATH-500 / MATH: math-verify compares the gold (`$answer$`) with the last `\\boxed{...}` of the completion, or,
  when nothing is boxed, with whatever math-verify extracts from the completion's last `MAX_PRED_CHARS` characters.
  math-verify's timeouts use `signal.alarm`, which only works in the main thread (elsewhere it raises ValueError).
  So in the main thread parsing and comparison get `timeout_s` seconds each (a timeout grades False); in any other
  thread (thread pools, Dagster's in-process executor) they run with `parsing_timeout=None, timeout_seconds=None`,
  i.e. no timeout. Only the short extracted answer is handed to sympy, which keeps that safe in practice; for untrusted
  completions at scale, grade in the main thread of worker processes.
- Recall: the completion's normalized words (lowercase, punctuation dropped, whitespace collapsed) must begin with
  the continuation's. `recall_match` also gives the strict match and the number of matching leading words.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from cp_assets.lib.evals.samples import (
    GSM8KSample,
    Math500Sample,
    MathSample,
    RecallSample,
    Sample,
    last_boxed,
    normalize_number,
)

MATH_TIMEOUT_S = 5
MAX_PRED_CHARS = 4000

_NUMBER = re.compile(r"(?:(?<![\w.])-)?\$?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|-?\.\d+")


# ---------------------------------------------------------------------------------------------- GSM8K

def extract_gsm8k_answer(completion: str) -> str | None:
    """The model's final number, normalized ('1,000' -> '1000'); None if the completion holds no number."""
    if "####" in completion:
        found = _NUMBER.search(completion.rsplit("####", 1)[1])
        if found:
            return normalize_number(found.group())
    numbers = _NUMBER.findall(completion)
    return normalize_number(numbers[-1]) if numbers else None


def grade_gsm8k(reference: str, completion: str) -> bool:
    predicted = extract_gsm8k_answer(completion)
    if predicted is None:
        return False
    try:
        return Decimal(predicted) == Decimal(normalize_number(reference) or "nan")
    except InvalidOperation:
        return False


# ---------------------------------------------------------------------------------------------- MATH

def _timeouts(timeout_s: int | None) -> int | None:
    """Seconds for math-verify's signal-based timeouts: none outside the main thread, where signals cannot be used."""
    return timeout_s if threading.current_thread() is threading.main_thread() else None


def math_answer_text(completion: str) -> str:
    """What math-verify sees of a completion: its last boxed answer, else its tail."""
    boxed = last_boxed(completion)
    return f"\\boxed{{{boxed}}}" if boxed is not None else completion[-MAX_PRED_CHARS:]


def grade_math(reference: str | None, completion: str, timeout_s: int | None = MATH_TIMEOUT_S) -> bool | None:
    """math-verify equivalence of `completion`'s final answer with the gold `reference` (LaTeX, without `$`)."""
    if reference is None or not reference.strip():
        return None
    from math_verify import parse, verify  # imports sympy: only when MATH is graded

    seconds = _timeouts(timeout_s)
    gold = parse(f"${reference}$", parsing_timeout=seconds)
    if not gold:
        return None
    predicted = parse(math_answer_text(completion), parsing_timeout=seconds)
    if not predicted:
        return False
    return bool(verify(gold, predicted, timeout_seconds=seconds))


# ---------------------------------------------------------------------------------------------- recall

def normalize_text(text: str) -> str:
    """Lowercase, dashes to spaces, other punctuation dropped, whitespace collapsed ('Day—and' -> 'day and')."""
    out = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        cat = unicodedata.category(ch)
        if cat == "Pd" or ch.isspace():
            out.append(" ")
        elif not cat.startswith("P"):
            out.append(ch)
    return " ".join("".join(out).split())


@dataclass(frozen=True)
class RecallMatch:
    exact: bool  # the completion starts with the continuation character for character, ending on a word boundary
    normalized: bool  # the same after normalize_text, word by word
    matching_words: int  # leading normalized words of the continuation the completion reproduces
    n_words: int  # normalized words in the continuation

    @property
    def fraction(self) -> float:
        return self.matching_words / self.n_words if self.n_words else 1.0


def recall_match(continuation: str, completion: str) -> RecallMatch:
    """Exact and normalized prefix match of `completion` against `continuation`, and the matching word count.

    Leading whitespace is ignored in both (chat models do not start with the space a base model would), CRLF counts
    as LF, and an exact match must not end mid-word ('the end' is not a match for 'the ending').
    """
    want, got = continuation.replace("\r\n", "\n").lstrip(), completion.replace("\r\n", "\n").lstrip()
    want_words, got_words = normalize_text(want).split(), normalize_text(got).split()
    n = 0
    for a, b in zip(want_words, got_words):
        if a != b:
            break
        n += 1
    exact = got.startswith(want) and not (0 < len(want) < len(got) and want[-1].isalnum() and got[len(want)].isalnum())
    return RecallMatch(exact=exact, normalized=n == len(want_words), matching_words=n,
                       n_words=len(want_words))


# ---------------------------------------------------------------------------------------------- dispatch

def grade(sample: Sample, completion: str, *, timeout_s: int | None = MATH_TIMEOUT_S) -> bool | None:
    """Is `completion` a correct answer to `sample`? None where the sample cannot be graded."""
    if isinstance(sample, GSM8KSample):
        return grade_gsm8k(sample.reference, completion)
    if isinstance(sample, (Math500Sample, MathSample)):
        return grade_math(sample.reference, completion, timeout_s)
    if isinstance(sample, RecallSample):
        return recall_match(sample.continuation, completion).normalized
    raise TypeError(f"no grader for {type(sample).__name__} (sample {getattr(sample, 'id', '?')!r})")
