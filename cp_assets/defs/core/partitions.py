"""Partitions, defined once: corpus splits (corpora.yaml), eval sets (evals.yaml), models (models.yaml, dynamic).

`rollouts` is partitioned by eval set x model. Model ids are dynamic partitions so adding a model to models.yaml
needs no code reload: the `models_registry_sensor` adds and removes them to match the file.
"""


import dagster as dg

from cp_assets.lib.corpus.registry import load_registry
from cp_assets.lib.evals.eval_registry import load_evals
from cp_assets.lib.memorization.experiments import load_experiment

split_partitions = dg.StaticPartitionsDefinition(load_registry().names())
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
# a split's embeddings feed its own tree and the "all" tree
# a model's rollouts placed in one tree: model x tree (the dimension keeps the name `split`, so keys read
# `<model>|<split>`; `<model>|all` places them in the tree over every split)
model_tree_partitions = dg.MultiPartitionsDefinition({"model": model_partitions, "split": tree_partitions})
embeddings_to_trees = dg.StaticPartitionMapping({s: {s, ALL_SPLITS_TREE} for s in load_registry().names()})
# Models trained here (training.yaml): one partition per optimizer x seed, e.g. `muon-s0` (tiny_models, tiny_sft_models)
_experiment = load_experiment()
run_partitions = dg.StaticPartitionsDefinition(_experiment.runs())
# every run trains on the base split's documents; the SFT stage reads the SFT split's
runs_from_base_split = dg.StaticPartitionMapping({_experiment.base.split: set(_experiment.runs())})
runs_from_sft_split = dg.StaticPartitionMapping({_experiment.sft.split: set(_experiment.runs())})
