"""The suffix-array index and verbatim tracing: exact counts against brute force, unchanged shards kept, changed ones
rebuilt, a crash mid-build leaving the old index, contamination evidence (n-gram share, buckets, GPT-4 substrings,
the flag rule). No Postgres: plain lib calls."""

import random

import numpy as np
import pytest

from cp_assets.lib.reports.contamination import (FlagRule, NgramEvidence, bucket, ngram_evidence, normalize, substring_hits,
                                         substring_probes)
from cp_assets.lib.corpus.exact.ngram_index import NgramIndex, tokenize
from cp_assets.lib.reports.trace import covered, kgram_presence, trace

# every word is one WordPiece token, so token positions are word positions
WORDS = "the cat dog red blue ran sat on a mat big small old new green house tree car".split()


def corpus(n_docs=30, length=80, seed=0):
    rng = random.Random(seed)
    return [(f"d{i}", " ".join(rng.choice(WORDS[:8]) for _ in range(length))) for i in range(n_docs)]


def brute_maximal(query: list[str], docs: list[list[str]], min_len: int) -> dict[tuple[int, int], int]:
    """(start, end) -> occurrence count of each maximal span, by scanning every document."""
    def count(span):
        k = len(span)
        return sum(d[p:p + k] == span for d in docs for p in range(len(d) - k + 1))

    best = {}
    for i in range(len(query)):
        j = i
        while j < len(query) and count(query[i:j + 1]):
            j += 1
        if j - i >= 1:
            best[i] = j
    spans, reach = {}, -1
    for i in sorted(best):
        if best[i] > reach:
            reach = best[i]
            if best[i] - i >= min_len:
                spans[(i, best[i])] = count(query[i:best[i]])
    return spans


@pytest.fixture()
def small_index(tmp_path):
    docs = corpus()
    idx = NgramIndex(tmp_path / "s.json", n=4)
    idx.update(docs, max_segment_tokens=700, log=lambda m: None)  # several segments, merged exactly
    assert len(idx.segments) >= 3
    return idx, docs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_maximal_spans_and_counts_equal_brute_force(small_index, seed):
    idx, docs = small_index
    rng = random.Random(seed)
    words = [d.split() for _, d in docs]
    pieces = []
    for _ in range(4):  # corpus slices glued with fresh words: spans of several lengths and counts
        w = rng.choice(words)
        a = rng.randrange(0, 60)
        pieces += w[a:a + rng.randrange(4, 15)] + [rng.choice(WORDS[8:])]
    got = {(s.token_start, s.token_end): s.count for s in trace(idx, " ".join(pieces), min_tokens=5)}
    assert got == brute_maximal(pieces, words, 5)
    assert got, "the query was built from corpus slices"


def lengths(n_tokens, starts, ends):
    """The longest-match length at each position given these matches [start, end)."""
    return np.array([max([e - i for s, e in zip(starts, ends) if s <= i < e], default=0) for i in range(n_tokens)])


@pytest.mark.parametrize("starts, ends, n_tokens, k, present", [
    ([0], [10], 12, 8, [True, True, True, False, False]),
    ([0, 5], [7, 12], 12, 8, [False] * 5),          # two overlapping matches do not make an 8-gram
    ([2], [12], 12, 10, [False, False, True]),
    ([], [], 5, 8, []),
])
def test_kgram_presence(starts, ends, n_tokens, k, present):
    assert kgram_presence(lengths(n_tokens, starts, ends), k).tolist() == present


@pytest.mark.parametrize("starts, ends, min_len, share", [
    ([0], [10], 10, 10 / 20), ([0], [9], 10, 0.0), ([0, 5], [10, 20], 10, 1.0), ([0, 15], [12, 20], 5, 17 / 20)])
def test_covered_share(starts, ends, min_len, share):
    assert covered(lengths(20, starts, ends), min_len).mean() == pytest.approx(share)


def answers(idx, queries):
    return [[(s.token_start, s.token_end, s.count, s.n_docs) for s in trace(idx, q, min_tokens=4)] for q in queries]


def test_unchanged_documents_keep_the_index_and_a_change_rebuilds_it_equal_to_a_fresh_build(tmp_path):
    docs = corpus(40)
    queries = [" ".join(t.split()[5:25]) + " green house" for _, t in docs[::7]]
    idx = NgramIndex(tmp_path / "inc.json", n=4)
    first = idx.update(docs[:30], log=lambda m: None)
    assert (first.added, first.kept, first.removed, first.rebuilt) == (30, 0, 0, True)
    version, folder = idx.version(), idx.folder
    again = idx.update(list(reversed(docs[:30])), log=lambda m: None)
    assert not again.rebuilt and again.kept == 30 and idx.version() == version and idx.folder == folder
    changed = [(d, t + " green house") if d == "d7" else (d, t) for d, t in docs[5:]]  # -5 docs, +10, 1 changed
    second = idx.update(changed, log=lambda m: None)
    assert (second.added, second.kept, second.removed, second.rebuilt) == (11, 24, 5, True)
    assert not folder.exists() and idx.folder.exists(), "the old folder is removed once the new one is published"
    fresh = NgramIndex(tmp_path / "fresh.json", n=4)
    fresh.update(changed, log=lambda m: None)
    assert answers(idx, queries) == answers(fresh, queries) and idx.version() == fresh.version()
    assert any(answers(idx, queries))


def test_a_crash_mid_build_leaves_the_old_index_and_the_rerun_completes(tmp_path):
    docs = corpus(40)

    def failing():
        for i, d in enumerate(docs):
            if i == 25:
                raise RuntimeError("killed")
            yield d

    idx = NgramIndex(tmp_path / "c.json", n=4)
    idx.update(docs[:10], log=lambda m: None)
    calls = iter([lambda: iter(docs), failing])
    with pytest.raises(RuntimeError):
        idx.update(lambda: next(calls)(), log=lambda m: None)  # hashed whole, killed while building
    assert NgramIndex(idx.path).stats()["n_docs"] == 10, "readers still see the old index, whole"
    assert idx.update(docs, log=lambda m: None).rebuilt and NgramIndex(idx.path).stats()["n_docs"] == 40
    fresh = NgramIndex(tmp_path / "f.json", n=4)
    fresh.update(docs, log=lambda m: None)
    queries = [" ".join(t.split()[3:30]) for _, t in docs[::5]]
    assert answers(NgramIndex(idx.path), queries) == answers(fresh, queries)
    assert not list(tmp_path.glob(".*tmp*")) or all(p.is_dir() for p in tmp_path.glob(".*tmp*"))


def test_other_settings_rebuild_and_short_spans_are_exact(small_index, tmp_path):
    idx, docs = small_index
    assert NgramIndex(idx.path, n=6).update(docs, log=lambda m: None).rebuilt, "another n is another version"
    assert NgramIndex(idx.path).n == 6
    words = [d.split() for _, d in docs]
    query = words[3][10:13] + ["green"] + words[9][:2]
    got = {(s.token_start, s.token_end): s.count for s in trace(NgramIndex(idx.path), " ".join(query), min_tokens=2)}
    assert got == brute_maximal(query, words, 2) and got
    with pytest.raises(ValueError, match="occurs twice"):
        NgramIndex(tmp_path / "dup.json").update([("a", "x y"), ("a", "z")], log=lambda m: None)


def test_bit_packed_suffix_array_is_the_sorted_suffixes():
    from pydivsufsort import divsufsort

    from cp_assets.lib.corpus.exact.suffix_kernels import pack, unpack

    rng = np.random.default_rng(0)
    tok = rng.integers(0, 5, size=3000).astype(np.uint16)
    sa = divsufsort(tok)
    assert [tuple(tok[i:i + 30]) for i in sa[:200]] == sorted(tuple(tok[i:i + 30]) for i in sa[:200])
    for w in (12, 13, 17, 33):
        packed = np.zeros((len(sa) * w + 7) // 8 + 8, dtype=np.uint8)
        pack(sa, w, packed)
        assert (unpack(packed, w, len(sa)) == sa).all()


def test_trace_snippets_locate_real_text(small_index):
    idx, docs = small_index
    text = dict(docs)["d7"]
    query = "green " + " ".join(text.split()[10:30]) + " house"
    [span] = trace(idx, query, min_tokens=12, doc_text=lambda ids: {i: dict(docs)[i] for i in ids})
    assert span.n_tokens >= 20 and span.text == " ".join(text.split()[10:30])
    loc = next(loc for loc in span.locations if loc.doc_id == "d7")
    assert loc.verified and dict(docs)["d7"][loc.char_start:loc.char_end] == span.text
    assert "\u00ab" + span.text + "\u00bb" in loc.snippet


@pytest.mark.parametrize("share, name", [(0.0, "clean"), (0.19, "clean"), (0.2, "not_clean"), (0.79, "not_clean"),
                                         (0.8, "dirty"), (1.0, "dirty")])
def test_llama2_buckets(share, name):
    assert bucket(share) == name


def test_ngram_evidence_of_verbatim_partial_and_clean_items(tmp_path):
    docs = [("a", "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                  "How many clips did Natalia sell altogether in April and May?"),
            ("b", "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.")]
    idx = NgramIndex(tmp_path / "e.json")
    idx.update(docs, log=lambda m: None)
    verbatim, partial, clean = ngram_evidence(idx, [
        docs[0][1], "Weng earns $12 an hour for babysitting. How much did she earn in total last week, in dollars?",
        "A train leaves the station at noon and travels east at sixty miles per hour for three hours."])
    assert verbatim.ngram_overlap == 1.0 and verbatim.contaminated_share == 1.0 and bucket(1.0) == "dirty"
    assert 0 < partial.contaminated_share < 0.8 and 0 < partial.ngram_overlap < 1
    assert clean.ngram_overlap == 0.0 and clean.contaminated_share == 0.0 and clean.rare_share == 0.0
    assert clean.longest_span < 6, "only short common phrases occur"
    [short] = ngram_evidence(idx, [docs[1][1]], n=5, min_span=3)  # any n: the suffix array has no window
    assert short.ngram_overlap == 1.0


def test_gpt4_substring_probes_and_hits():
    q = "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins."
    probes = substring_probes("gsm8k:0", q)
    assert probes == substring_probes("gsm8k:0", q) and len(probes) == 3
    assert all(len(p) == 50 and p in normalize(q) for p in probes)
    assert substring_probes("x", "too short") == [] and substring_probes("x", "a" * 30) == ["a" * 30]
    corpus_texts = ["Some page.\n" + q.upper().replace(" ", "  "), "unrelated text"]
    assert substring_hits([probes, substring_probes("y", "A completely different question about trains and "
                                                         "apples and sixty miles.")], corpus_texts) == [3, 0]


@pytest.mark.parametrize("share, hits, dist, flagged, reason", [
    (0.9, 3, 0.05, True, "ngram,substring,embedding"), (0.0, 0, 0.15, True, "embedding"), (0.3, 0, None, False, None),
    (0.0, 0, 0.5, False, None), (0.55, 0, None, True, "ngram"), (0.1, 3, None, True, "substring"),
    (0.1, 2, None, False, None), (0.0, 0, 0.16, False, None)])
def test_flag_rule(share, hits, dist, flagged, reason):
    ev = NgramEvidence(20, share, share, 10, share)
    assert FlagRule().apply(ev, hits, dist) == (flagged, reason)
    common = NgramEvidence(20, share, 0.9, 10, 0.0)  # matches only in boilerplate found in many documents
    assert FlagRule().apply(common, 0, None)[1] != "ngram"


def test_choose_rule_takes_the_best_f1_and_the_strictest_rule_on_a_plateau():
    from cp_assets.lib.reports.contamination import choose_rule, score_rule

    def row(share=0.0, hits=0, dist=0.6):
        return {"rare_share": share, "substring_hits": hits, "nn_distance": dist}

    # positives: two copies (share 0.9, all probes) and two paraphrases (cosine 0.12, 0.14); controls: a similar
    # problem at 0.18, one with one probe found (a shared phrase), one with share 0.35
    rows = [row(0.9, 3), row(0.95, 3), row(dist=0.12), row(dist=0.14), row(dist=0.18), row(hits=1), row(0.35)]
    labels = [True, True, True, True, False, False, False]
    best = choose_rule(rows, labels)
    assert (best.precision, best.recall, best.tp, best.fp) == (1.0, 1.0, 4, 0)
    # every share in [0.4, 0.8] and every cosine in [0.14, 0.175] is perfect: the strictest of them is taken
    assert best.rule.min_share == 0.8 and best.rule.min_substring_hits == 3 and best.rule.max_nn_cosine == 0.15
    loose = score_rule(FlagRule(0.3, 1, 0.2), rows, labels)
    assert (loose.tp, loose.fp) == (4, 3) and loose.precision == 4 / 7


def test_boilerplate_matches_do_not_count_toward_rare_share(tmp_path):
    rng = random.Random(0)
    tail = "Express your answer as a common fraction in lowest terms please."
    docs = [(f"p{i}", f"Problem {i}: what is {rng.randint(2, 99)} divided by {rng.randint(2, 99)}? {tail}")
            for i in range(15)]
    item = "A jar holds seven red marbles and five blue ones; one is drawn at random. What is the chance it is blue?"
    docs.append(("copy", "Worked example. " + item + " " + tail))
    idx = NgramIndex(tmp_path / "b.json")
    idx.update(docs, log=lambda m: None)
    fresh, copied = ngram_evidence(idx, ["Find the area of a circle of radius two. " + tail, item + " " + tail])
    assert fresh.contaminated_share > 0.4 and fresh.rare_share == 0.0, "the tail occurs in 16 documents"
    assert copied.contaminated_share == 1.0 and 0.8 < copied.rare_share < 1.0, "all but the common tail"


def test_tokenize_offsets_map_back_to_text():
    [tk] = tokenize("all-minilm-l6-v2", ["Héllo, World! 42"])
    assert [("Héllo, World! 42")[a:b] for a, b in tk.offsets] == ["Héllo", ",", "World", "!", "42"]


def test_a_split_index_over_shards_answers_as_one_index(tmp_path):
    """Three shard indexes read as one (`SplitIndex`): the same maximal spans, counts, documents and contamination
    evidence as a single index over all documents; files of the earlier DuckDB format are not read."""
    from cp_assets.lib.corpus.exact.ngram_index import index_path
    from cp_assets.lib.corpus.exact.ngram_split import SplitIndex, built_splits, open_index, shard_files

    docs = corpus(n_docs=30, seed=5)
    whole = NgramIndex(tmp_path / "whole.json", n=4)
    whole.update(docs, log=lambda m: None)
    for k, part in enumerate((docs[:7], docs[7:20], docs[20:])):
        NgramIndex(index_path("s", tmp_path, f"{k:05d}"), n=4).update(part, log=lambda m: None)
    split = open_index("s", tmp_path)
    assert isinstance(split, SplitIndex) and split.stats()["n_docs"] == 30 and built_splits(tmp_path) == ["s"]
    rng = random.Random(7)
    words = [d.split() for _, d in docs]
    for _ in range(5):
        w = rng.choice(words)
        i = rng.randrange(len(w) - 12)
        query = " ".join(["green house"] + w[i:i + 12] + ["tree car"] + rng.choice(words)[:6])

        def spans(index):
            return [(s.token_start, s.token_end, s.count, s.n_docs,
                     sorted(loc.doc_id for loc in s.locations) if s.n_docs <= 5 else None)
                    for s in trace(index, query, min_tokens=5, max_docs=5)]

        assert spans(split) == spans(whole) and spans(whole)
    texts = [" ".join(w[:20]) for w in words[:4]] + ["green house tree car " * 5]
    assert ngram_evidence(split, texts, n=6, min_span=5) == ngram_evidence(whole, texts, n=6, min_span=5)
    # a changed shard rebuilds itself only; the split then answers for its new documents
    manifests = {k: p.stat().st_mtime_ns for k, p in shard_files("s", tmp_path).items()}
    changed = [(d, t + " green house tree car blue") for d, t in docs[7:20]]
    assert NgramIndex(index_path("s", tmp_path, "00001"), n=4).update(changed, log=lambda m: None).rebuilt
    after = {k: p.stat().st_mtime_ns for k, p in shard_files("s", tmp_path).items()}
    assert [k for k in after if after[k] != manifests[k]] == ["00001"]
    assert [s.count for s in trace(open_index("s", tmp_path), "house tree car blue", min_tokens=4)] == [13]
    old = tmp_path / "ngrams" / "old"
    old.mkdir(parents=True)
    (old / "00000.duckdb").write_bytes(b"an index of the earlier format")
    assert shard_files("old", tmp_path) == {} and "old" not in built_splits(tmp_path)
