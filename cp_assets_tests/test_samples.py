"""Eval samples and the eval-set registry: the four eval sets on the shared data, bad input, the hub path, evals.yaml."""

import collections
import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from cp_assets.lib.core import settings
from cp_assets.lib.evals.eval_registry import EvalRegistryError, load_evals, load_samples, to_request
from cp_assets.lib.evals.generation import GenerationRequest
from cp_assets.lib.evals.samples import (GSM8KSample, Math500Sample, MathSample, RecallSample, Sample, hf_samples,
                                   last_boxed, read_samples)
from cp_assets.lib.corpus.sources import BadRecord


@pytest.fixture(scope="module")
def registry():
    return load_evals(settings.REPO_ROOT / "evals.yaml")


@pytest.fixture(scope="module")
def samples(registry):
    return {name: load_samples(name, registry=registry) for name in registry.names()}


def write_jsonl(path: Path, lines: list) -> Path:
    raw = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


@pytest.mark.parametrize("name,cls,count,first_id", [
    ("gsm8k", GSM8KSample, 1319, "gsm8k:0"),
    ("math500", Math500Sample, 500, "math500:0"),
    ("math", MathSample, 5000, "math:0"),
    ("recall", RecallSample, 79, "recall:sonnet18"),
])
def test_eval_sets_on_the_shared_data(samples, name, cls, count, first_id):
    got = samples[name]
    assert len(got) == count and all(type(s) is cls for s in got)
    assert got[0].id == first_id and len({s.id for s in got}) == count
    assert all(isinstance(s, Sample) and s.eval_set == name and s.prompt.strip() for s in got)
    if name != "recall":
        assert [s.id for s in got[:3]] == [f"{name}:{i}" for i in range(3)]
    assert all(s.locator.startswith(str(settings.data_dir())) for s in got[:3])


def test_gsm8k_reference_and_steps(samples):
    janet = samples["gsm8k"][0]
    assert janet.question.startswith("Janet’s ducks lay 16 eggs")
    assert janet.reference == "18" and janet.reference_value == Decimal(18) and janet.n_steps == 2
    assert janet.metadata["solution"].endswith("#### 18") and janet.metadata["n_steps"] == 2
    by_id = {s.id: s for s in samples["gsm8k"]}
    assert by_id["gsm8k:146"].reference == "2125"  # '#### 2,125' in the file
    assert all(s.reference.lstrip("-").isdigit() for s in samples["gsm8k"])


def test_math500_levels_and_subjects(samples):
    got = samples["math500"]
    assert collections.Counter(s.level for s in got) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}
    assert collections.Counter(s.subject for s in got) == {
        "Algebra": 124, "Intermediate Algebra": 97, "Prealgebra": 82, "Number Theory": 62, "Precalculus": 56,
        "Geometry": 41, "Counting & Probability": 38}
    assert got[0].reference == r"\left( 3, \frac{\pi}{2} \right)" and got[0].unique_id == "test/precalculus/807.json"
    assert got[0].metadata["level"] == 2 and got[0].metadata["subject"] == "Precalculus"


def test_math_levels_subjects_and_boxed_references(samples):
    got = {s.id: s for s in samples["math"]}
    assert collections.Counter(s.level for s in got.values()) == {1: 437, 2: 894, 3: 1131, 4: 1214, 5: 1324}
    assert len({s.subject for s in got.values()}) == 7 and all(s.reference for s in got.values())
    assert got["math:133"].reference == r"\frac{\sqrt{3}}{3}"  # nested braces
    assert got["math:2276"].reference == r"\{-1\} \cup [0,7)"  # escaped braces
    assert got["math:2152"].reference == "-3 + 6i"  # three boxed values: the last one is taken
    # MATH-500 is a subset of MATH: its answers are the last boxed values of the same problems' solutions.
    by_problem = {s.problem: s for s in got.values()}
    assert all(by_problem[s.problem].reference == s.answer for s in samples["math500"])


def test_recall_items(samples):
    got = samples["recall"]
    assert collections.Counter(s.category for s in got)["poem"] == 22
    sonnet = got[0]
    assert sonnet.prefix.startswith("Shall I compare thee") and sonnet.reference.startswith("Rough winds")
    assert sonnet.metadata == {"category": "poem", "title": "Sonnet 18", "author": "William Shakespeare",
                               "source": "file"}


@pytest.mark.parametrize("text,expected", [
    (r"so $x = \boxed{\frac{\sqrt{3}}{2}}$.", r"\frac{\sqrt{3}}{2}"),
    (r"\boxed{1} then \boxed{2}", "2"),
    (r"\fbox{7}", "7"),
    (r"\boxed 5$", "5"),
    (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
    (r"\boxed{\boxed{9}}", r"\boxed{9}"),
    (r"\boxed{unbalanced", None),
    ("no box here", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("kind,lines,field", [
    ("gsm8k", ['{"question": "q", "answer": "a #### 1"}', '{"question": "q", "answer": '], "malformed JSON"),
    ("gsm8k", [{"question": "q", "answer": "#### 1"}, {"question": "q"}], "field 'answer' is missing"),
    ("gsm8k", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "it is 4"}], "field 'answer' has no"),
    ("gsm8k", [{"question": "q", "answer": "#### 1"}, {"question": "q", "answer": "#### four"}], "field 'answer' ends"),
    ("gsm8k", [{"question": "q", "answer": "#### 1"}, {"question": 3, "answer": "#### 1"}], "field 'question' is int"),
    ("math500", [{"problem": "p", "answer": "1", "subject": "s", "level": 1, "unique_id": "u", "solution": "s"},
                 {"problem": "p", "answer": "1", "subject": "s", "level": 7, "unique_id": "u", "solution": "s"}],
     "field 'level' is 7"),
    ("math", [{"problem": "p", "level": "Level 1", "type": "t", "solution": "s"},
              {"problem": "p", "level": "Level 9", "type": "t", "solution": "s"}], "field 'level' is 'Level 9'"),
    ("math", [{"problem": "p", "level": "Level 1", "type": "t", "solution": "s"},
              {"problem": "p", "level": "Level 1", "solution": "s"}], "field 'type' is missing"),
    ("recall", [{"id": "a", "prefix": "p", "continuation": "c", "category": "x", "title": "t", "author": "a",
                 "source": "s"}, {"prefix": "p"}], "field 'id' is missing"),
    ("recall", [{"id": "a", "prefix": "p", "continuation": "c", "category": "x", "title": "t", "author": "a",
                 "source": "s"}] * 2, "'recall:a' occurs twice"),
])
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bad_input_names_file_line_and_field(tmp_path, kind, lines, field, suffix):
    path = write_jsonl(tmp_path / f"bad{suffix}", lines)
    with pytest.raises(BadRecord) as exc:
        read_samples(path, kind)
    assert f"{path}:2" in str(exc.value) and field in str(exc.value)
    assert len(read_samples(path, kind, limit=1)) == 1  # the good first line alone reads


def test_math_level_question_mark_and_no_boxed_answer(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "p", "level": "Level ?", "type": "Geometry", "solution": "so it is $\\boxed{3}$"},
        {"problem": "q", "level": "Level 2", "type": "Algebra", "solution": "no boxed answer"}])
    a, b = read_samples(path, "math", eval_set="mine")
    assert (a.id, a.level, a.reference) == ("mine:0", None, "3")
    assert (b.level, b.reference) == (2, None)


GSM8K_ROWS = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1:,}"}
              for i in range(998, 1005)]


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_path_with_a_local_dataset(tmp_path, streaming):
    """The Hugging Face `datasets` code path, pointed at a local JSON dataset (no network)."""
    path = write_jsonl(tmp_path / "hub.jsonl", GSM8K_ROWS)
    got = hf_samples("gsm8k", "json", split="train", data_files=str(path), limit=5, streaming=streaming)
    assert [s.id for s in got] == [f"gsm8k:{i}" for i in range(5)]
    assert [s.reference for s in got] == ["999", "1000", "1001", "1002", "1003"] and got[0].n_steps == 1
    assert got[0].locator == "hf:json/train#0"
    renamed = write_jsonl(tmp_path / "renamed.jsonl", [{"q": r["question"], "a": r["answer"]} for r in GSM8K_ROWS])
    got = hf_samples("gsm8k", "json", split="train", data_files=str(renamed), fields={"question": "q", "answer": "a"},
                     streaming=streaming)
    assert len(got) == 7 and got[-1].reference == "1005"


def make_evals(tmp_path: Path, evals: dict) -> Path:
    path = tmp_path / "evals.yaml"
    path.write_text(yaml.safe_dump({"evals": evals}))
    return path


def test_registry_names_limit_and_requests(registry):
    assert registry.names() == ["gsm8k", "math500", "math", "recall"]
    got = load_samples("math500", limit=3, registry=registry)
    assert [s.id for s in got] == ["math500:0", "math500:1", "math500:2"]
    req = to_request(got[1], registry.get("math500"))
    assert isinstance(req, GenerationRequest) and req.sample_id == "math500:1" and req.eval_set == "math500"
    assert req.prompt.startswith(got[1].problem) and req.prompt.endswith(r"put your final answer in \boxed{}.")
    assert req.metadata == {"level": got[1].level, "subject": got[1].subject, "unique_id": got[1].unique_id,
                            "kind": "math500", "reference": got[1].answer}
    gsm = to_request(load_samples("gsm8k", 1, registry=registry)[0], registry.get("gsm8k"))
    assert '"#### <number>"' in gsm.prompt and gsm.metadata["n_steps"] == 2 and "solution" not in gsm.metadata
    recall = load_samples("recall", 1, registry=registry)[0]
    req = to_request(recall, registry.get("recall"))
    assert req.prompt == recall.prefix and req.metadata["category"] == "poem"
    with pytest.raises(ValueError, match="belongs to eval set 'recall'"):
        to_request(recall, registry.get("gsm8k"))


def test_unknown_eval_set_and_cprox_evals_override(tmp_path, monkeypatch, registry):
    with pytest.raises(EvalRegistryError, match=r"unknown eval set 'mmlu'.*\['gsm8k', 'math', 'math500', 'recall'\]"):
        registry.get("mmlu")
    write_jsonl(tmp_path / "mine.jsonl", GSM8K_ROWS)
    path = make_evals(tmp_path, {"easy": {"kind": "gsm8k", "path": str(tmp_path / "mine.jsonl"), "limit": 4,
                                          "prompt_template": "Q{{{id}}}: {question} \\boxed{} {{x}}"}})
    monkeypatch.setenv("CPROX_EVALS", str(path))
    reg = load_evals()
    assert reg.file == path and reg.names() == ["easy"]
    got = load_samples("easy")
    assert [s.id for s in got] == ["easy:0", "easy:1", "easy:2", "easy:3"] and len(load_samples("easy", 6)) == 6
    assert reg.get("easy").render(got[0]) == "Q{easy:0}: What is 998 + 1? \\boxed{} {x}"
    with pytest.raises(EvalRegistryError, match="unknown eval set 'gsm8k'"):
        load_samples("gsm8k")


def test_source_rule_local_then_hub(tmp_path):
    write_jsonl(tmp_path / "hub.jsonl", GSM8K_ROWS)
    hub = {"path": "json", "split": "train", "data_files": str(tmp_path / "hub.jsonl")}
    path = make_evals(tmp_path, {
        "absent": {"kind": "gsm8k", "path": "not_here.jsonl", "hf": hub},  # auto: the file is absent -> hub
        "forced": {"kind": "gsm8k", "path": "not_here.jsonl", "hf": hub, "source": "local"},
        "nothing": {"kind": "gsm8k", "path": "not_here.jsonl"},
        "local": {"kind": "gsm8k", "path": "hub.jsonl", "hf": {"path": "nobody/unreachable"}},  # auto: file wins
    })
    reg = load_evals(path, tmp_path)
    assert reg.get("absent").resolved_source(tmp_path) == "hf" and len(reg.load_samples("absent", 2)) == 2
    assert reg.get("local").resolved_source(tmp_path) == "local" and len(reg.load_samples("local")) == 7
    for name in ("forced", "nothing"):
        with pytest.raises(FileNotFoundError, match="not_here.jsonl"):
            reg.load_samples(name)


@pytest.mark.parametrize("evals,message", [
    ({"g": {"kind": "gsm8k"}}, "needs `path`"),
    ({"g": {"kind": "gsm8k", "path": "x.jsonl", "source": "hf"}}, "`source: hf` needs `hf`"),
    ({"g": {"kind": "mmlu", "path": "x.jsonl"}}, "evals.g.kind"),
    ({"g": {"kind": "gsm8k", "path": "x.jsonl", "colour": "red"}}, "evals.g.colour"),
    ({"g": {"kind": "gsm8k", "path": "x.jsonl", "prompt_template": "{answer}"}}, "uses ['{answer}']"),
    ({"G G": {"kind": "gsm8k", "path": "x.jsonl"}}, "eval set name 'G G'"),
])
def test_registry_errors_name_the_file_and_field(tmp_path, evals, message):
    path = make_evals(tmp_path, evals)
    with pytest.raises(EvalRegistryError) as exc:
        load_evals(path, tmp_path)
    assert str(path) in str(exc.value) and message in str(exc.value)
    with pytest.raises(EvalRegistryError, match="not found"):
        load_evals(tmp_path / "missing.yaml")
