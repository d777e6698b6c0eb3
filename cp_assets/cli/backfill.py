"""`cprox backfill`: submit a Dagster asset backfill over partitions, as the UI's "Materialize all" does.

  cprox backfill ASSET [ASSET ...] [--partitions K,K | --all] [--wait] [--timeout S]

The backfill goes into DAGSTER_HOME's instance; the Dagster daemon (`make ui`, `dagster dev`, or the compose
`daemon` service) runs it: one run per partition, queued under the instance's run and pool limits (the `gpu` pool
lets one GPU step run at a time), downstream assets started once their upstream partitions land. It shows in the
UI under Runs > Backfills, where it can be watched, cancelled or re-executed from failure. `--wait` follows it here
with a progress bar and exits non-zero unless every partition materialized.
Multi-dimensional keys are written as the UI shows them: `gsm8k|smollm2-135m-instruct` (dimensions in name order).
"""

from __future__ import annotations

import sys
import time
import uuid

from rich.console import Console

err = Console(stderr=True)
DONE = ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "COMPLETED")


def submit(inst, assets: list[str], partitions: list[str] | None, title: str | None = None) -> str:
    """Add a backfill of `assets` over `partitions` (None: all) to the instance; its id."""
    import dagster as dg
    from dagster._core.execution.backfill import PartitionBackfill

    from cp_assets.definitions import defs

    graph = defs.get_repository_def().asset_graph
    keys = [dg.AssetKey.from_user_string(a) for a in assets]
    unknown = [a for a, k in zip(assets, keys) if not graph.has(k)]
    if unknown:
        raise LookupError(f"unknown assets {unknown}; see `dagster asset list -m cp_assets.definitions`")
    if partitions:
        defs_of = {graph.get(k).partitions_def for k in keys}
        known = set().union(*(p.get_partition_keys(dynamic_partitions_store=inst) for p in defs_of if p))
        if missing := [p for p in partitions if p not in known]:
            raise LookupError(f"partitions {missing} are not partitions of {assets}")
    backfill_id = uuid.uuid4().hex[:8]
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=backfill_id, asset_graph=graph, partition_names=partitions, asset_selection=keys,
        backfill_timestamp=time.time(), tags={"cprox/trigger": "cprox backfill"}, dynamic_partitions_store=inst,
        all_partitions=partitions is None, title=title or f"cprox backfill {' '.join(assets)}",
        description=None, run_config=None)
    inst.add_backfill(backfill)
    return backfill_id


def daemon_running(inst) -> bool:
    beats = inst.get_daemon_heartbeats()
    return any(time.time() - hb.timestamp < 120 for hb in beats.values())


def wait(inst, backfill_id: str, timeout: float, quiet: bool = False) -> str:
    """Follow a backfill until it ends (or `timeout` seconds): its final status name."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    backfill = inst.get_backfill(backfill_id)
    total = backfill.asset_backfill_data.target_subset.num_partitions_and_non_partitioned_assets
    with tqdm(total=total, unit="partition", file=sys.stderr, disable=quiet, desc=f"backfill {backfill_id}") as bar:
        while True:
            backfill = inst.get_backfill(backfill_id)
            done = backfill.asset_backfill_data.materialized_subset.num_partitions_and_non_partitioned_assets
            bar.update(done - bar.n)
            bar.set_postfix(status=backfill.status.value)
            if backfill.status.value in DONE:
                return backfill.status.value
            if time.monotonic() > deadline:
                return f"TIMED_OUT ({backfill.status.value})"
            time.sleep(2)


def cmd_backfill(args) -> int:
    from cp_assets.cli.common import instance

    inst = instance()
    if not inst.is_persistent:
        err.print("[red]error:[/red] set DAGSTER_HOME (the Makefile does): a backfill lives in the instance the "
                  "daemon reads")
        return 1
    partitions = None if args.all else [p.strip() for p in (args.partitions or "").split(",") if p.strip()]
    if partitions is not None and not partitions:
        err.print("[red]error:[/red] give --partitions K,K or --all")
        return 1
    backfill_id = submit(inst, args.assets, partitions, args.title)
    print(f"backfill {backfill_id} submitted: {', '.join(args.assets)} over "
          f"{'all partitions' if partitions is None else ', '.join(partitions)}")
    if not daemon_running(inst):
        err.print("[yellow]no dagster-daemon heartbeat in the last 2 minutes: the backfill waits until one runs "
                  "(`make ui`, `dagster dev`, or `dagster-daemon run -w workspace.yaml`)[/yellow]")
    if not args.wait:
        return 0
    status = wait(inst, backfill_id, args.timeout, args.quiet)
    print(f"backfill {backfill_id}: {status}")
    return 0 if status in ("COMPLETED_SUCCESS", "COMPLETED") else 1


def add_parsers(sub) -> None:
    b = sub.add_parser("backfill", help="submit a Dagster backfill over partitions (the daemon runs it)")
    b.add_argument("assets", nargs="+", help="asset names, e.g. raw_corpus chunks embeddings")
    group = b.add_mutually_exclusive_group(required=True)
    group.add_argument("--partitions", help="comma-separated partition keys")
    group.add_argument("--all", action="store_true", help="every partition")
    b.add_argument("--title", help="shown in the UI's backfill list")
    b.add_argument("--wait", action="store_true", help="follow it until it ends; exit 1 unless it succeeded")
    b.add_argument("--timeout", type=float, default=6 * 3600, help="seconds --wait follows it")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(fn=cmd_backfill)
