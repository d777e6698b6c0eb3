"""Declarative automation: reports re-materialize when their inputs change, evaluated by `report_automation`.

Only reports are automated. Corpus, embedding, generation and training steps are started on purpose (the UI, a
backfill, `cprox`, or the nightly shard schedule), because they cost GPU hours; once they land, every report that
reads them follows:

- a report partition is requested when the data version of one of its inputs changed since it was last requested
  or materialized, and nothing it reads, nor itself, is in progress. Inputs report content versions
  (`cp_assets/lib/core/versions.py`: embeddings, ngram_index, eval_samples, rollouts), so re-materializing one whose
  content did not change starts nothing; an asset without one gets a new version at every materialization;
- eval x split reports (`eval_proximity`, `contamination`) also wait until their inputs exist (of the corpus, some
  shard of the split: shard numbers past a split's plan never materialize);
- model x split reports (`rollout_proximity`, `rollout_traces`) need the split's embeddings and rollouts of at least
  one eval set for the model (a model rarely has rollouts for every eval set);
- unpartitioned reports (SQL models, `difficulty_report`, `memorization_report`) run over whatever exists;
- no partitioned report starts while a blocking check of an input partition it reads has failed (an embeddings shard
  with NaN vectors, an n-gram index that does not match its corpus): blocking checks stop only the steps of their own
  run, and automation starts reports in runs of their own. Unpartitioned reports read every partition and run over
  what exists (one bad shard would otherwise hold them back until it is fixed).

The sensor is on by default; the daemon (`dagster dev`, or the compose `daemon` service) evaluates it every minute.
Tests and `cprox` evaluate the same conditions in-process with `dg.evaluate_automation_conditions`.
"""


import dagster as dg

AC = dg.AutomationCondition

INPUT_CHANGED = AC.any_deps_match(AC.data_version_changed()).with_label("an input's data version changed")
ON_NEW_INPUTS = (INPUT_CHANGED.since_last_handled() & ~AC.any_deps_in_progress()
                 & ~AC.in_progress()).with_label("report_on_new_inputs")
# A blocking check stops later steps of its own run only; a report the sensor starts is another run, so a partitioned
# report waits here until the failed check of an input partition it reads no longer applies (that input
# re-materialized, or the check re-run). Unpartitioned reports (SQL models, difficulty_report, memorization_report)
# read every partition: one bad shard anywhere would hold them back for good, so they run over what exists.
NO_FAILED_BLOCKING_CHECK = ~AC.any_deps_match(AC.any_checks_match(AC.check_failed(), blocking_only=True)).with_label(
    "no input partition failed a blocking check")
CHECKED_INPUTS = (ON_NEW_INPUTS & NO_FAILED_BLOCKING_CHECK).with_label("report_on_new_checked_inputs")
# Corpus inputs are read per shard: a split's report needs some of its shards, not every shard number (a split with
# fewer shards than another never materializes the numbers past its plan, see defs/core/partitions.py).
CORPUS = dg.AssetSelection.assets("raw_corpus", "chunks", "embeddings", "ngram_index")
SOME_SHARDS = AC.any_deps_match(~AC.missing()).allow(CORPUS).with_label("some shard of the split exists")
WHEN_INPUTS_EXIST = (CHECKED_INPUTS & ~AC.any_deps_missing().ignore(CORPUS) & SOME_SHARDS).with_label(
    "report_on_new_inputs_when_all_exist")


def when_some_rollouts(rollouts: dg.AssetsDefinition) -> dg.AutomationCondition:
    """New inputs, the other inputs all exist (the corpus: some shard of the split), and at least one rollouts
    partition of the model exists."""
    others_exist = ~AC.any_deps_missing().ignore(dg.AssetSelection.assets(rollouts) | CORPUS)
    some_rollouts = AC.any_deps_match(~AC.missing()).allow(dg.AssetSelection.assets(rollouts))
    return (CHECKED_INPUTS & others_exist & SOME_SHARDS & some_rollouts).with_label("report_on_new_rollouts")


def automated(assets: list[dg.AssetsDefinition], conditions: dict[str, dg.AutomationCondition]) -> list:
    """`assets` with the conditions of `conditions` (by asset name) attached; the others unchanged."""
    out = []
    for a in assets:
        cond = conditions.get(a.key.to_user_string())
        out.append(a.with_attributes(automation_condition=cond) if cond is not None else a)
    return out


def report_conditions(rollouts: dg.AssetsDefinition, unpartitioned: list[str]) -> dict[str, dg.AutomationCondition]:
    rollout_reports = when_some_rollouts(rollouts)
    return {"eval_proximity": WHEN_INPUTS_EXIST, "contamination": WHEN_INPUTS_EXIST,
            "rollout_proximity": rollout_reports, "rollout_traces": rollout_reports,
            **{name: ON_NEW_INPUTS for name in unpartitioned}}


def report_automation_sensor(conditions: dict[str, dg.AutomationCondition]) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "report_automation", target=dg.AssetSelection.assets(*conditions),
        default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=60,
        description="Re-materializes reports whose inputs changed (conditions in cp_assets/defs/core/automation.py).")
