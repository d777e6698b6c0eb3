"""A corpus split with GSM8K test items planted in a realistic background, for the contamination acceptance test.

Background: every GSM8K *train* conversation (7,473, the same style as the eval items, so the embedding evidence has
to tell a paraphrase from a merely similar word problem) and 110 of the 150 FineWeb-Edu pages of the shared sample
(the other 40 wrap planted items). Planted GSM8K test items:
- verbatim (20):        the question as a short practice-problem page;
- in_document (20):     the question and its worked solution inside a longer FineWeb page;
- paraphrased (24):     a hand-written paraphrase (cp_assets_tests/data/gsm8k_paraphrases.json) as a forum post;
- numbers_changed (20): the question with every number changed, as a worksheet line.
Near-duplicates: unplanted test items whose rapidfuzz ratio to a train question or a planted item is >= 70 (a
measure independent of the detectors; GSM8K has such pairs: test 632 is train 20 with other names and numbers).
They are neither positives nor controls: the test reports them as a row of their own. Every other test item is a
clean control.

Dev and test halves: the planted items of each kind alternate (sorted by row: even positions dev, odd test), and
controls and near-duplicates go by row parity (even dev). Thresholds are chosen on dev only; the test scores test.
"""

import gzip
import json
import random
import re
from pathlib import Path

KINDS = ("verbatim", "in_document", "paraphrased", "numbers_changed")
PARAPHRASES = Path(__file__).parent / "data" / "gsm8k_paraphrases.json"
N_WEB_BACKGROUND = 110  # FineWeb pages 0-109 are background; 110-149 wrap the in_document items
N_TEST = 1319


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def planted_rows() -> dict[str, list[int]]:
    """kind -> GSM8K test rows: the 10 per kind of the first version of this test, plus 10 more (14 paraphrases)."""
    first = sorted(random.Random(5).sample(range(N_TEST), 40))
    by_kind = {k: first[i * 10:(i + 1) * 10] for i, k in enumerate(KINDS)}
    more = random.Random(6).sample([r for r in range(N_TEST) if r not in set(first)], 44)
    for kind, rows in (("verbatim", more[:10]), ("in_document", more[10:20]), ("numbers_changed", more[20:30]),
                       ("paraphrased", more[30:44])):
        by_kind[kind] = sorted(by_kind[kind] + rows)
    assert by_kind["paraphrased"] == sorted(int(k) for k in json.loads(PARAPHRASES.read_text()))
    return by_kind


def half_of_planted(kind_rows: list[int]) -> dict[int, str]:
    return {row: ("dev" if i % 2 == 0 else "test") for i, row in enumerate(sorted(kind_rows))}


def half(sample_id: str, planted: dict[str, list[int]]) -> str:
    """`dev` or `test` for a `gsm8k:<row>` sample id."""
    row = int(sample_id.split(":")[1])
    for rows in planted.values():
        if row in rows:
            return half_of_planted(rows)[row]
    return "dev" if row % 2 == 0 else "test"


def change_numbers(text: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group()) * 3 + 7), text)


def near_duplicates(data_dir: Path, min_ratio: float = 70) -> list[str]:
    """Unplanted GSM8K test items that nearly repeat a background train question or a planted item."""
    from rapidfuzz import fuzz, process

    test = [r["question"] for r in _rows(data_dir / "gsm8k" / "test.jsonl.gz")]
    planted = {r for rows in planted_rows().values() for r in rows}
    refs = [r["question"] for r in _rows(data_dir / "gsm8k" / "train.jsonl.gz")] + [test[r] for r in sorted(planted)]
    best = process.cdist(test, refs, scorer=fuzz.ratio, workers=-1).max(axis=1)
    return [f"gsm8k:{i}" for i in range(len(test)) if best[i] >= min_ratio and i not in planted]


def write_corpus(path: Path, data_dir: Path) -> dict[str, list[str]]:
    """Write the split's JSONL (id, text); return kind -> planted sample ids (`gsm8k:<row>`)."""
    test = _rows(data_dir / "gsm8k" / "test.jsonl.gz")
    train = _rows(data_dir / "gsm8k" / "train.jsonl.gz")
    web = [r["text"] for r in _rows(data_dir / "fineweb_edu_sample" / "fineweb_edu_sample10bt_150.jsonl.gz")]
    paraphrases = json.loads(PARAPHRASES.read_text())
    docs = [{"id": f"web{i}", "text": t} for i, t in enumerate(web[:N_WEB_BACKGROUND])]
    docs += [{"id": f"train{i}", "text": f"User: {r['question']}\nAssistant: {r['answer']}"} for i, r in enumerate(train)]
    planted = planted_rows()
    wrappers = web[N_WEB_BACKGROUND:]
    for kind, rows in planted.items():
        for j, row in enumerate(rows):
            q, a = test[row]["question"], test[row]["answer"]
            if kind == "verbatim":
                text = f"Practice problem {j + 1}\n\n{q}\n\nShow your work."
            elif kind == "in_document":
                text = f"{wrappers[2 * j][:1500]}\n\nWorked example. {q}\nSolution: {a}\n\n{wrappers[2 * j + 1][:1500]}"
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
