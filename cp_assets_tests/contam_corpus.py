"""A small corpus split with GSM8K test items planted in it, for the contamination acceptance test.

Background: FineWeb-Edu documents and GSM8K *train* conversations (same style as the eval items, so the embedding
evidence has to tell a paraphrase from a merely similar word problem). Planted, 10 GSM8K test items each:
- verbatim:        the question as a short practice-problem page;
- in_document:     the question and its worked solution inside a longer FineWeb document;
- paraphrased:     a hand-written paraphrase (cp_assets_tests/data/gsm8k_paraphrases.json) as a forum post;
- numbers_changed: the question with every number changed, as a worksheet line.
Every other GSM8K test item is a clean control unless it is a near-duplicate (rapidfuzz ratio >= 70, a measure
independent of the detectors) of a background train question or of a planted item: GSM8K has such pairs (test 632
is train 20 with other names and numbers), and they are contamination the detectors should find, not controls.
"""

import gzip
import json
import random
import re
from pathlib import Path

KINDS = ("verbatim", "in_document", "paraphrased", "numbers_changed")
PARAPHRASES = Path(__file__).parent / "data" / "gsm8k_paraphrases.json"


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def planted_rows() -> dict[str, list[int]]:
    picked = sorted(random.Random(5).sample(range(1319), 40))
    by_kind = {k: picked[i * 10:(i + 1) * 10] for i, k in enumerate(KINDS)}
    assert by_kind["paraphrased"] == sorted(int(k) for k in json.loads(PARAPHRASES.read_text()))
    return by_kind


def change_numbers(text: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group()) * 3 + 7), text)


def near_duplicates(data_dir: Path, n_train: int = 30, min_ratio: float = 70) -> list[str]:
    """Unplanted GSM8K test items that nearly repeat a background train question or a planted item."""
    from rapidfuzz import fuzz, process

    test = [r["question"] for r in _rows(data_dir / "gsm8k" / "test.jsonl.gz")]
    planted = [r for rows in planted_rows().values() for r in rows]
    refs = [r["question"] for r in _rows(data_dir / "gsm8k" / "train.jsonl.gz")[:n_train]] + [test[r] for r in planted]
    best = process.cdist(test, refs, scorer=fuzz.ratio).max(axis=1)
    return [f"gsm8k:{i}" for i in range(len(test)) if best[i] >= min_ratio and i not in planted]


def write_corpus(path: Path, data_dir: Path, n_web: int = 30, n_train: int = 30) -> dict[str, list[str]]:
    """Write the split's JSONL (id, text); return kind -> planted sample ids (`gsm8k:<row>`)."""
    test = _rows(data_dir / "gsm8k" / "test.jsonl.gz")
    train = _rows(data_dir / "gsm8k" / "train.jsonl.gz")[:n_train]
    web = [r["text"] for r in _rows(data_dir / "fineweb_edu_sample" / "fineweb_edu_sample10bt_150.jsonl.gz")]
    paraphrases = json.loads(PARAPHRASES.read_text())
    docs = [{"id": f"web{i}", "text": t} for i, t in enumerate(web[40:40 + n_web])]
    docs += [{"id": f"train{i}", "text": f"User: {r['question']}\nAssistant: {r['answer']}"} for i, r in enumerate(train)]
    planted = planted_rows()
    for kind, rows in planted.items():
        for j, row in enumerate(rows):
            q, a = test[row]["question"], test[row]["answer"]
            if kind == "verbatim":
                text = f"Practice problem {j + 1}\n\n{q}\n\nShow your work."
            elif kind == "in_document":
                text = f"{web[100 + j][:1500]}\n\nWorked example. {q}\nSolution: {a}\n\n{web[110 + j][:1500]}"
            elif kind == "paraphrased":
                text = f"Can anyone help me with this homework question?\n\n{paraphrases[str(row)]}"
            else:
                text = f"Worksheet, question {j + 1}: {change_numbers(q)}"
            docs.append({"id": f"{kind}{j}", "text": text})
    random.Random(0).shuffle(docs)
    with gzip.open(path, "wt") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
    return {kind: [f"gsm8k:{r}" for r in rows] for kind, rows in planted.items()}
