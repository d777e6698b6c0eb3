"""`cprox materialize` and `cprox shards`: the corpus assets, one shard of a split at a time, and the shard plans.

  cprox materialize [--split S ...] [--shard K ...] [--asset NAME ...] [--workers N]
      every shard of each split (default: every split), recorded in DAGSTER_HOME: in-process one shard after another,
      or with --workers N (or CPROX_EXECUTOR=celery) each shard a run through the executor, N runs at a time
  cprox shards plan [--split S ...] [--json]     how each split is cut: shards, their files or row groups, bytes
  cprox shards sync [--prune]                    add the shard partitions the plans need (the sensor does it too);
                                                 --prune drops shard numbers past every plan, and their data
"""

import json
import time

from rich.console import Console

from cp_assets.cli.tables import show, yes_no
from cp_assets.lib.core import settings

err = Console(stderr=True)


def _store():
    from cp_assets.lib.corpus.pgvector_store import PgStore

    return PgStore(url=settings.database_url())


def cmd_materialize(args) -> int:
    from cp_assets.cli.common import instance, materialize
    from cp_assets.definitions import corpus_assets
    from cp_assets.defs.core.executors import executor_kind
    from cp_assets.defs.core.partitions import corpus_key
    from cp_assets.defs.corpus.corpus_shards_sensor import sync_shard_partitions
    from cp_assets.lib.corpus.registry import load_registry

    registry = load_registry()
    for split in args.split or []:
        registry.split(split)  # RegistryError: which registry file was read and which splits it defines
    splits = args.split or registry.names()
    names = args.asset or [a.key.to_user_string() for a in corpus_assets]
    inst = instance()
    plans = sync_shard_partitions(inst, registry, splits)
    todo = []
    for split in splits:
        unknown = sorted(set(args.shard or []) - set(plans[split]))
        if unknown:
            raise LookupError(f"split {split!r} has no shard {unknown}: its plan has {len(plans[split])} "
                              f"({plans[split][0]}..{plans[split][-1]}); see `cprox shards plan --split {split}`")
        todo += [(split, k) for k in plans[split] if not args.shard or k in args.shard]
    if args.workers > 1 or executor_kind() != "multiprocess":
        outcomes = _fan_out(inst, todo, args.workers, args.asset, args.log_level)
    else:
        outcomes = {}
        for split, shard in todo:
            err.rule(f"[bold]{split if len(plans[split]) == 1 else f'{split}/{shard}'}[/bold]: {', '.join(names)}")
            outcomes[split, shard] = materialize(inst, names, corpus_key(split, shard), args.log_level)
    rows = [{"split": split, "shard": shard, "ok": res.ok, "seconds": res.seconds, **res.metadata,
             "checks": res.checks} for (split, shard), res in outcomes.items()]
    failed = any(not r["ok"] or not all(r["checks"].values()) for r in rows)
    _print_summary(rows)
    if args.json:
        print(json.dumps(rows, default=str, indent=1))
    return 1 if failed else 0


def _fan_out(inst, todo: list[tuple[str, str]], workers: int, assets: list[str] | None, log_level: str) -> dict:
    """Each shard a run through the executor (cli/fanout.py), `workers` runs at a time, a progress line per run."""
    from cp_assets.cli.fanout import run_many
    from cp_assets.defs.core.executors import executor_kind
    from cp_assets.defs.core.partitions import corpus_key, split_and_shard

    if inst.is_ephemeral:
        raise RuntimeError("--workers and CPROX_EXECUTOR=celery run each shard through the executor, which needs a "
                           "persistent Dagster instance: set DAGSTER_HOME (the Makefile sets it)")
    keys = [corpus_key(split, shard) for split, shard in todo]
    err.rule(f"[bold]{len(keys)} shard runs[/bold], {workers} at a time, executor {executor_kind()}")
    t0, done = time.perf_counter(), []

    def progress(key, res) -> None:
        done.append(key)
        rate = len(done) / (time.perf_counter() - t0)
        err.print(f"[{len(done)}/{len(keys)}] {key}: {'ok' if res.ok else '[red]FAILED[/red]'} in {res.seconds} s "
                  f"({rate * 60:.1f} shards/min)")

    outcomes = run_many(inst, keys, workers, assets, log_level, on_done=progress)
    return {split_and_shard(key): res for key, res in outcomes.items()}


def _print_summary(rows: list[dict]) -> None:
    table = []
    for r in rows:
        raw, ch, emb = r.get("raw_corpus", {}), r.get("chunks", {}), r.get("embeddings", {})
        checks = r.get("checks", {})
        table.append([r["split"], r["shard"], yes_no(r["ok"]), str(raw.get("documents", "")),
                      str(ch.get("chunks", "")), str(ch.get("tokens", "")), str(emb.get("embedded", "")),
                      str(emb.get("reused", "")), str(emb.get("chunks_per_s", "")),
                      f"{sum(checks.values())}/{len(checks)}" if checks else "", str(r["seconds"])])
    show(["split", "shard", "ok", "documents", "chunks", "tokens", "embedded", "reused", "embed chunks/s", "checks",
          "seconds"], table, "materialized", stderr=True)


def cmd_shards(args) -> int:
    from cp_assets.lib.corpus.registry import load_registry
    from cp_assets.lib.corpus.shards import plan_shards

    registry = load_registry()
    if args.action == "sync":
        return _sync(registry, args.prune)
    splits = args.split or registry.names()
    plans = {s: plan_shards(registry, s) for s in splits}
    if args.json:
        print(json.dumps({s: [{"shard": sh.key, "bytes": sh.bytes, "fingerprint": sh.fingerprint(),
                               "pieces": [p.name() for p in sh.pieces]} for sh in plan] for s, plan in plans.items()},
                         indent=1))
        return 0
    rows = []
    for split, plan in plans.items():
        for sh in plan:
            names = [p.name() for p in sh.pieces]
            rows.append([split, sh.key, f"{sh.bytes:,}", str(len(names)),
                         ", ".join(names[:2]) + (f", ... (+{len(names) - 2})" if len(names) > 2 else "")])
    show(["split", "shard", "bytes", "pieces", "files / row groups"], rows,
         f"shard plans ({registry.file}; shard_bytes per split)")
    return 0


def _sync(registry, prune: bool) -> int:
    from cp_assets.cli.common import instance
    from cp_assets.defs.core.partitions import SHARDS
    from cp_assets.defs.corpus.corpus_shards_sensor import sync_shard_partitions
    from cp_assets.lib.corpus.exact.ngram_split import drop_shard_index
    from cp_assets.lib.corpus.shards import dimension_keys

    inst = instance()
    plans = sync_shard_partitions(inst, registry)
    keep = set(dimension_keys(plans))
    extra = sorted(set(inst.get_dynamic_partitions(SHARDS)) - keep)
    if prune and extra:
        store = _store()
        for shard in extra:
            for split in registry.names():
                store.drop_shard(split, shard)
                drop_shard_index(split, shard)
            inst.delete_dynamic_partition(SHARDS, shard)
    counts = ", ".join(f"{s}: {len(k)}" for s, k in plans.items())
    err.print(f"shard partitions {min(keep, default='-')}..{max(keep, default='-')} (shards per split: {counts})"
              + (f"; pruned {extra}" if prune and extra else f"; past every plan: {extra}" if extra else ""))
    return 0


def add_parsers(sub) -> None:
    m = sub.add_parser("materialize", help="materialize corpus assets for every shard of some splits (--workers: over processes)")
    m.add_argument("--split", action="append", help="repeatable; default: every split in the registry")
    m.add_argument("--shard", action="append", help="repeatable shard key (00003); default: every shard of the split")
    m.add_argument("--asset", action="append", choices=["raw_corpus", "chunks", "embeddings", "ngram_index"],
                   help="repeatable; default: all")
    m.add_argument("--workers", type=int, default=1,
                   help="N > 1: each shard a run through the executor (a process per step), N runs at a time")
    m.add_argument("--log-level", default="INFO")
    m.add_argument("--json", action="store_true")
    m.set_defaults(fn=cmd_materialize)

    s = sub.add_parser("shards", help="the corpus shard plans, and the shard partitions")
    s.add_argument("action", choices=["plan", "sync"])
    s.add_argument("--split", action="append", help="plan: repeatable; default: every split")
    s.add_argument("--prune", action="store_true", help="sync: drop shard numbers past every plan, with their data")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_shards)
