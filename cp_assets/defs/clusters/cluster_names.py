"""`cluster_names`: a name and a one-sentence description for every node of a cluster tree, by an LLM prompted
Clio-style (samples nearest the centroid, contrasting samples from siblings; parents from their children's names),
with c-TF-IDF keyword names always computed and used when no model is configured or the model's answer is unusable.
Names are cached by the node's member hash, so re-clustering re-names only changed nodes."""

import time

import dagster as dg

from cp_assets.defs.clusters.cluster_tree import cluster_tree
from cp_assets.defs.core.partitions import ALL_SPLITS_TREE, tree_partitions
from cp_assets.defs.core.policies import PG_RETRY
from cp_assets.lib.clusters import report as cluster_report
from cp_assets.lib.clusters import store as cluster_store
from cp_assets.lib.clusters.naming import NameCache, name_nodes, naming_stats
from cp_assets.lib.clusters.plots import tree_html, tree_png
from cp_assets.lib.core import plots, settings
from cp_assets.lib.corpus.encoder import model_slug
from cp_assets.resources.encoder import SentenceEncoder
from cp_assets.resources.llm import LLMResource
from cp_assets.resources.pgvector_store import PgVectorStore
from cp_assets.resources.results import ResultsStore


class ClusterNamesConfig(dg.Config):
    # a models.yaml id (any OpenAI-compatible endpoint, vLLM or a local model); empty: keyword names only.
    # Default: CPROX_NAMING_MODEL.
    naming_model: str = settings.naming_model()
    samples: int = 6  # chunks nearest the centroid shown to the model
    contrast: int = 4  # chunks of sibling clusters shown as contrast
    max_name_words: int = 6
    llm_max_depth: int = -1  # only nodes this deep or shallower are named by the model (-1: every node)


@dg.asset(
    partitions_def=tree_partitions,
    deps=[cluster_tree],
    group_name="clusters",
    kinds={"duckdb", "python"},
    owners=["team:corpus"],
    retry_policy=PG_RETRY,
    description="Names and one-sentence descriptions of every cluster-tree node (Clio-style LLM prompts, bottom-up; "
                "c-TF-IDF keyword names as the fallback and when no model is set), cached by member hash; duplicate "
                "sibling names resolved. Table `cluster_names`; treemap/sunburst HTML and PNG in the metadata.",
)
def cluster_names(context: dg.AssetExecutionContext, config: ClusterNamesConfig, encoder: SentenceEncoder,
                  pg: PgVectorStore, llm: LLMResource, results: ResultsStore) -> dg.MaterializeResult:
    name, store, db, t0 = context.partition_key, pg.store(), results.db(), time.perf_counter()
    slug = model_slug(encoder.model)
    tree = cluster_store.load_tree(store, name, slug)
    if tree is None:
        raise LookupError(f"no cluster tree {name!r} for {encoder.model}: materialize `cluster_tree` first")
    vectors, ids, splits = cluster_store.load_vectors(store, slug, "all" if name == ALL_SPLITS_TREE else name)
    texts = {}
    for s in sorted(set(splits)):
        texts.update({c: t for c, _, t, _ in store.chunk_rows(s)})
    by_chunk = dict(zip(ids, vectors))
    backend = llm.backend(config.naming_model) if config.naming_model else None
    names = name_nodes(tree, texts, by_chunk, backend, NameCache(db), samples=config.samples,
                       contrast=config.contrast, max_name_words=config.max_name_words,
                       llm_max_depth=None if config.llm_max_depth < 0 else config.llm_max_depth, log=context.log.info)
    rows = cluster_report.name_rows(name, encoder.model, tree, names)
    cluster_report.save_names(db, name, encoder.model, rows)
    stored = cluster_report.load_names(db, name, encoder.model)
    nodes = cluster_report.plot_nodes(tree, stored)
    out = settings.home() / "plots"
    html = tree_html(nodes, out / f"cluster_tree_{name}.html", f"cluster tree {name} ({len(ids):,} chunks)")
    png = tree_png(nodes, out / f"cluster_tree_{name}.png", f"cluster tree {name}")
    top = sorted((n for n in tree.nodes.values() if n.depth == 1), key=lambda n: -n.size)
    table = "| cluster | chunks | name | description | keywords |\n|---|---|---|---|---|\n" + "".join(
        f"| {n.node_id} | {n.size:,} | {names[n.node_id].name} | {names[n.node_id].description} | "
        f"{names[n.node_id].keyword_name} |\n" for n in top)
    return dg.MaterializeResult(metadata={
        **naming_stats(names), "naming_model": config.naming_model or "keywords only",
        "seconds": round(time.perf_counter() - t0, 2),
        "top_level": dg.MetadataValue.md(table.replace("\n|", "\n|")),
        "treemap": dg.MetadataValue.md(plots.markdown_image(png, "cluster tree")),
        "treemap_html": dg.MetadataValue.path(str(html)),
        "errors": dg.MetadataValue.json({i: n.error for i, n in names.items() if n.error}),
    })
