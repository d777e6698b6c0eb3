"""`corpus_shards_sensor`: keeps the `corpus_shards` dynamic partitions (shard numbers) as many as the corpus
registry's plans need (`cp_assets.lib.corpus.shards.plan_shards`); `cprox shards sync` and `cprox materialize` do the
same directly through `sync_shard_partitions`. Shard numbers are only added: a number past every split's plan is an
empty shard, and removing a key would orphan its materializations (`cprox shards sync --prune` drops them)."""

import dagster as dg

from cp_assets.defs.core.partitions import SHARDS, shard_partitions
from cp_assets.lib.corpus.registry import Registry, RegistryError
from cp_assets.lib.corpus.shards import dimension_keys, shard_keys
from cp_assets.resources.corpus_registry import CorpusRegistry


def missing_keys(instance: dg.DagsterInstance, plans: dict[str, list[str]]) -> list[str]:
    have = set(instance.get_dynamic_partitions(SHARDS))
    return [k for k in dimension_keys(plans) if k not in have]


def add_shard_partitions(instance: dg.DagsterInstance, plans: dict[str, list[str]]) -> None:
    """Add the shard numbers that `plans` (split -> shard keys) need."""
    add = missing_keys(instance, plans)
    if add:
        instance.add_dynamic_partitions(SHARDS, add)


def sync_shard_partitions(instance: dg.DagsterInstance, registry: Registry,
                          splits: list[str] | None = None) -> dict[str, list[str]]:
    """Add the shard numbers the plans of `splits` (default: every split) need; returns their shard keys. A split
    that cannot be planned (a glob matching nothing) raises only when it is one of `splits`."""
    plans = shard_keys(registry, splits)
    add_shard_partitions(instance, plans)
    return plans


@dg.sensor(minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Add `corpus_shards` partitions (shard numbers) as the corpus registry's shard plans grow.")
def corpus_shards_sensor(context: dg.SensorEvaluationContext, registry: CorpusRegistry):
    try:
        reg = registry.load()
    except (RegistryError, OSError, ValueError) as exc:
        return dg.SkipReason(f"corpus registry unusable: {exc}")
    plans = {}
    for split in reg.names():  # one split that cannot be planned does not hold back the others
        try:
            plans.update(shard_keys(reg, [split]))
        except (RegistryError, OSError, ValueError) as exc:
            context.log.warning(f"split {split!r} cannot be planned: {exc}")
    add = missing_keys(context.instance, plans)
    counts = ", ".join(f"{split}: {len(keys)}" for split, keys in plans.items())
    if not add:
        return dg.SkipReason(f"shards per split ({counts}): partitions in sync")
    context.log.info(f"adding shard partitions {add[0]}..{add[-1]} (shards per split: {counts})")
    return dg.SensorResult(dynamic_partitions_requests=[shard_partitions.build_add_request(add)])
