"""The Dagster side shared by the two training assets (`tiny_models`, `tiny_sft_models`): their run config, and the
step wrapper that registers the trained model as a `models` partition and turns a diverged run into a failure
without retries (its failure row is already recorded by lib; earlier checkpoints stay)."""

from typing import Callable

import dagster as dg

from cp_assets.defs.core.executors import GPU_OP_TAGS
from cp_assets.defs.core.metadata import result
from cp_assets.defs.core.partitions import model_partitions, runs_from_base_split
from cp_assets.defs.corpus.raw_corpus import raw_corpus
from cp_assets.lib.tinygpt.config import TrainingDiverged


# the unpartitioned models trained on the base split (reference, LiRA references, LR sweep) read all of its shards
def base_split_dep() -> list[dg.AssetDep]:
    return [dg.AssetDep(raw_corpus, partition_mapping=runs_from_base_split)]


# what every GPU-pool asset of the lab declares (training and planted-item scoring)
LAB_GPU_ASSET = {"group_name": "memorization", "kinds": {"pytorch", "duckdb"}, "owners": ["team:memorization"],
                 "pool": "gpu", "op_tags": GPU_OP_TAGS}


class TrainingConfig(dg.Config):
    lr_scale: float = 1.0  # multiplies every learning rate of the run (a sweep knob; training.yaml holds the rest)


def training_result(context: dg.AssetExecutionContext, train: Callable[[], dict]) -> dg.MaterializeResult:
    """Run `train` (a `cp_assets.lib.memorization.materialize` training function) and hand its metadata on."""
    try:
        meta = train()
    except TrainingDiverged as exc:
        raise dg.Failure(description=str(exc), metadata={"model_id": exc.model_id}, allow_retries=False) from exc
    context.instance.add_dynamic_partitions(model_partitions.name, [meta["model_id"]])
    return result(meta)
