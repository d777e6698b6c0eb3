"""Grading: GSM8K numbers, MATH equivalence through math-verify (also from worker threads), verbatim recall."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from cp_assets.lib.core import settings
from cp_assets.lib.evals.eval_registry import load_evals
from cp_assets.lib.evals.grading import (extract_gsm8k_answer, grade, grade_gsm8k, grade_math, normalize_text,
                                   recall_match)
from cp_assets.lib.evals.samples import GSM8KSample, MathSample, RecallSample


@pytest.fixture(scope="module")
def registry():
    return load_evals(settings.REPO_ROOT / "evals.yaml")


@pytest.mark.parametrize("reference,completion,expected", [
    ("1000", "The answer is #### 1,000", True),
    ("1000", "#### $1,000.00", True),
    ("18", "She makes 9 * 2 = $18 every day.", True),  # no ####: the last number
    ("18", "16 - 3 - 4 = 9 eggs, 9 * 2 = 18.", True),
    ("18", "#### 18\n\nQuestion: what is 2 + 3? 5", True),  # #### wins over a later number
    ("-5", "The change is -5.", True),
    ("5", "The range is 3-5", True),  # a dash after a digit is not a minus sign
    ("18", "The answer is #### 17", False),
    ("18", "18 eggs, so she earns 36", False),
    ("18", "I do not know", False),
])
def test_gsm8k(reference, completion, expected):
    assert grade_gsm8k(reference, completion) is expected


def test_gsm8k_extraction():
    assert extract_gsm8k_answer("#### 1,234,567.50") == "1234567.5"
    assert extract_gsm8k_answer("x = 3,4") == "4"
    assert extract_gsm8k_answer("####") is None


@pytest.mark.parametrize("reference,completion,expected", [
    (r"\frac{1}{2}", "0.5", True),
    (r"\frac{1}{2}", r"so $x = \boxed{0.5}$.", True),
    ("3/4", r"The answer is \boxed{\dfrac{3}{4}}.", True),
    (r"\frac34", r"\boxed{0.75}", True),
    (r"[2,5)", r"\boxed{[2, 5)}", True),
    (r"(2,5)", r"\boxed{[2,5)}", False),
    (r"\{1,2,3\}", r"\boxed{\{3, 2, 1\}}", True),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \pi/2)}", True),
    ("x^2+2x+1", r"\boxed{(x+1)^2}", True),
    (r"\frac{\sqrt{3}}{3}", r"\boxed{\frac{1}{\sqrt{3}}}", True),
    ("10", r"first \boxed{7}, finally \boxed{10}", True),
    ("2", r"\boxed{3}", False),
    ("2", "I give up", False),
])
def test_math_equivalence(reference, completion, expected):
    assert grade_math(reference, completion) is expected


def test_ungradable_math_sample_is_none():
    sample = MathSample(id="math:0", eval_set="math", problem="p", level=None, subject="Geometry",
                        solution="no box", reference=None)
    assert grade(sample, r"\boxed{1}") is None


def test_real_samples_grade_their_own_answers(registry):
    for s in registry.load_samples("gsm8k", 40):
        assert grade(s, s.answer) is True and grade(s, "#### 123456789") is False
    for s in registry.load_samples("math500", 25):
        assert grade(s, s.solution) is True
    for s in registry.load_samples("math", 25):
        assert grade(s, s.solution) is True and grade(s, r"\boxed{123456789}") is False
    for s in registry.load_samples("recall", 10):
        assert grade(s, s.continuation + " and more") is True


def test_math_grading_from_worker_threads(registry):
    """math-verify's signal-based timeouts only work in the main thread; grading turns them off elsewhere."""
    samples = registry.load_samples("math500", 16)
    cases = [(s, r"\boxed{" + s.answer + "}", True) for s in samples] + [(s, r"\boxed{-987654}", False) for s in samples]

    def run(case):
        assert threading.current_thread() is not threading.main_thread()
        return grade(case[0], case[1])

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(run, cases, timeout=60)) == [c[2] for c in cases]


def test_math_verify_itself_refuses_timeouts_in_threads():
    """Why the option matters: math-verify with its default timeout raises outside the main thread."""
    from math_verify import parse

    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(ValueError, match="threaded environment"):
            pool.submit(parse, "$1/2$", parsing_timeout=5).result(timeout=60)


def test_normalize_text():
    assert normalize_text("  Shall I compare thee\r\nto a Summer’s day?—No!  ") == "shall i compare thee to a summers day no"


@pytest.mark.parametrize("continuation,completion,exact,normalized,words", [
    (" a new nation, conceived in Liberty", " a new nation, conceived in Liberty, and dedicated", True, True, 6),
    (" a new nation, conceived in Liberty", "A new nation conceived in liberty", False, True, 6),
    (" a new nation, conceived in Liberty", "a new nation, born in Liberty", False, False, 3),
    ("Rough winds do shake\r\nthe darling buds", "Rough winds do shake\nthe darling buds of May", True, True, 7),
    ("the end", "the ending", False, False, 1),
    ("the end", "", False, False, 0),
])
def test_recall_match(continuation, completion, exact, normalized, words):
    m = recall_match(continuation, completion)
    assert (m.exact, m.normalized, m.matching_words) == (exact, normalized, words)
    sample = RecallSample(id="recall:x", eval_set="recall", prefix="p", continuation=continuation, category="speech",
                          title="t", author="a", source="hand_entered")
    assert grade(sample, completion) is normalized


def test_grade_rejects_unknown_sample_types():
    with pytest.raises(TypeError, match="no grader"):
        grade(object(), "x")
    assert grade(GSM8KSample(id="g:0", eval_set="g", question="q", answer="#### 3", reference="3", n_steps=0), "3")
