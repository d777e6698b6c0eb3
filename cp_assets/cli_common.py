"""What the `cprox` commands that materialize assets in-process share: the Dagster instance and one run."""

import os

import dagster as dg


def instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance (runs show in the UI), else an ephemeral one; model partitions synced."""
    from cp_assets.defs.models_sensor import sync_model_partitions

    inst = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    sync_model_partitions(inst)
    return inst


def add_models(inst: dg.DagsterInstance, models: list[str]) -> None:
    """Model partitions for models that have rollouts but left models.yaml (their reports can still be made)."""
    known = set(inst.get_dynamic_partitions("models"))
    inst.add_dynamic_partitions("models", [m for m in models if m not in known])


def materialize(inst: dg.DagsterInstance, selection: list[str], key, log_level: str = "WARNING",
                ops: dict | None = None) -> tuple[bool, dict[str, dict]]:
    """Materialize `selection` (and its checks) for one partition with the code location's resources:
    (success, {asset: metadata})."""
    from cp_assets.definitions import defs

    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    res = dg.materialize(assets + list(defs.asset_checks or []), selection=selection, partition_key=key,
                         instance=inst, resources=defs.resources, raise_on_error=False,
                         run_config={"loggers": {"console": {"config": {"log_level": log_level}}}, "ops": ops or {}})
    md = {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
          for e in res.get_asset_materialization_events()}
    return res.success, md
