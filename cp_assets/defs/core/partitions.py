"""Partitions, defined once: corpus splits (corpora.yaml) and their shards (dynamic), eval sets (evals.yaml), models
(models.yaml, dynamic).

The corpus assets (raw_corpus, chunks, embeddings, ngram_index) are partitioned by split x shard number: a static
`split` dimension and a dynamic `shard` dimension of five-digit numbers (`00000`, `00001`, ...) that the
`corpus_shards_sensor` and `cprox shards sync` keep as long as the split with the most shards needs. Dagster's
dynamic dimension is shared by every key of the static one (dagster discussion #20264), so a split with fewer shards
than that has partitions past its plan: they materialize as empty shards (no documents, no vectors, no index file),
and reports do not wait for them. The other way, one dynamic dimension of `split/shard` keys, would need a custom
partition mapping from the split-level reports to the shards of their split, which Dagster does not support; with
split x shard number, a report partitioned by split (or eval set x split, model x split) reads every shard of its
split through built-in mappings (`shards_of_split`), so adding a shard to `pretrain` re-runs only `pretrain`'s reports.

`rollouts` is partitioned by eval set x model. Model ids are dynamic partitions so adding a model to models.yaml
needs no code reload: the `models_registry_sensor` adds and removes them to match the file.
"""


import dagster as dg

from cp_assets.lib.corpus.registry import load_registry
from cp_assets.lib.evals.eval_registry import load_evals
from cp_assets.lib.memorization.experiments import load_experiment

split_partitions = dg.StaticPartitionsDefinition(load_registry().names())
SHARDS = "corpus_shards"
shard_partitions = dg.DynamicPartitionsDefinition(name=SHARDS)
split_shard_partitions = dg.MultiPartitionsDefinition({"split": split_partitions, "shard": shard_partitions})
# a split-level report reads every shard of its split: the `split` dimensions correspond, `shard` maps to all
shards_of_split = dg.MultiPartitionMapping(
    {"split": dg.DimensionPartitionMapping("split", dg.IdentityPartitionMapping())})
eval_set_partitions = dg.StaticPartitionsDefinition(load_evals().names())
model_partitions = dg.DynamicPartitionsDefinition(name="models")
eval_model_partitions = dg.MultiPartitionsDefinition({"eval_set": eval_set_partitions, "model": model_partitions})
# Proximity reports: eval set x corpus split (eval_proximity, contamination), model x corpus split (rollout_proximity,
# rollout_traces).
eval_split_partitions = dg.MultiPartitionsDefinition({"eval_set": eval_set_partitions, "split": split_partitions})
model_split_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "split": split_partitions})
# A model x split report reads the rollouts (eval set x model) of its model for every eval set.
rollouts_of_model = dg.MultiPartitionMapping(
    {"model": dg.DimensionPartitionMapping("model", dg.IdentityPartitionMapping())})
# Cluster trees: one per split and one over every split ("all").
ALL_SPLITS_TREE = "all"
tree_partitions = dg.StaticPartitionsDefinition(load_registry().names() + [ALL_SPLITS_TREE])
# a model x split partition (annotations) reads the tree of its split
tree_of_split = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="split")
# a tree reads the embeddings of its split, or of every split ("all"); no built-in mapping says "the shards of
# split s for tree s, all shards for `all`" (trees are not automated, so the lineage says: every shard)
embeddings_to_trees = dg.AllPartitionMapping()
# a model's rollouts placed in one tree: model x tree (the dimension keeps the name `split`, so keys read
# `<model>|<split>`; `<model>|all` places them in the tree over every split)
model_tree_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "split": tree_partitions})
# Models trained here (training.yaml): one partition per optimizer x seed, e.g. `muon-s0` (tiny_models, tiny_sft_models)
_experiment = load_experiment()
run_partitions = dg.StaticPartitionsDefinition(_experiment.runs())
# every run trains on the base split's documents and the SFT stage reads the SFT split's (every shard of it; runs
# are not automated, so the lineage says: every corpus shard)
runs_from_base_split = dg.AllPartitionMapping()
runs_from_sft_split = dg.AllPartitionMapping()


def corpus_key(split: str, shard: str = "00000") -> dg.MultiPartitionKey:
    """The partition key of one shard of a split (a split that is not cut is shard 00000)."""
    return dg.MultiPartitionKey({"split": split, "shard": shard})


def split_and_shard(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(split, shard) of a corpus asset's partition key."""
    dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else dict(
        zip(sorted(["shard", "split"]), str(key).split("|")))
    return dims["split"], dims["shard"]
