"""`cprox annotate` and `cprox clusters`: place a text in a cluster tree, and build the trees.

  cprox annotate "TEXT" [--tree pretrain] [--json]      per sentence: nearest leaf, named path, distance ("-": stdin)
  cprox clusters [--tree T ...] [--naming-model ID] [--llm-max-depth D] [--model ID ...]
      materialize in-process: cluster_tree, cluster_names, cluster_report per tree (every split and `all`), then
      annotations for each model with rollouts x each split tree
"""

import json
import sys

from rich.console import Console
from rich.table import Table

from cp_assets.cli.tables import show, yes_no
from cp_assets.lib.core import settings

err = Console(stderr=True)
out = Console()


def cmd_annotate(args) -> int:
    from cp_assets.lib.clusters import report as cluster_report
    from cp_assets.lib.clusters import store as cluster_store
    from cp_assets.lib.clusters.annotations import place_sentences
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus.encoder import encode, model_slug
    from cp_assets.lib.corpus.pgvector_store import PgStore
    from cp_assets.lib.reports.results_db import ResultsDB

    text = args.text if args.text != "-" else sys.stdin.read()
    model = settings.embed_model()
    tree = cluster_store.load_tree(PgStore(url=settings.database_url()), args.tree, model_slug(model))
    if tree is None:
        raise LookupError(f"no cluster tree {args.tree!r} for {model}: materialize `cluster_tree` (and "
                          "`cluster_names`) first, e.g. `cprox clusters --tree " + args.tree + "`")
    names = cluster_report.load_names(ResultsDB(), args.tree, model)
    if not names:
        err.print(f"[yellow]tree {args.tree!r} has no names yet (materialize `cluster_names`): showing node ids")
    [rows] = place_sentences(tree, {i: v["name"] for i, v in names.items()}, [text], lambda t: encode(model, t))
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
        return 0
    table = Table(title=f"{args.tree} tree ({len(tree.leaf_ids)} leaves)")
    for col in ("#", "sentence", "cluster path", "distance"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(str(r.idx), r.text[:160], r.path(), f"{r.distance:.3f}")
    out.print(table)
    return 0


def cmd_clusters(args) -> int:
    import dagster as dg

    from cp_assets.cli.common import add_models, instance, materialize
    from cp_assets.cli.reports import _stored
    from cp_assets.defs.core.partitions import ALL_SPLITS_TREE
    from cp_assets.lib.corpus.registry import load_registry

    inst = instance()
    names_cfg = {"cluster_names": {"config": {"naming_model": args.naming_model or "",
                                              "llm_max_depth": args.llm_max_depth}}}
    splits = load_registry().names()
    trees = args.tree or splits + [ALL_SPLITS_TREE]
    models = args.model or _stored("SELECT DISTINCT model_id FROM rollouts ORDER BY 1")
    add_models(inst, models)
    table, failed = [], False
    for selection, keys, ops in (
            (["cluster_tree", "cluster_names", "cluster_report"], [(t, t) for t in trees], names_cfg),
            (["annotations"], [(f"{m} x {s}", dg.MultiPartitionKey({"model": m, "split": s}))
                               for m in models for s in splits if s in trees], {})):
        for label, key in keys:
            res = materialize(inst, selection, key, args.log_level, ops)
            md = res.metadata
            failed |= not res.ok
            tree_md, names_md = md.get("cluster_tree", {}), md.get("cluster_names", {})
            figures = (f"{tree_md.get('chunks', '?')} chunks, {tree_md.get('leaves', '?')} leaves, depth "
                       f"{tree_md.get('max_depth', '?')}; names: {names_md.get('llm', 0)} llm, "
                       f"{names_md.get('keywords', 0)} keywords") if "cluster_tree" in md else \
                f"{md.get('annotations', {}).get('annotated_units', '?')} units annotated"
            table.append([label, yes_no(res.ok), figures if res.ok else "", f"{res.seconds:.1f}"])
    show(["partition", "ok", "figures", "seconds"], table, "clusters", stderr=True)
    return 1 if failed else 0


def add_parsers(sub) -> None:
    a = sub.add_parser("annotate", help="place each sentence of a text in a cluster tree (named path, distance)")
    a.add_argument("text", help='the text ("-": stdin)')
    a.add_argument("--tree", default="all", help="a split's tree or `all`, over every split (default all)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(fn=cmd_annotate)
    c = sub.add_parser("clusters", help="build cluster trees, names, question and rollout annotations in-process")
    c.add_argument("--tree", action="append", help="repeatable; default: every split and `all`")
    c.add_argument("--naming-model", default=settings.naming_model(),
                   help="models.yaml id that names the clusters (default CPROX_NAMING_MODEL; empty: keywords)")
    c.add_argument("--llm-max-depth", type=int, default=-1,
                   help="name only nodes this deep or shallower with the model, the rest by keywords (-1: all)")
    c.add_argument("--model", action="append", help="rollouts of these models are annotated (default: all stored)")
    c.add_argument("--log-level", default="WARNING")
    c.set_defaults(fn=cmd_clusters)
