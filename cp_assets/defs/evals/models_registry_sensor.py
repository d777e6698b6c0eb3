"""`models_registry_sensor`: keeps the `models` dynamic partitions equal to the ids in models.yaml."""


import dagster as dg

from cp_assets.defs.core.partitions import model_partitions
from cp_assets.lib.evals.model_registry import ModelRegistryError, load_models


def partition_requests(wanted: list[str], current: list[str]) -> list:
    """The add/delete requests that turn `current` into `wanted` (order of the registry kept)."""
    requests = []
    add = [m for m in wanted if m not in current]
    drop = [m for m in current if m not in wanted]
    if add:
        requests.append(model_partitions.build_add_request(add))
    if drop:
        requests.append(model_partitions.build_delete_request(drop))
    return requests


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Sync the `models` dynamic partitions with models.yaml (CPROX_MODELS).")
def models_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    try:
        wanted = load_models().ids()
    except ModelRegistryError as exc:
        return dg.SkipReason(f"models registry unreadable: {exc}")
    current = context.instance.get_dynamic_partitions(model_partitions.name)
    requests = partition_requests(wanted, current)
    if not requests:
        return dg.SkipReason(f"{len(wanted)} models, in sync")
    context.log.info(f"models partitions: {current} -> {wanted}")
    return dg.SensorResult(dynamic_partitions_requests=requests)


def sync_model_partitions(instance: dg.DagsterInstance) -> list[str]:
    """The same sync, done directly (the CLI and tests call it before materializing)."""
    wanted = load_models().ids()
    current = instance.get_dynamic_partitions(model_partitions.name)
    if add := [m for m in wanted if m not in current]:
        instance.add_dynamic_partitions(model_partitions.name, add)
    for m in current:
        if m not in wanted:
            instance.delete_dynamic_partition(model_partitions.name, m)
    return wanted
