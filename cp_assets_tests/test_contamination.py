"""Contamination acceptance test: GSM8K test items planted in a realistic split (all of GSM8K train and the FineWeb
sample; see contam_corpus.py): verbatim, inside a longer page with their solution, paraphrased, numbers changed;
every other GSM8K test item is a clean control, except the near-duplicates of the background, a row of their own.
Runs the real assets (raw_corpus -> chunks -> embeddings + ngram_index; eval_samples; eval_proximity ->
contamination). The flag's thresholds are chosen on the dev half (`choose_rule`) and must be the shipped defaults;
precision and recall are measured on the test half, which the choice never saw. Prints the figures (`-s`)."""

import dagster as dg
import pytest

from cp_assets.lib.core import settings
from cp_assets.lib.corpus.exact.ngram_split import drop_split_index
from cp_assets.lib.reports.contamination import FlagRule, choose_rule, score_rule
from cp_assets_tests.conftest import TEST_HOME, corpus_key, metadata, shard_instance
from cp_assets_tests.contam_corpus import half, near_duplicates, planted_rows, write_corpus

SPLIT = "contam"
KEY = dg.MultiPartitionKey({"eval_set": "gsm8k", "split": SPLIT})

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(store, resources):
    from cp_assets.definitions import corpus_assets, corpus_checks
    from cp_assets.defs.evals.eval_samples import eval_samples
    from cp_assets.defs.reports.contamination import contamination
    from cp_assets.defs.reports.eval_proximity import eval_proximity

    kinds = write_corpus(TEST_HOME / "contam.jsonl.gz", settings.data_dir())
    near = near_duplicates(settings.data_dir())
    assert dg.materialize(corpus_assets + corpus_checks, partition_key=corpus_key(SPLIT), instance=shard_instance(),
                          resources=resources).success
    assert dg.materialize([eval_samples], partition_key="gsm8k", resources=resources).success
    result = dg.materialize([eval_proximity, contamination], partition_key=KEY, resources=resources)
    assert result.success
    yield kinds, near, result
    store.drop_split(SPLIT)  # other tests search every embedded split
    drop_split_index(SPLIT)


def rows(results_db) -> dict[str, dict]:
    with results_db.connect(read_only=True) as con:
        cur = con.execute("SELECT * FROM contamination WHERE eval_set = 'gsm8k' AND split = ?", [SPLIT])
        cols = [d[0] for d in cur.description]
        return {row[cols.index("sample_id")]: dict(zip(cols, row)) for row in cur.fetchall()}


def labelled(table: dict[str, dict], kinds: dict[str, list[str]], near: list[str], which: str):
    """(rows, labels) of one half: planted items positive, controls negative, near-duplicates left out."""
    by_row = planted_rows()
    planted_ids = {s for ids in kinds.values() for s in ids}
    ids = [s for s in sorted(table) if half(s, by_row) == which and s not in near]
    return [table[s] for s in ids], [s in planted_ids for s in ids]


def test_thresholds_chosen_on_the_dev_half_are_the_defaults(planted, resources):
    from cp_assets.resources.results import ResultsStore

    kinds, near, _ = planted
    table = rows(ResultsStore().db())
    dev_rows, dev_labels = labelled(table, kinds, near, "dev")
    chosen = choose_rule(dev_rows, dev_labels)
    print(f"\ncontamination dev half: {chosen.positives} planted, {chosen.controls} controls; chosen {chosen.rule}: "
          f"precision {chosen.precision:.3f} recall {chosen.recall:.3f} F1 {chosen.f1:.3f}")
    assert chosen.rule == FlagRule(), "FlagRule's defaults must be the dev-chosen thresholds"


def test_planted_items_are_flagged_on_the_test_half(planted, resources):
    from cp_assets.resources.results import ResultsStore

    kinds, near, result = planted
    table = rows(ResultsStore().db())
    by_row = planted_rows()
    assert len(table) == 1319 and {"ngram_overlap", "bucket", "substring_hits", "nn_distance", "flagged"} <= set(
        next(iter(table.values())))
    rule = FlagRule()
    assert all(bool(rule.reasons(r["rare_share"], r["substring_hits"], r["nn_distance"])) == r["flagged"]
               for r in table.values()), "the table's flag is the default rule's"
    test_rows, test_labels = labelled(table, kinds, near, "test")
    overall = score_rule(rule, test_rows, test_labels)
    controls = [r for r, pos in zip(test_rows, test_labels) if not pos]
    false_flags = [r for r in controls if r["flagged"]]
    print(f"\ncontamination test half (n={len(test_rows)} + {sum(half(s, by_row) == 'test' for s in near)} "
          f"near-duplicates), rule {rule}:")
    print(f"  {'row':16s} {'n':>4s} {'flagged':>8s} {'ngram':>6s} {'substr':>6s} {'embed':>6s}")
    report = {}
    groups = {kind: [s for s in ids if half(s, by_row) == "test"] for kind, ids in kinds.items()}
    groups["near_duplicate"] = [s for s in near if half(s, by_row) == "test"]
    groups["controls"] = [r["sample_id"] for r in controls]
    for name, ids in groups.items():
        rates = {"flagged": sum(table[s]["flagged"] for s in ids) / max(len(ids), 1)}
        for ev in ("ngram", "substring", "embedding"):
            rates[ev] = sum(ev in (table[s]["flag_reason"] or "") for s in ids) / max(len(ids), 1)
        report[name] = rates
        print(f"  {name:16s} {len(ids):4d} " + " ".join(f"{v:6.2f}" for v in rates.values()))
    print(f"  all planted vs controls: precision {overall.precision:.3f} recall {overall.recall:.3f} "
          f"({overall.tp} of {overall.positives} planted, {overall.fp} of {overall.controls} controls flagged)")
    for r in false_flags:
        print(f"  control flagged: {r['sample_id']}: {rule.explain(r)}")
    # verbatim copies: every one, by the n-gram evidence, and in Llama 2's dirty bucket
    assert report["verbatim"]["ngram"] == 1.0 and all(table[s]["bucket"] == "dirty" for s in groups["verbatim"])
    assert report["in_document"]["flagged"] == 1.0
    assert overall.precision >= 0.85 and overall.recall >= 0.8
    assert len(false_flags) / len(controls) <= 0.01
    md = metadata(result, "contamination")
    assert md["items"] == 1319 and md["flagged"] == sum(r["flagged"] for r in table.values())
    assert "| sample |" in md["most_contaminated"] and "gsm8k:" in md["why_flagged"]
    # the top rows link to the explorer with the question's text (cprox serve shows its contamination rows)
    assert md["most_contaminated"].count("[explore](http://127.0.0.1:8765/?text=") == 10


def test_contamination_rerun_is_idempotent(planted, resources):
    from cp_assets.defs.reports.contamination import contamination
    from cp_assets.resources.results import ResultsStore

    before = rows(ResultsStore().db())
    assert dg.materialize([contamination], partition_key=KEY, resources=resources).success
    assert rows(ResultsStore().db()) == before
