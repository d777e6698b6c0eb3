"""`embed_sample`: a per-source rate of chunks to embed (issue 14, item 3). The registry refuses rates outside (0, 1];
the draw is a stable hash of the chunk id, the same however a split is cut into shards and in any process; the
share drawn stays within a binomial band of the rate; `embeddings` holds a vector for exactly the drawn chunks and
its count check fails when one is missing or swapped; the n-gram index still covers every token; the reports and
search carry the split's `embed_share`."""

import math
import subprocess
import sys

import pytest
import yaml

from cp_assets.lib.corpus.chunking import Chunk
from cp_assets.lib.corpus.embed_sample import embed_shares, is_sampled, sampled_ids
from cp_assets.lib.corpus.registry import RegistryError, load_registry
from cp_assets.lib.corpus.sources import Document

MODEL, SLUG = "all-MiniLM-L6-v2", "all_minilm_l6_v2"


def within_binomial(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """k draws of n at rate p, for a hash that behaves like a fair coin: Binomial(n, p). A 4-sigma band is missed
    by a correct draw with probability ~6e-5 on fresh ids, and the ids here are fixed, so the test never flakes;
    a biased or broken draw (all, none, a wrong scale) lands far outside it."""
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- the registry ------------------------------------------------------------------------------------------------
def registry_file(tmp_path, rate) -> str:
    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {"mine": {"sources": [
        {"path": "a.jsonl", "name": "web", "text_field": "text", "embed_sample": rate},
        {"path": "b.jsonl", "name": "chat", "text_field": "text"}]}}}))
    return str(path)


@pytest.mark.parametrize("rate", [0, -0.5, 1.5, float("nan")])
def test_registry_refuses_a_rate_outside_zero_to_one(tmp_path, rate):
    with pytest.raises(RegistryError) as err:
        load_registry(registry_file(tmp_path, rate), tmp_path)
    said = str(err.value)
    assert "splits.mine.sources.0" in said and "source 'web': embed_sample=" in said and "must be > 0 and <= 1" in said


def test_registry_rates_per_source(tmp_path):
    split = load_registry(registry_file(tmp_path, 0.25), tmp_path).split("mine")
    assert split.embed_samples() == {"web": 0.25, "chat": 1.0}


# -- the draw ------------------------------------------------------------------------------------------------------
IDS = [f"web:{i}#{k}" for i in range(400) for k in range(2)]  # 800 chunk ids of 400 documents


def test_the_rate_is_kept_within_a_binomial_band_and_samples_nest():
    for rate in (0.05, 0.3, 0.5, 0.9):
        k = sum(is_sampled(c, rate) for c in IDS)
        assert within_binomial(k, len(IDS), rate), (rate, k)
    assert all(is_sampled(c, 1.0) for c in IDS)
    low, high = ({c for c in IDS if is_sampled(c, r)} for r in (0.2, 0.5))
    assert low < high, "a lower rate keeps a subset of the chunks (their vectors are reused)"


def test_the_draw_is_the_same_in_another_process():
    """A stable hash, not Python's salted hash(): another interpreter with another hash seed draws the same."""
    here = [c for c in IDS if is_sampled(c, 0.3)]
    code = ("import sys; from cp_assets.lib.corpus.embed_sample import is_sampled; "
            "print('\\n'.join(c for c in sys.stdin.read().split() if is_sampled(c, 0.3)))")
    out = subprocess.run([sys.executable, "-c", code], input="\n".join(IDS), capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "12345", "PATH": ""}).stdout.split()
    assert out == here and 0 < len(here) < len(IDS)


def toy_docs(split, ids, source):
    return [Document(f"{source}:{i}", split, source, f"f:{i}", 0, f"text {i}", {}) for i in ids]


def toy_chunks(split, ids, source):
    return [Chunk(f"{source}:{i}#{k}", f"{source}:{i}", split, k, 0, 6, 2, f"text {i}") for i in ids for k in range(2)]


def test_the_draw_does_not_depend_on_the_shard_cut(store):
    """The same documents stored as one shard and as three shards (cut unevenly, written in another order) draw
    the same chunks; each chunk at its own source's rate."""
    rates = {"web": 0.3, "chat": 0.8}
    cuts = {"00000": range(0, 37), "00001": range(37, 40), "00002": range(40, 150)}
    try:
        store.replace_documents("es_whole", toy_docs("es_whole", range(150), "web") +
                                toy_docs("es_whole", range(60), "chat"))
        store.replace_chunks("es_whole", toy_chunks("es_whole", range(150), "web") +
                             toy_chunks("es_whole", range(60), "chat"))
        for shard, ids in reversed(cuts.items()):
            chat = [i for i in ids if i < 60]
            store.replace_documents("es_cut", toy_docs("es_cut", ids, "web") + toy_docs("es_cut", chat, "chat"), shard)
            store.replace_chunks("es_cut", toy_chunks("es_cut", reversed(ids), "web") +
                                 toy_chunks("es_cut", chat, "chat"), shard)
        whole = sampled_ids(store, "es_whole", "00000", rates)
        per_shard = [sampled_ids(store, "es_cut", shard, rates) for shard in cuts]
        assert set().union(*per_shard) == whole == sampled_ids(store, "es_cut", None, rates)
        assert sum(map(len, per_shard)) == len(whole), "no chunk drawn twice"
        every = {c.chunk_id for c in toy_chunks("x", range(150), "web") + toy_chunks("x", range(60), "chat")}
        assert whole == {c for c in every if is_sampled(c, rates[c.split(":")[0]])}, "each at its source's rate"
        web = sum(c.startswith("web:") for c in whole)
        chat = sum(c.startswith("chat:") for c in whole)
        assert within_binomial(web, 300, 0.3) and within_binomial(chat, 120, 0.8), (web, chat)
        assert sampled_ids(store, "es_whole", "00000", {"web": 1.0}) is None, "no rate below 1: every chunk"
    finally:
        store.drop_split("es_whole")
        store.drop_split("es_cut")


# -- end to end: documents, chunks, embeddings, checks, n-gram index ---------------------------------------------------
SOURCES = [{"path": "gsm8k/train.jsonl.gz", "name": "gsm", "template": "User: {question}\nAssistant: {answer}",
            "limit": 80},
           {"path": "public_domain_texts/shakespeare_sonnets.txt.gz", "name": "sonnets", "split_on": "^\\s*$",
            "limit": 12}]


@pytest.fixture(scope="module")
def built(store, tmp_path_factory):
    """Split `es_sampled` (gsm at rate 0.5, sonnets whole) and `es_full` (the same sources, no rate): read, chunked,
    n-gram indexed; `es_sampled` embedded. Dropped afterwards."""
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.chunking import chunk_split
    from cp_assets.lib.corpus.embeddings import embed_and_publish
    from cp_assets.lib.corpus.encoder import load_tokenizer
    from cp_assets.lib.corpus.exact.ngram_split import drop_split_index, index_split
    from cp_assets.lib.corpus.shards import read_corpus

    path = tmp_path_factory.mktemp("embed_sample") / "corpora.yaml"
    sampled = [dict(SOURCES[0], embed_sample=0.5), SOURCES[1]]
    path.write_text(yaml.safe_dump({"splits": {"es_sampled": {"sources": sampled}, "es_full": {"sources": SOURCES}}}))
    registry = load_registry(path, settings.data_dir())
    figures = {}
    quiet = dict(log=lambda _: None)
    try:
        for split in ("es_sampled", "es_full"):
            read_corpus(registry, split, store, **quiet)
            chunk_split(store, split, load_tokenizer(MODEL), MODEL, **quiet)
            figures[split] = {"ngram": index_split(store, split, **quiet)[0]}
        rates = registry.split("es_sampled").embed_samples()
        figures["es_sampled"]["embed"] = embed_and_publish(store, "es_sampled", MODEL, rates=rates, **quiet)[0]
        yield {"rates": rates, "figures": figures}
    finally:
        for split in ("es_sampled", "es_full"):
            store.drop_split(split)
            drop_split_index(split)


def expected_draw(store, split, rates) -> tuple[set[str], set[str]]:
    """(drawn, all) chunk ids, computed here from the ids alone (document ids are `<source>:<key>`)."""
    every = {c for c, *_ in store.chunk_rows(split)}
    return {c for c in every if is_sampled(c, rates[c.split(":")[0]])}, every


def vector_ids(store, split) -> list[str]:
    with store.connect() as conn:
        return [r[0] for r in conn.execute(f"SELECT chunk_id FROM emb_{SLUG} WHERE split = %s", (split,)).fetchall()]


def test_vectors_exist_for_the_drawn_chunks_only(built, store):
    drawn, every = expected_draw(store, "es_sampled", built["rates"])
    md = built["figures"]["es_sampled"]["embed"]
    assert (md["chunks_total"], md["chunks_sampled"], md["embed_sample"]) == (len(every), len(drawn),
                                                                               {"gsm": 0.5, "sonnets": 1.0})
    assert md["embedded"] + md["reused"] == len(drawn) and md["status"] == "built"
    got = vector_ids(store, "es_sampled")
    assert sorted(got) == sorted(drawn), "one vector per drawn chunk, none for the others"
    gsm = [c for c in every if c.startswith("gsm:")]
    assert {c for c in every if c.startswith("sonnets:")} <= drawn, "a source at rate 1 is embedded whole"
    assert within_binomial(sum(c in drawn for c in gsm), len(gsm), 0.5) and len(gsm) > 60
    assert embed_shares(store, SLUG)["es_sampled"] == round(len(drawn) / len(every), 6) < 1


def test_the_count_check_wants_exactly_the_drawn_chunks(built, store):
    from cp_assets.lib.corpus.embeddings import embed_and_publish, embedding_checks

    rates, split = built["rates"], "es_sampled"
    drawn, every = expected_draw(store, split, rates)
    checks = embedding_checks(store, split, MODEL, rates=rates)
    assert all(passed for passed, _ in checks.values()), checks
    assert checks["count_matches_chunks"][1] == {"chunks": len(every), "chunks_sampled": len(drawn),
                                                 "embeddings": len(drawn), "sampled_with_vector": len(drawn)}
    assert not embedding_checks(store, split, MODEL)["count_matches_chunks"][0], "without the rates: all chunks"

    victim = min(drawn)
    with store.connect() as conn:  # one vector deleted: the count falls short
        conn.execute(f"DELETE FROM emb_{SLUG} WHERE split = %s AND chunk_id = %s", (split, victim))
    passed, fig = embedding_checks(store, split, MODEL, rates=rates)["count_matches_chunks"]
    assert not passed and (fig["embeddings"], fig["sampled_with_vector"]) == (len(drawn) - 1, len(drawn) - 1)
    md = embed_and_publish(store, split, MODEL, rates=rates, log=lambda _: None)[0]
    assert (md["embedded"], md["reused"]) == (1, len(drawn) - 1)
    assert embedding_checks(store, split, MODEL, rates=rates)["count_matches_chunks"][0]

    outsider = min(every - drawn)
    with store.connect() as conn:  # a vector moved to an undrawn chunk: the counts agree, the ids do not
        conn.execute(f"UPDATE emb_{SLUG} SET chunk_id = %s WHERE split = %s AND chunk_id = %s",
                     (outsider, split, victim))
    passed, fig = embedding_checks(store, split, MODEL, rates=rates)["count_matches_chunks"]
    assert not passed and fig["embeddings"] == len(drawn) and fig["sampled_with_vector"] == len(drawn) - 1
    md = embed_and_publish(store, split, MODEL, rates=rates, log=lambda _: None)[0]
    assert md["status"] == "built" and md["embedded"] == 1
    assert sorted(vector_ids(store, split)) == sorted(drawn)
    again = embed_and_publish(store, split, MODEL, rates=rates, log=lambda _: None)[0]
    assert (again["status"], again["embedded"]) == ("up_to_date", 0)


def test_a_lower_rate_keeps_a_subset_and_embeds_nothing(built, store):
    from cp_assets.lib.corpus.embeddings import embed_and_publish, embedding_checks

    lower = dict(built["rates"], gsm=0.2)
    drawn, _ = expected_draw(store, "es_sampled", lower)
    try:
        md = embed_and_publish(store, "es_sampled", MODEL, rates=lower, log=lambda _: None)[0]
        assert (md["embedded"], md["reused"], md["chunks_sampled"]) == (0, len(drawn), len(drawn))
        assert sorted(vector_ids(store, "es_sampled")) == sorted(drawn)
        assert embedding_checks(store, "es_sampled", MODEL, rates=lower)["count_matches_chunks"][0]
        assert not embedding_checks(store, "es_sampled", MODEL, rates=built["rates"])["count_matches_chunks"][0]
    finally:
        embed_and_publish(store, "es_sampled", MODEL, rates=built["rates"], log=lambda _: None)


def test_the_ngram_index_still_covers_every_token(built, store):
    """The exact index of the sampled split equals the unsampled split's, and every chunk left unembedded is found
    in it whole."""
    from cp_assets.lib.corpus.exact.ngram_split import index_matches_corpus, open_index
    from cp_assets.lib.reports.contamination import ngram_evidence

    sampled, full = (built["figures"][s]["ngram"] for s in ("es_sampled", "es_full"))
    keys = ("documents", "tokens", "bytes_per_token")
    assert [sampled[k] for k in keys] == [full[k] for k in keys] and sampled["tokens"] > 5_000
    assert sampled["documents"] == store.count("raw_corpus", "es_sampled") == 92
    assert index_matches_corpus(store, "es_sampled") == (True, {"indexed": 92, "documents": 92})
    drawn, _ = expected_draw(store, "es_sampled", built["rates"])
    left_out = [text for c, _, text, n in store.chunk_rows("es_sampled") if c not in drawn and n >= 20]
    assert len(left_out) > 20
    evidence = ngram_evidence(open_index("es_sampled"), left_out, n=13, min_span=10)
    assert all(e.ngram_overlap == 1.0 and e.contaminated_share == 1.0 for e in evidence)


def test_search_and_reports_carry_the_embed_share(built, store, tmp_path):
    from cp_assets.lib.corpus.exact.ngram_split import open_index
    from cp_assets.lib.corpus.search import hits_json, search
    from cp_assets.lib.reports.contamination import COLUMNS, contamination_rows
    from cp_assets.lib.reports.proximity import question_proximity
    from cp_assets.lib.reports.results_db import ResultsDB

    share = embed_shares(store, SLUG)["es_sampled"]
    drawn, every = expected_draw(store, "es_sampled", built["rates"])
    assert share == round(len(drawn) / len(every), 6)
    [hits] = search(store, ["Natalia sold clips to 48 of her friends"], split="es_sampled", k=2, engine="pgvector")
    assert [h["embed_share"] for h in hits_json(hits)] == [share, share]
    db = ResultsDB(tmp_path / "results.duckdb")
    samples = [{"sample_id": "q:1", "prompt": "How many clips did Natalia sell in April and May?"}]
    figures, items = question_proximity(store, db, MODEL, "toy", "es_sampled", samples, k=2, log=lambda _: None)
    assert figures["embed_share"] == share and items[0]["embed_share"] == share
    with db.connect(read_only=True) as con:
        assert con.execute("SELECT embed_share FROM eval_proximity WHERE split = 'es_sampled'").fetchall() == [(share,)]
    [row] = contamination_rows("toy", "es_sampled", [("q:1", samples[0]["prompt"])], open_index("es_sampled"), [],
                               embed_share=share)
    assert dict(zip(COLUMNS, row))["embed_share"] == share


def test_the_embeddings_asset_reads_the_rates_from_the_registry(materialized, store, resources, tmp_path):
    """Through Dagster: `math` embedded at rate 0.5 from a registry resource, its blocking checks pass on the drawn
    chunks; then embedded whole again (other tests read it)."""
    import dagster as dg

    from cp_assets.definitions import corpus_assets, corpus_checks
    from cp_assets.lib.core import settings
    from cp_assets.resources.corpus_registry import CorpusRegistry
    from cp_assets_tests.conftest import REGISTRY, corpus_key, metadata, shard_instance

    reg = yaml.safe_load(REGISTRY.read_text())
    reg["splits"]["math"]["sources"][0]["embed_sample"] = 0.5
    (tmp_path / "corpora.yaml").write_text(yaml.safe_dump(reg))
    sampled = dict(resources, registry=CorpusRegistry(corpora_file=str(tmp_path / "corpora.yaml"),
                                                      data_dir=str(settings.data_dir())))

    def run(res):
        result = dg.materialize(corpus_assets + corpus_checks, selection=["embeddings"], resources=res,
                                partition_key=corpus_key("math"), instance=shard_instance())
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert result.success and len(checks) == 3 and all(checks.values()), checks
        return metadata(result, "embeddings")

    try:
        md = run(sampled)
        drawn, every = expected_draw(store, "math", {"gsm8k": 0.5})
        assert (md["embed_sample"], md["chunks_sampled"], md["chunks_total"]) == ({"gsm8k": 0.5}, len(drawn),
                                                                                   len(every))
        assert sorted(vector_ids(store, "math")) == sorted(drawn) and 0 < len(drawn) < len(every)
    finally:
        md = run(resources)
    assert md["chunks_sampled"] == md["chunks_total"] == store.count("embeddings", "math", SLUG)
