"""`cprox explain` and the provenance library on the test splits (`tiny`, `math`, materialized once per session):
spans with their documents, neighbours per split, seen_score on a corpus sentence and on an invented one, the
common-word rule, BM25 ranking, the weight choice on the stored dev features, and every bad input's error."""

import json
import re

import numpy as np
import pytest

from cp_assets.lib.provenance import seen_score as ss
from cp_assets.lib.provenance.explain import MAX_TEXT_BYTES, ExplainError, check_text
from cp_assets.lib.provenance.spans import bm25_rank, common_only

DATA = __import__("pathlib").Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def explainer(materialized, store):
    from cp_assets.lib.provenance.explain import Explainer
    from cp_assets.lib.reports.results_db import ResultsDB

    return Explainer.open(store, ResultsDB(), tree="all", log=lambda m: None)


def corpus_sentence(store) -> tuple[str, str]:
    """(a 14-30 word sentence of a FineWeb page of `tiny`, its document id)."""
    for doc in store.iter_documents("tiny"):
        if not doc.doc_id.startswith("fineweb"):
            continue
        for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.text.split())):
            if 14 <= len(s.split()) <= 30 and s[0].isupper():
                return s, doc.doc_id
    raise AssertionError("no sentence found")


def test_a_corpus_sentence_is_traced_to_its_document_and_seen(explainer, store):
    text, doc_id = corpus_sentence(store)
    r = explainer.explain(text)
    assert r["splits"] == ["math", "tiny"]
    tiny = [s for s in r["spans"] if s["split"] == "tiny"]
    assert tiny and any(d["doc_id"] == doc_id for s in tiny for d in s["docs"]), r["spans"]
    best = max(tiny, key=lambda s: s["n_tokens"])
    assert best["count"] >= 1 and text[best["char_start"]:best["char_end"]] == best["text"]
    assert max(d["relevance"] for s in tiny for d in s["docs"]) == pytest.approx(1.0)
    assert set(r["neighbours"]) == {"math", "tiny"}
    near = r["neighbours"]["tiny"][0]
    assert near["doc_id"] == doc_id and 0 <= near["percentile"] <= 100
    assert r["seen"] and r["seen_score"] >= ss.THRESHOLD
    assert r["sentences"][0]["evidence"]["exact_share"] == 1.0


def test_an_invented_sentence_is_not_seen_and_has_no_spans(explainer):
    r = explainer.explain("The lighthouse keeper of Vellmoor counted exactly 4,117 gulls on the ninth of Brumaire.")
    assert not r["seen"] and r["seen_score"] < ss.THRESHOLD
    assert [s for s in r["spans"] if s["n_tokens"] >= 6] == []


def test_many_texts_at_once_match_one_at_a_time(explainer, store):
    text, _ = corpus_sentence(store)
    other = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    both = explainer.explain_many([text, other])
    alone = [explainer.explain(t) for t in (text, other)]
    # the same answers (batched encoding pads, so scores agree to float tolerance)
    assert [b["seen_score"] for b in both] == pytest.approx([a["seen_score"] for a in alone], abs=1e-3)
    assert [[s["text"] for s in b["spans"]] for b in both] == [[s["text"] for s in a["spans"]] for a in alone]
    assert both[1]["seen"]  # a GSM8K train question of the `math` split


def test_spans_of_common_words_only_are_dropped():
    unigrams = np.array([500, 400, 300, 1, 2] + [0] * 5)  # ids 0-2 common, 3-4 rare (of 1,203 tokens)
    assert common_only(np.array([0, 1, 2]), unigrams, 0.1) == (True, pytest.approx(300 / 1203))
    dropped, low = common_only(np.array([0, 3, 1]), unigrams, 0.1)
    assert not dropped and low == pytest.approx(1 / 1203)


def test_bm25_ranks_the_document_about_the_text_first():
    docs = {"a": "the cat sat on the mat and the cat slept", "b": "solar cells have donor and acceptor layers",
            "c": "a donor gave money"}
    ranked = bm25_rank("the donor and acceptor layers of polymer solar cells", docs)
    assert [d for d, _ in ranked] == ["b", "c", "a"] and ranked[0][1] > ranked[1][1] > 0 == ranked[2][1]


def test_the_shipped_weights_are_the_dev_half_choice():
    """benchmarks/seen_score.py wrote the dev half's features (the demo corpus); the choice re-run on them gives the
    constants in seen_score.py; out of fold (5-fold, the chosen features and C) it separates paraphrases from
    invented sentences at >= 0.98, and verbatim ones at 1.0."""
    stored = json.loads((DATA / "seen_dev_features.json").read_text())
    assert stored["features"] == list(ss.FEATURES)
    x = np.array([r["x"] for r in stored["rows"]])
    kinds = np.array([r["kind"] for r in stored["rows"]])
    assert {k: int((kinds == k).sum()) for k in set(kinds)} == {"verbatim": 76, "paraphrased": 76, "invented": 76}
    chosen = ss.choose_weights(x, kinds)
    assert chosen["weights"] == ss.WEIGHTS and chosen["intercept"] == ss.INTERCEPT
    assert chosen["threshold"] == ss.THRESHOLD
    verbatim, paraphrased = chosen["cv"][(chosen["features"], chosen["train_on"], chosen["C"])]
    assert verbatim == 1.0 and paraphrased >= 0.98
    got = {r["score"]: r for r in ss.report(x, kinds)}  # the plain scores are not fitted: no fold needed
    assert paraphrased > got["plain search"]["paraphrased"] + 0.05
    assert paraphrased > got["plain tracing"]["paraphrased"] + 0.2


def test_bad_input_says_what_is_wrong(explainer, store):
    from cp_assets.lib.provenance.explain import Explainer, rollout_text
    from cp_assets.lib.reports.results_db import ResultsDB

    with pytest.raises(ExplainError, match="empty"):
        check_text("  \n")
    with pytest.raises(ExplainError, match=r"1,000,001 bytes, over the limit of 1,000,000 \(1 MB\)"):
        check_text("x" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(ExplainError, match="no rollout 'nobody/gsm8k-0' in the results database"):
        rollout_text(ResultsDB(), "nobody/gsm8k-0")
    with pytest.raises(ExplainError, match="expected MODEL/SAMPLE_ID"):
        rollout_text(ResultsDB(), "no-slash")
    with pytest.raises(ExplainError, match=r"split 'contam_nothing' lacks an n-gram index.*cprox materialize --split"):
        Explainer.open(store, ResultsDB(), splits=["contam_nothing"], tree="", log=lambda m: None)


def test_cli_queries_print_one_json_line_per_text(explainer, store, tmp_path, capsys):
    from cp_assets.cli.main import main

    text, _ = corpus_sentence(store)
    queries = tmp_path / "q.txt"
    queries.write_text(f"{text}\n\nThe moon is made of green cheese, said nobody in the archive.\n")
    assert main(["explain", "--queries", str(queries), "--quiet", "--tree", ""]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert [r["text"] for r in lines] == [text, "The moon is made of green cheese, said nobody in the archive."]
    assert lines[0]["seen"] and not lines[1]["seen"]
    empty = tmp_path / "e.txt"
    empty.write_text("\n")
    assert main(["explain", "--queries", str(empty)]) == 2
    assert "no non-empty line" in " ".join(capsys.readouterr().err.split())


def test_metadata_tables_link_rows_to_the_explorer(monkeypatch):
    from urllib.parse import parse_qs, urlparse

    from cp_assets.lib.core.metadata import explorer_link, table

    monkeypatch.setenv("CPROX_EXPLORER_URL", "http://127.0.0.1:9999/")
    link = explorer_link(rollout="tiny-adamw-s0/gsm8k:12|x")
    url = re.search(r"\((.*)\)", link).group(1)
    assert url.startswith("http://127.0.0.1:9999/?") and parse_qs(urlparse(url).query) == {
        "rollout": ["tiny-adamw-s0/gsm8k:12|x"]}
    md = table([{"q": "a" * 300, "explore": link}], ["q", "explore"], width=40)
    assert md.splitlines()[2] == f"| {'a' * 40} | {link.replace('|', '%7C')} |"  # the link is never cut


def test_the_bm25_index_is_cached_by_chunk_version_and_a_damaged_cache_is_rebuilt(materialized, store, tmp_path,
                                                                                   caplog):
    from cp_assets.lib.provenance.bm25_chunks import Bm25Chunks

    text, doc_id = corpus_sentence(store)
    built = Bm25Chunks(store, ["tiny", "math"], cache_dir=tmp_path)
    assert len(built) == store.count("chunks", "tiny") + store.count("chunks", "math")
    assert (built.path / "checksums.json").exists()
    first = built.top([text], 5)[0]
    assert first[0].doc_id == doc_id and text.split()[3] in first[0].text
    again = Bm25Chunks(store, ["math", "tiny"], cache_dir=tmp_path)  # the same chunk versions: read, not built
    assert again.path == built.path and [c.doc_id for c in again.top([text], 5)[0]] == [c.doc_id for c in first]
    assert again.idf == built.idf
    assert Bm25Chunks(store, ["tiny"], cache_dir=tmp_path).path != built.path
    (built.path / "keys.npy").write_bytes(b"damaged")
    with caplog.at_level("WARNING"):
        mended = Bm25Chunks(store, ["tiny", "math"], cache_dir=tmp_path)
    assert "corrupt or truncated" in caplog.text and str(built.path) in caplog.text
    assert [c.doc_id for c in mended.top([text], 5)[0]] == [c.doc_id for c in first]
