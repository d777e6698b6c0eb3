"""Partitions, defined once: corpus splits come from the registry (corpora.yaml / CPROX_CORPORA)."""


import dagster as dg

from cp_assets.lib.registry import load_registry

split_partitions = dg.StaticPartitionsDefinition(load_registry().names())
