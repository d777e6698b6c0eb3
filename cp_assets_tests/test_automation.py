"""Automation: sharded (streaming) sources and their fingerprints, the nightly shard backfill schedule, and the
declarative automation conditions that re-materialize reports when their inputs change (evaluated in-process with
the same conditions the `report_automation` sensor runs in the daemon)."""

import datetime as dt
import gzip
import json
import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from cp_assets.lib.corpus.registry import RegistryError, load_registry
from cp_assets.lib.corpus.shards import changed_splits, split_sources, streaming_splits
from cp_assets.lib.corpus.sources import read_split
from cp_assets_tests.conftest import corpus_key, metadata, shard_instance


def write_shard(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in texts).encode()))
    return path


@pytest.fixture
def shard_registry(tmp_path) -> Path:
    """`tiny` reads a growing directory of shards; `math` one fixed file (not streaming)."""
    write_shard(tmp_path / "crawl" / "shard-000.jsonl.gz", ["first shard, first document", "first shard, second"])
    write_shard(tmp_path / "fixed.jsonl.gz", ["a fixed document"])
    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {
        "tiny": {"sources": [{"path": "crawl/shard-*.jsonl.gz", "name": "crawl", "text_field": "text"}]},
        "math": {"sources": [{"path": "fixed.jsonl.gz", "text_field": "text"}]},
    }}))
    return path


def test_shards_are_read_in_order_with_ids_per_shard(shard_registry, tmp_path):
    write_shard(tmp_path / "crawl" / "shard-001.jsonl.gz", ["second shard, first document"])
    reg = load_registry(shard_registry, tmp_path)
    docs = list(read_split(reg, "tiny"))
    assert [d.doc_id for d in docs] == ["crawl:shard-000.jsonl.gz/0", "crawl:shard-000.jsonl.gz/1",
                                        "crawl:shard-001.jsonl.gz/0"]
    assert docs[2].locator == f"{tmp_path / 'crawl' / 'shard-001.jsonl.gz'}:1"
    assert streaming_splits(reg) == ["tiny"]


def test_fingerprint_changes_with_a_new_or_rewritten_shard_only(shard_registry, tmp_path):
    reg = load_registry(shard_registry, tmp_path)
    first = split_sources(reg, "tiny")
    assert first == split_sources(reg, "tiny") and first.shards == 1
    write_shard(tmp_path / "crawl" / "shard-001.jsonl.gz", ["a new shard"])
    second = split_sources(reg, "tiny")
    assert second.fingerprint != first.fingerprint and second.shards == 2
    shard = write_shard(tmp_path / "crawl" / "shard-001.jsonl.gz", ["the same shard, rewritten longer"])
    os.utime(shard, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert split_sources(reg, "tiny").fingerprint != second.fingerprint
    recorded = {"tiny": split_sources(reg, "tiny").fingerprint}
    assert changed_splits(reg, recorded) == []
    assert [c.split for c in changed_splits(reg, {})] == ["tiny"]


def test_a_glob_that_matches_nothing_is_a_clear_error(tmp_path):
    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {"s": {"sources": [{"path": "none/*.jsonl", "text_field": "t"}]}}}))
    with pytest.raises(RegistryError, match=r"no shard file matches .*none/\*\.jsonl"):
        list(read_split(load_registry(path, tmp_path), "s"))


def test_unpinned_hf_source_is_reread_every_night(tmp_path):
    path = tmp_path / "corpora.yaml"
    hf = {"hf": {"path": "org/crawl"}, "text_field": "text"}
    path.write_text(yaml.safe_dump({"splits": {"s": {"sources": [hf]}, "p": {"sources": [
        {"hf": {"path": "org/crawl", "revision": "abc123"}, "text_field": "text"}]}}}))
    reg = load_registry(path, tmp_path)
    day1, day2 = dt.date(2026, 11, 1), dt.date(2026, 11, 2)
    assert split_sources(reg, "s", day1) != split_sources(reg, "s", day2)
    assert split_sources(reg, "p", day1) == split_sources(reg, "p", day2)


def test_raw_corpus_records_its_source_fingerprint(materialized):
    md = metadata(materialized["tiny"], "raw_corpus")
    assert md["source_fingerprint"] == split_sources(load_registry(), "tiny").fingerprint
    assert md["source_files"] == 3


def _tick(schedule, instance, registry_file, data_dir):
    from cp_assets.definitions import defs
    from cp_assets.resources.corpus_registry import CorpusRegistry

    repo = defs.get_repository_def()
    schedule = repo.get_schedule_def(schedule.name)
    resources = {"registry": CorpusRegistry(corpora_file=str(registry_file), data_dir=str(data_dir))}
    # `with`: the context opens its own instance from the ref; left open, it stays Dagster's current defs-state
    # storage after the instance is gone, and every later definitions load in the process fails
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2026, 11, 30, 2),
                                   repository_def=repo, resources=resources) as ctx:
        return schedule.evaluate_tick(ctx)


def test_nightly_schedule_requests_shards_that_changed_once(shard_registry, tmp_path):
    from cp_assets.definitions import defs
    from cp_assets.defs.corpus.nightly_shard_backfill import nightly_shard_backfill
    from cp_assets.defs.corpus.raw_corpus import raw_corpus
    from cp_assets.lib.corpus.shards import plan_shards

    with dg.instance_for_test() as instance:  # a schedule context needs an instance with a ref
        result = _tick(nightly_shard_backfill, instance, shard_registry, tmp_path)
        [req] = result.run_requests
        [shard] = plan_shards(load_registry(shard_registry, tmp_path), "tiny")
        fingerprint = shard.fingerprint(dt.date(2026, 11, 30))
        assert req.partition_key == corpus_key("tiny") and req.run_key == f"tiny/00000@{fingerprint}"
        assert instance.get_dynamic_partitions("corpus_shards") == ["00000"], "the tick added the shard partition"
        job = defs.get_repository_def().get_job("nightly_corpus_job")
        assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
            "raw_corpus", "chunks", "embeddings", "ngram_index"}

        # once raw_corpus has read this shard, the next tick has nothing to do
        instance.report_runless_asset_event(dg.AssetMaterialization(
            raw_corpus.key, partition=corpus_key("tiny"), metadata={"shard_fingerprint": fingerprint}))
        result = _tick(nightly_shard_backfill, instance, shard_registry, tmp_path)
        assert not result.run_requests and "no changed shards" in result.skip_message

        # a big shard lands: it is a shard of its own, and only it is requested (under its own run key)
        write_shard(tmp_path / "crawl" / "shard-001.jsonl.gz", [f"arrived overnight {i} " * 50 for i in range(400)])
        reg = load_registry(shard_registry, tmp_path)
        reg.splits["tiny"].shard_bytes = (tmp_path / "crawl" / "shard-000.jsonl.gz").stat().st_size * 2
        path = tmp_path / "corpora.yaml"
        path.write_text(yaml.safe_dump({"splits": {name: split.model_dump(exclude_defaults=True)
                                                   for name, split in reg.splits.items()}}))
        [req] = _tick(nightly_shard_backfill, instance, path, tmp_path).run_requests
        assert req.partition_key == corpus_key("tiny", "00001") and req.run_key.startswith("tiny/00001@")
        assert instance.get_dynamic_partitions("corpus_shards") == ["00000", "00001"]


def _requested(result) -> set[str]:
    out = set()
    for r in result.results:
        for key in r.true_subset.expensively_compute_asset_partitions():
            out.add(f"{key.asset_key.to_user_string()}[{key.partition_key}]" if key.partition_key
                    else key.asset_key.to_user_string())
    return out


def materialized(instance, asset: str, partition: str, version: str | None = None) -> None:
    """A materialization as a run records it: with the content version the asset reports, if it reports one."""
    tags = {"dagster/data_version": version} if version else None
    instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=partition, tags=tags))


def test_reports_follow_their_inputs():
    from cp_assets.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("models", ["m1"])
    instance.add_dynamic_partitions("corpus_shards", ["00000", "00001"])  # tiny gets a second shard below
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert _requested(first) == set(), "nothing is requested before any input exists"

    tiny = corpus_key("tiny")
    for asset, partition in (("embeddings", tiny), ("ngram_index", tiny), ("eval_samples", "gsm8k")):
        materialized(instance, asset, partition, "v1")
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = _requested(second)
    # eval x split reports whose inputs all exist (contamination reads eval_proximity, requested in the same tick);
    # not the splits without embeddings
    assert {"eval_proximity[gsm8k|tiny]", "contamination[gsm8k|tiny]"} <= requested
    assert not any(r.startswith(("eval_proximity[", "contamination[")) and "[gsm8k|tiny]" not in r for r in requested)
    assert not any(r.startswith(("rollout_proximity", "rollout_traces")) for r in requested), "no rollouts yet"
    # GPU and corpus steps are never started by automation
    assert not any(r.startswith(("embeddings", "chunks", "rollouts[", "tiny_models", "cluster_tree")) for r in requested)

    # the run lands (eval_proximity, then contamination): evaluated again, nothing new
    for asset in ("eval_proximity", "contamination"):
        materialized(instance, asset, "gsm8k|tiny")
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert not {r for r in _requested(third) if "[" in r}

    # rollouts of one eval set for model m1: its model x split reports on the split that has embeddings
    materialized(instance, "rollouts", "gsm8k|m1", "r1")
    fourth_eval = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
    fourth = _requested(fourth_eval)
    assert {"rollout_proximity[m1|tiny]", "rollout_traces[m1|tiny]"} <= fourth
    assert not any(r.startswith(("eval_proximity", "contamination")) for r in fourth)
    for asset in ("rollout_proximity", "rollout_traces"):
        materialized(instance, asset, "m1|tiny")

    # inputs materialized again with the same content (same data versions): nothing downstream re-runs
    for asset, partition, version in (("embeddings", tiny, "v1"), ("ngram_index", tiny, "v1"),
                                      ("rollouts", "gsm8k|m1", "r1")):
        materialized(instance, asset, partition, version)
    fifth_eval = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=fourth_eval.cursor)
    assert not {r for r in _requested(fifth_eval) if "[" in r}
    # new content: the reports that read it follow
    materialized(instance, "ngram_index", tiny, "v2")
    sixth_eval = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=fifth_eval.cursor)
    sixth = _requested(sixth_eval)
    assert {"contamination[gsm8k|tiny]", "rollout_traces[m1|tiny]"} <= sixth
    assert "eval_proximity[gsm8k|tiny]" not in sixth and "rollout_proximity[m1|tiny]" not in sixth
    assert "rollout_proximity[m1|math]" not in fourth
    assert "rollout_correctness_by_distance" in fourth
    for asset, partition in (("contamination", "gsm8k|tiny"), ("rollout_traces", "m1|tiny")):
        materialized(instance, asset, partition)

    # a second shard of tiny lands (math has one: its shard 00001 stays empty and unmaterialized): tiny's reports
    # that read embeddings follow, and nothing of math's
    materialized(instance, "embeddings", corpus_key("tiny", "00001"), "s1")
    seventh = _requested(dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=sixth_eval.cursor))
    assert {"eval_proximity[gsm8k|tiny]", "rollout_proximity[m1|tiny]"} <= seventh
    assert not any("math]" in r or r.startswith(("contamination[", "rollout_traces[")) for r in seventh), seventh


def failed_check(instance, asset: str, check: str, partition: str) -> None:
    """A blocking check's failure on the latest materialization of one partition, as a run records it."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData as Target,
    )

    [rec] = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset),
                                                                  asset_partitions=[partition]), limit=1).records
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset), check_name=check, passed=False, partition=partition, blocking=True,
        target_materialization_data=Target(storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)))


def test_a_failed_blocking_check_holds_back_the_reports_that_read_that_partition():
    """Blocking checks stop later steps of their own run only; automation starts reports in runs of their own, so
    the condition itself must wait while an input partition's blocking check has failed, and go on once it is
    re-materialized."""
    from cp_assets.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("corpus_shards", ["00000"])
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    tiny, math = corpus_key("tiny"), corpus_key("math")
    for asset, partition in (("embeddings", tiny), ("ngram_index", tiny), ("embeddings", math),
                             ("ngram_index", math), ("eval_samples", "gsm8k")):
        materialized(instance, asset, partition, "v1")
    failed_check(instance, "ngram_index", "check_ngram_index_matches_corpus", math)
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    # contamination reads the n-gram index (math's failed its check), eval_proximity does not
    assert {r for r in _requested(second) if "[" in r} == {
        "eval_proximity[gsm8k|tiny]", "contamination[gsm8k|tiny]", "eval_proximity[gsm8k|math]"}
    for asset, partition in (("eval_proximity", "gsm8k|tiny"), ("eval_proximity", "gsm8k|math"),
                             ("contamination", "gsm8k|tiny")):
        materialized(instance, asset, partition)
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert not {r for r in _requested(third) if "[" in r}, "still waiting for math's n-gram index"
    materialized(instance, "ngram_index", math, "v2")  # rebuilt: its failed check no longer applies
    fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=third.cursor)
    assert {r for r in _requested(fourth) if "[" in r} == {"contamination[gsm8k|math]"}
    materialized(instance, "contamination", "gsm8k|math")

    # eval_proximity[gsm8k|math] fails its check, then the eval set changes: the partitioned reports that read that
    # partition wait; the unpartitioned ones, which read every partition, run over what exists
    failed_check(instance, "eval_proximity", "check_eval_proximity_rows_consistent", "gsm8k|math")
    materialized(instance, "eval_samples", "gsm8k", "v2")
    fifth = _requested(dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=fourth.cursor))
    assert fifth == {"eval_proximity[gsm8k|tiny]", "eval_proximity[gsm8k|math]", "contamination[gsm8k|tiny]",
                     "nearest_neighbors", "distance_by_difficulty", "difficulty_report"}


def _data_versions(result) -> dict[str, str]:
    return {e.asset_key.to_user_string(): e.materialization.tags["dagster/data_version"]
            for e in result.get_asset_materialization_events()}


@pytest.mark.slow
def test_unchanged_inputs_keep_their_data_version(materialized, resources):
    """Embeddings and n-gram index of a split that did not change report the same content version again, so their
    reports are not re-run; eval samples read twice do too (gsm8k: the set later tests expect in the results DB)."""
    from cp_assets.definitions import corpus_assets, eval_assets

    first, again = (_data_versions(dg.materialize(corpus_assets, selection=["embeddings", "ngram_index"],
                                                   partition_key=corpus_key("tiny"), instance=shard_instance(),
                                                   resources=resources)) for _ in range(2))
    assert first == again and set(first) == {"embeddings", "ngram_index"}
    samples = [dg.materialize(eval_assets, selection=["eval_samples"], partition_key="gsm8k", resources=resources)
               for _ in range(2)]
    assert _data_versions(samples[0])["eval_samples"] == _data_versions(samples[1])["eval_samples"]


def test_a_split_that_cannot_be_planned_holds_back_no_other(tmp_path):
    """A glob that matches nothing (yet) fails its own split, not `cprox materialize` of another or the sensor."""
    from cp_assets.defs.corpus.corpus_shards_sensor import corpus_shards_sensor, sync_shard_partitions
    from cp_assets.resources.corpus_registry import CorpusRegistry

    write_shard(tmp_path / "fixed.jsonl.gz", ["a fixed document"])
    path = tmp_path / "corpora.yaml"
    path.write_text(yaml.safe_dump({"splits": {
        "later": {"sources": [{"path": "crawl/shard-*.jsonl.gz", "text_field": "text"}]},
        "math": {"sources": [{"path": "fixed.jsonl.gz", "text_field": "text"}]}}}))
    reg = load_registry(path, tmp_path)
    instance = dg.DagsterInstance.ephemeral()
    assert sync_shard_partitions(instance, reg, ["math"]) == {"math": ["00000"]}
    with pytest.raises(RegistryError, match="no shard file matches"):
        sync_shard_partitions(instance, reg, ["later"])
    fresh = dg.DagsterInstance.ephemeral()
    result = corpus_shards_sensor(dg.build_sensor_context(instance=fresh, resources={
        "registry": CorpusRegistry(corpora_file=str(path), data_dir=str(tmp_path))}))
    [request] = result.dynamic_partitions_requests
    assert list(request.partition_keys) == ["00000"]
