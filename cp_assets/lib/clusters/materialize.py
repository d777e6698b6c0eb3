"""The work of each clusters-domain asset, one function per asset (no dagster): build or name a tree, place eval
questions or a model's rollouts in it, store the rows and return the asset's metadata, rendered with
`cp_assets.lib.core.metadata` (the asset body in `cp_assets.defs.clusters` only passes it on).

Rows of `annotations` and `question_clusters` are read here by column name (`ANNOTATION_COLUMNS`,
`QUESTION_COLUMNS`), never by position.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from cp_assets.lib.clusters import name_quality
from cp_assets.lib.clusters import report as clusters
from cp_assets.lib.clusters import store as cluster_store
from cp_assets.lib.clusters.annotations import Annotation, render
from cp_assets.lib.clusters.keywords import keyword_names
from cp_assets.lib.clusters.naming import NameCache, name_nodes, naming_stats
from cp_assets.lib.clusters.plots import rate_bars, tree_html, tree_png
from cp_assets.lib.clusters.tree import Tree, build_tree
from cp_assets.lib.core import plots, settings
from cp_assets.lib.core.metadata import FilePath, Json, Markdown, explorer_link, image, snippet, table
from cp_assets.lib.corpus.encoder import encode, model_slug
from cp_assets.lib.reports import report_tables
from cp_assets.lib.reports.proximity import encode_cached

ALL = "all"  # the tree over every split (partition `all`) loads the vectors of every split
QUESTION_COLUMNS = [c.split()[0] for c in report_tables.DDL["question_clusters"].split(",")]
Log = Callable[[str], None]


def _named(rows: Sequence[tuple], columns: Sequence[str]) -> list[dict]:
    return [dict(zip(columns, r)) for r in rows]


def _top_level(tree: Tree) -> list:
    return sorted((n for n in tree.nodes.values() if n.depth == 1), key=lambda n: -n.size)


def tree_and_names(store, db, tree_name: str, embed_model: str) -> tuple[Tree, dict[str, dict]]:
    """A stored tree and its stored names; LookupError when the tree has not been built."""
    tree = cluster_store.load_tree(store, tree_name, model_slug(embed_model))
    if tree is None:
        raise LookupError(f"no cluster tree {tree_name!r} for {embed_model}: materialize `cluster_tree` and "
                          "`cluster_names` first")
    return tree, clusters.load_names(db, tree_name, embed_model)


def materialize_tree(store, db, tree_name: str, embed_model: str, *, log: Log, warn: Log, **build) -> dict:
    """`cluster_tree`: build the tree of the split's (or every split's) chunk vectors, save it to Postgres and the
    results DuckDB. `build`: `build_tree`'s seed, max_depth, min_size, branching, min_quality, sample_size."""
    t0, slug = time.perf_counter(), model_slug(embed_model)
    vectors, ids, splits = cluster_store.load_vectors(store, slug, ALL if tree_name == ALL else tree_name)
    log(f"tree {tree_name}: {len(ids):,} chunks of {sorted(set(splits))}")
    tree = build_tree(vectors, ids, splits, log=log, **build)
    for w in tree.warnings:
        warn(w)
    version = cluster_store.save_tree(store, tree_name, slug, tree)
    with db.connect() as con:
        exported = cluster_store.export_to_duckdb(tree, con, tree=tree_name, embed_model=embed_model)
    secs = time.perf_counter() - t0
    summary = tree.summary()
    top = [{"node": n.node_id, "chunks": f"{n.size:,}", "quality": None if n.quality is None else f"{n.quality:.3f}",
            "per split": str(n.split_counts)} for n in _top_level(tree)]
    return {
        **{k: v for k, v in summary.items() if k not in ("warnings", "stop_reasons") and v is not None},
        "stop_reasons": Json(summary["stop_reasons"]),
        "warnings": "; ".join(tree.warnings) or "none", "version": version, "embed_model": embed_model,
        "seconds": round(secs, 2), "chunks_per_s": round(len(ids) / secs) if secs else None,
        "duckdb_rows": Json(exported), "top_level": table(top, ["node", "chunks", "quality", "per split"], width=1000),
    }


def materialize_names(store, db, tree_name: str, embed_model: str, backend, naming_model: str, *, samples: int,
                      contrast: int, max_name_words: int, llm_max_depth: int | None, log: Log) -> dict:
    """`cluster_names`: name every node (LLM `backend`, or keywords when None), store table `cluster_names`, draw
    the treemap."""
    t0, slug = time.perf_counter(), model_slug(embed_model)
    tree = cluster_store.load_tree(store, tree_name, slug)
    if tree is None:
        raise LookupError(f"no cluster tree {tree_name!r} for {embed_model}: materialize `cluster_tree` first")
    vectors, ids, splits = cluster_store.load_vectors(store, slug, ALL if tree_name == ALL else tree_name)
    texts = {}
    for s in sorted(set(splits)):
        texts.update({c: t for c, _, t, _ in store.chunk_rows(s)})
    keywords = keyword_names(tree, texts)
    names = name_nodes(tree, texts, dict(zip(ids, vectors)), backend, NameCache(db), samples=samples,
                       contrast=contrast, max_name_words=max_name_words, llm_max_depth=llm_max_depth,
                       keywords=keywords, log=log)
    # name quality: each name retrieves its node among its siblings; an LLM name doing worse than the keywords goes
    kw_margin, llm_margin = name_quality.name_quality(tree, names, keywords, lambda t: encode(embed_model, t))
    quality = name_quality.by_depth(tree, kw_margin, llm_margin)
    replaced = name_quality.replace_worse(names, keywords, kw_margin, llm_margin)
    log("name quality (own node nearest among siblings): " + "; ".join(
        f"depth {q['depth']}: keywords {q['keyword_accuracy']:.2f}" + (
            f", LLM {q['llm_accuracy']:.2f}" if q["llm_accuracy"] is not None else "") for q in quality)
        + f"; {len(replaced)} LLM names replaced by their keyword names")
    clusters.save_names(db, tree_name, embed_model, clusters.name_rows(tree_name, embed_model, tree, names))
    nodes = clusters.plot_nodes(tree, clusters.load_names(db, tree_name, embed_model))
    out = settings.home() / "plots"
    html = tree_html(nodes, out / f"cluster_tree_{tree_name}.html", f"cluster tree {tree_name} ({len(ids):,} chunks)")
    png = tree_png(nodes, out / f"cluster_tree_{tree_name}.png", f"cluster tree {tree_name}")
    top = [{"cluster": n.node_id, "chunks": f"{n.size:,}", "name": names[n.node_id].name,
            "description": names[n.node_id].description, "keywords": names[n.node_id].keyword_name}
           for n in _top_level(tree)]
    return {
        **naming_stats(names), "naming_model": naming_model or "keywords only",
        "seconds": round(time.perf_counter() - t0, 2),
        "top_level": table(top, ["cluster", "chunks", "name", "description", "keywords"], width=1000),
        "treemap": image(png, "cluster tree"), "treemap_html": FilePath(str(html)),
        "errors": Json({i: n.error for i, n in names.items() if n.error}),
        "name_quality": table(quality, {"depth": "depth", "nodes": "nodes", "keyword_accuracy": "keyword names",
                                        "llm_names": "LLM names", "llm_accuracy": "LLM names right"}, digits=3),
        "name_quality_by_depth": Json(quality), "llm_names_replaced": len(replaced),
    }


def _examples(done: Sequence, rows: Sequence[dict], n: int = 3) -> Markdown:
    by_rollout: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["unit"] == "sentence":
            by_rollout.setdefault((r["sample_id"], r["params_hash"]), []).append(r)
    examples = []
    for r in done[:n]:
        found = [Annotation(x["idx"], x["char_start"], x["char_end"], x["text"], x["leaf_id"], [], [x["path"]],
                            [x["distance"]]) for x in by_rollout.get((r.sample_id, r.params_hash), [])]
        examples.append(f"**{r.sample_id}** ({snippet(r.prompt, 80)}) "
                        f"{explorer_link('open in the explorer', rollout=f'{r.model_id}/{r.sample_id}')}\n"
                        f"```text\n{render(r.completion, found)[:1500]}\n```")
    return Markdown("\n\n".join(examples) or "(no rollouts)")


def materialize_annotations(store, db, model_id: str, tree_name: str, embed_model: str) -> dict:
    """`annotations`: each rollout of `model_id` (answer and sentences) placed in the tree; table `annotations`,
    error rate per top-level cluster (bars, treemap, table) and three rendered examples."""
    tree, names = tree_and_names(store, db, tree_name, embed_model)
    done = db.rollouts(model_id=model_id)
    tuples = clusters.annotation_rows(tree_name, embed_model, tree, names, done,
                                      lambda texts: encode_cached(db, embed_model, texts)[0])
    with db.connect() as con:
        report_tables.replace_rows(con, "annotations", {"model_id": model_id, "tree": tree_name,
                                                        "embed_model": embed_model},
                                   clusters.ANNOTATION_COLUMNS, tuples)
    rows = _named(tuples, clusters.ANNOTATION_COLUMNS)
    rates = clusters.error_rates(tuples)
    meta = {"rollouts": len(done), "annotated_units": len(rows),
            "sentences": sum(r["unit"] == "sentence" for r in rows), "clusters_hit": len({r["leaf_id"] for r in rows})}
    if rates:
        out = settings.home() / "plots"
        labels = sorted(rates, key=lambda i: -rates[i][1])
        png = rate_bars([names.get(i, {}).get("name", i) for i in labels], [rates[i][0] for i in labels],
                        [rates[i][1] for i in labels], out / f"annotations_{model_id}_{tree_name}.png",
                        f"{model_id}: error rate by cluster of its answer ({tree_name} tree)", "error rate")
        html = tree_html(clusters.plot_nodes(tree, names, rates), out / f"annotations_{model_id}_{tree_name}.html",
                         f"{model_id}: error rate by cluster ({tree_name} tree; colour = error rate)")
        meta |= {"error_rate_by_cluster": image(png, "error rate by cluster"),
                 "error_rate_table": Markdown(clusters.rate_table(tree, names, rates)),
                 "treemap_html": FilePath(str(html))}
    meta["examples"] = _examples(done, rows)
    return meta


def eval_questions(db) -> list[dict]:
    """Every loaded eval question: {eval_set, sample_id, prompt}, by eval set and row order."""
    with db.connect(read_only=True) as con:
        return [{"eval_set": e, "sample_id": s, "prompt": p} for e, s, p in con.execute(
            "SELECT eval_set, sample_id, prompt FROM eval_samples ORDER BY eval_set, row_idx").fetchall()]


def materialize_question_clusters(store, db, tree_name: str, embed_model: str) -> dict:
    """`cluster_report`: every eval question placed in the tree; table `question_clusters`, questions per
    top-level cluster and eval set (table and bars)."""
    tree, names = tree_and_names(store, db, tree_name, embed_model)
    samples = eval_questions(db)
    if not samples:
        raise ValueError("no eval samples in the results DB: materialize `eval_samples` first")
    vecs, encoded, cached = encode_cached(db, embed_model, [s["prompt"] for s in samples])
    tuples = clusters.question_rows(tree_name, embed_model, tree, names, samples, vecs)
    with db.connect() as con:
        report_tables.replace_rows(con, "question_clusters", {"tree": tree_name, "embed_model": embed_model},
                                   QUESTION_COLUMNS, tuples)
    rows = _named(tuples, QUESTION_COLUMNS)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        per_set = counts.setdefault(r["top_id"], {})
        per_set[r["eval_set"]] = per_set.get(r["eval_set"], 0) + 1
    sets = sorted({r["eval_set"] for r in rows})
    order = sorted(counts, key=lambda t: -sum(counts[t].values()))
    per_cluster = [{"cluster": names.get(t, {}).get("name", t), **{e: counts[t].get(e, 0) for e in sets}}
                   for t in order]
    png = plots.bars([names.get(t, {}).get("name", t) for t in order], [sum(counts[t].values()) for t in order],
                     settings.home() / "plots" / f"questions_by_cluster_{tree_name}.png",
                     f"eval questions per top-level cluster ({tree_name} tree)", "questions")
    return {"questions": len(rows), "encoded": encoded, "cached": cached, "eval_sets": sets,
            "questions_per_cluster": table(per_cluster, ["cluster", *sets]),
            "plot": image(png, "questions per cluster")}
