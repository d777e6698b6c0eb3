"""`models_registry_sensor`: keeps the `models` dynamic partitions equal to the ids in models.yaml
(`ModelRegistry.changes` says what to add and drop)."""


import dagster as dg

from cp_assets.defs.core.partitions import model_partitions
from cp_assets.lib.evals.model_registry import ModelRegistry, ModelRegistryError, load_models


def partition_requests(registry: ModelRegistry, current: list[str]) -> list:
    """The add/delete requests that turn `current` into the registry's ids."""
    add, drop = registry.changes(current)
    return ([model_partitions.build_add_request(add)] if add else []) + \
        ([model_partitions.build_delete_request(drop)] if drop else [])


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Sync the `models` dynamic partitions with models.yaml (CPROX_MODELS).")
def models_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    try:
        registry = load_models()
    except ModelRegistryError as exc:
        return dg.SkipReason(f"models registry unreadable: {exc}")
    current = context.instance.get_dynamic_partitions(model_partitions.name)
    requests = partition_requests(registry, current)
    if not requests:
        return dg.SkipReason(f"{len(registry.ids())} models, in sync")
    context.log.info(f"models partitions: {current} -> {registry.ids()}")
    return dg.SensorResult(dynamic_partitions_requests=requests)


def sync_model_partitions(instance: dg.DagsterInstance) -> list[str]:
    """The same sync, done directly (the CLI and tests call it before materializing)."""
    registry = load_models()
    add, drop = registry.changes(instance.get_dynamic_partitions(model_partitions.name))
    if add:
        instance.add_dynamic_partitions(model_partitions.name, add)
    for m in drop:
        instance.delete_dynamic_partition(model_partitions.name, m)
    return registry.ids()
