"""`annotations`: every rollout of a model, answer by answer and sentence by sentence, placed in a split's cluster
tree (nearest leaf, named path, distance); error rate per top-level cluster with Wilson intervals. Table
`annotations`. `cluster_report`: which clusters the eval questions fall in (table `question_clusters`)."""

import dagster as dg

from cp_assets.defs.clusters.cluster_names import cluster_names
from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.partitions import (
    model_tree_partitions,
    rollouts_of_model,
    tree_partitions,
)
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.defs.evals.eval_samples import eval_samples
from cp_assets.defs.evals.rollouts import rollouts
from cp_assets.lib.clusters import report as clusters
from cp_assets.lib.clusters import store as cluster_store
from cp_assets.lib.clusters.annotations import Annotation, render
from cp_assets.lib.clusters.plots import rate_bars, tree_html
from cp_assets.lib.core import plots, settings
from cp_assets.lib.corpus.encoder import model_slug
from cp_assets.lib.reports import report_tables
from cp_assets.lib.reports.proximity import encode_cached
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore

TREE_OF_SPLIT = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="split")


def _tree_and_names(pg: PgVectorStore, results: ResultsStore, encoder: SentenceEncoder, tree_name: str):
    tree = cluster_store.load_tree(pg.store(), tree_name, model_slug(encoder.model))
    if tree is None:
        raise LookupError(f"no cluster tree {tree_name!r} for {encoder.model}: materialize `cluster_tree` and "
                          "`cluster_names` first")
    return tree, clusters.load_names(results.db(), tree_name, encoder.model)


@dg.asset(
    partitions_def=model_tree_partitions,
    deps=[dg.AssetDep(rollouts, partition_mapping=rollouts_of_model),
          dg.AssetDep(cluster_names, partition_mapping=TREE_OF_SPLIT)],
    group_name="clusters",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    pool="gpu",  # encodes answers and sentences with the embedding model
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Each rollout of the model (whole answer and each sentence) placed in the split's cluster tree: "
                "nearest leaf, top-level cluster, named path, cosine distance. Error rate per top-level cluster "
                "with 95% Wilson intervals. Table `annotations`.",
)
def annotations(context: dg.AssetExecutionContext, encoder: SentenceEncoder, pg: PgVectorStore,
                results: ResultsStore) -> dg.MaterializeResult:
    keys = context.partition_key.keys_by_dimension
    model_id, split, db = keys["model"], keys["split"], results.db()
    tree, names = _tree_and_names(pg, results, encoder, split)
    done = db.rollouts(model_id=model_id)
    rows = clusters.annotation_rows(split, encoder.model, tree, names, done,
                                          lambda texts: encode_cached(db, encoder.model, texts)[0])
    with db.connect() as con:
        report_tables.replace_rows(con, "annotations", {"model_id": model_id, "tree": split,
                                                        "embed_model": encoder.model},
                                   clusters.ANNOTATION_COLUMNS, rows)
    rates = clusters.error_rates(rows)
    meta = {"rollouts": len(done), "annotated_units": len(rows),
            "sentences": sum(r[6] == "sentence" for r in rows), "clusters_hit": len({r[11] for r in rows})}
    if rates:
        out = settings.home() / "plots"
        labels = sorted(rates, key=lambda i: -rates[i][1])
        png = rate_bars([names.get(i, {}).get("name", i) for i in labels], [rates[i][0] for i in labels],
                        [rates[i][1] for i in labels], out / f"annotations_{model_id}_{split}.png",
                        f"{model_id}: error rate by cluster of its answer ({split} tree)", "error rate")
        html = tree_html(clusters.plot_nodes(tree, names, rates), out / f"annotations_{model_id}_{split}.html",
                         f"{model_id}: error rate by cluster ({split} tree; colour = error rate)")
        meta |= {"error_rate_by_cluster": dg.MetadataValue.md(plots.markdown_image(png, "error rate by cluster")),
                 "error_rate_table": dg.MetadataValue.md(clusters.rate_table(tree, names, rates)),
                 "treemap_html": dg.MetadataValue.path(str(html))}
    by_rollout = {}
    for r in rows:
        if r[6] == "sentence":
            by_rollout.setdefault((r[4], r[5]), []).append(r)
    examples = []
    for r in done[:3]:
        found = [Annotation(x[7], x[8], x[9], x[10], x[11], [], [x[13]], [x[14]])
                 for x in by_rollout.get((r.sample_id, r.params_hash), [])]
        examples.append(f"**{r.sample_id}**\n```text\n{render(r.completion, found)[:1500]}\n```")
    meta["examples"] = dg.MetadataValue.md("\n\n".join(examples) or "(no rollouts)")
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    partitions_def=tree_partitions,
    deps=[cluster_names, eval_samples],
    group_name="clusters",
    kinds={"duckdb", "python"},
    owners=["team:evals"],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    retry_policy=PG_RETRY,
    description="Eval questions per cluster: every question of every loaded eval set placed in the tree (nearest "
                "leaf, top-level cluster, named path). Table `question_clusters`; counts per cluster and eval set.",
)
def cluster_report(context: dg.AssetExecutionContext, encoder: SentenceEncoder, pg: PgVectorStore,
                   results: ResultsStore) -> dg.MaterializeResult:
    tree_name, db = context.partition_key, results.db()
    tree, names = _tree_and_names(pg, results, encoder, tree_name)
    with db.connect(read_only=True) as con:
        samples = [{"eval_set": e, "sample_id": s, "prompt": p} for e, s, p in con.execute(
            "SELECT eval_set, sample_id, prompt FROM eval_samples ORDER BY eval_set, row_idx").fetchall()]
    if not samples:
        raise ValueError("no eval samples in the results DB: materialize `eval_samples` first")
    vecs, encoded, cached = encode_cached(db, encoder.model, [s["prompt"] for s in samples])
    rows = clusters.question_rows(tree_name, encoder.model, tree, names, samples, vecs)
    with db.connect() as con:
        report_tables.replace_rows(con, "question_clusters", {"tree": tree_name, "embed_model": encoder.model},
                                   [c.split()[0] for c in report_tables.DDL["question_clusters"].split(",")], rows)
    counts = clusters.counts_by(rows, key=5, group=2)
    sets = sorted({r[2] for r in rows})
    order = sorted(counts, key=lambda t: -sum(counts[t].values()))
    table = "| cluster | " + " | ".join(sets) + " |\n|---|" + "---|" * len(sets) + "\n" + "".join(
        f"| {names.get(t, {}).get('name', t)} | " + " | ".join(str(counts[t].get(e, 0)) for e in sets) + " |\n"
        for t in order)
    png = plots.bars([names.get(t, {}).get("name", t) for t in order], [sum(counts[t].values()) for t in order],
                     settings.home() / "plots" / f"questions_by_cluster_{tree_name}.png",
                     f"eval questions per top-level cluster ({tree_name} tree)", "questions")
    return dg.MaterializeResult(metadata={
        "questions": len(rows), "encoded": encoded, "cached": cached, "eval_sets": sets,
        "questions_per_cluster": dg.MetadataValue.md(table),
        "plot": dg.MetadataValue.md(plots.markdown_image(png, "questions per cluster")),
    })
