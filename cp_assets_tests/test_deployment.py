"""The definitions as a deployment loads them: production resources (CPROX_DEPLOYMENT=production), each executor of
CPROX_EXECUTOR, GPU steps tagged for GPU nodes, and every asset labelled for the UI (group, owners, kinds, text)."""

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

GROUPS = {"corpus", "embeddings", "evals", "rollouts", "reports", "clusters", "memorization"}
GPU_ASSETS = {"embeddings", "rollouts", "tiny_models", "tiny_sft_models", "verbatim_recall", "membership", "extraction"}

LOAD = """
import json, dagster as dg
from cp_assets.definitions import defs
dg.Definitions.validate_loadable(defs)
repo = defs.get_repository_def()
graph = repo.asset_graph
print(json.dumps({
    "jobs": {j.name: j.executor_def.name for j in repo.get_all_jobs() if not j.name.startswith("__")},
    "default_executor": defs.executor.name,
    "env_vars": {k: sorted(f"{f}={v.env_var_name}" for f, v in r.__dict__.items() if isinstance(v, dg.EnvVar))
                 for k, r in defs.resources.items()},
    "gpu_tags": {k.to_user_string(): sorted(graph.get(k).pools or []) for k in graph.get_all_asset_keys()},
    "op_tags": {a.key.to_user_string(): {t: json.loads(v) if v.startswith("{") else v for t, v in a.op.tags.items()}
                for a in defs.assets if isinstance(a, dg.AssetsDefinition) and len(a.keys) == 1},
}))
"""


def load_definitions(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", LOAD], env=dict(os.environ, **env), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_definitions_load_with_production_resources_on_kubernetes():
    pytest.importorskip("dagster_k8s")
    loaded = load_definitions(CPROX_DEPLOYMENT="production", CPROX_EXECUTOR="k8s",
                              CPROX_DATABASE_URL="postgresql://u:never-read@db.invalid/x")
    assert loaded["default_executor"] == "k8s"
    assert set(loaded["jobs"].values()) == {"k8s"}, loaded["jobs"]
    env = loaded["env_vars"]
    assert "database_url=CPROX_DATABASE_URL" in env["pg"] and "home=CPROX_HOME" in env["pg"]
    assert {"corpora_file=CPROX_CORPORA", "data_dir=CPROX_DATA_DIR"} <= set(env["registry"])
    assert "models_file=CPROX_MODELS" in env["llm"]
    gpu = {name for name, pools in loaded["gpu_tags"].items() if pools == ["gpu"]}
    assert GPU_ASSETS <= gpu
    for name in gpu:
        tags = loaded["op_tags"][name]
        assert tags["dagster-k8s/config"]["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1", name
        assert tags["dagster-celery/queue"] == "gpu"
    cpu = set(loaded["op_tags"]) - gpu
    assert not any("dagster-celery/queue" in loaded["op_tags"][a] for a in cpu), "CPU steps stay off GPU nodes"


# assets that take the encoder resource for its model name or tokenizer only (no weights loaded)
ENCODER_NAME_ONLY = {"chunks", "contamination", "cluster_tree"}
# assets that train or score the tiny GPTs themselves (no `llm` resource)
TINY_GPT = {"tiny_models", "tiny_sft_models", "reference_model", "lira_references", "lr_sweep", "canary_memorization"}


def test_every_asset_that_runs_a_model_is_behind_the_gpu_boundary():
    """The `gpu` pool and the GPU op tags (k8s GPU request, Celery `gpu` queue) on every asset that runs a model:
    generation or scoring (`llm`), encoding (`encoder`, unless it only reads the model's name or tokenizer), or
    training; so a GPU step is limited and routed whichever job or executor runs it."""
    from cp_assets.defs.core.executors import GPU_OP_TAGS
    from cp_assets.definitions import defs

    runs_model = set()
    for a in defs.assets:
        if not isinstance(a, dg.AssetsDefinition):
            continue
        [name] = {k.to_user_string() for k in a.keys} if len(a.keys) == 1 else [a.op.name]
        needs = a.required_resource_keys
        if "llm" in needs or ("encoder" in needs and name not in ENCODER_NAME_ONLY) or name in TINY_GPT:
            runs_model.add(name)
            assert a.op.pool == "gpu", f"{name} runs a model but is not in the `gpu` pool"
            tags = {t: json.loads(v) if v.startswith("{") else v for t, v in a.op.tags.items()}
            assert {t: tags.get(t) for t in GPU_OP_TAGS} == GPU_OP_TAGS, name
        else:
            assert a.op.pool is None and "dagster-celery/queue" not in a.op.tags, f"{name} is CPU work"
    assert {"cluster_names", "eval_proximity", "rollout_proximity", "annotations", "cluster_report"} | GPU_ASSETS \
        <= runs_model


@pytest.mark.parametrize("kind, cpu, gpu", [("multiprocess", "multiprocess", "in_process"),
                                            ("k8s", "k8s", "k8s"), ("celery", "celery", "celery"),
                                            ("docker", "docker", "docker")])
def test_executor_choice(monkeypatch, kind, cpu, gpu):
    from cp_assets.defs.core.executors import cpu_executor, gpu_executor

    pytest.importorskip({"k8s": "dagster_k8s", "celery": "dagster_celery", "docker": "dagster_docker"}.get(kind, "dagster"))
    monkeypatch.setenv("CPROX_EXECUTOR", kind)
    assert (cpu_executor().name, gpu_executor().name) == (cpu, gpu)


def test_unknown_executor_or_deployment_is_a_clear_error(monkeypatch):
    from cp_assets.defs.core.executors import ExecutorUnavailable, cpu_executor
    from cp_assets.resources import deployment_resources

    monkeypatch.setenv("CPROX_EXECUTOR", "slurm")
    with pytest.raises(ExecutorUnavailable, match="CPROX_EXECUTOR='slurm': choose one of multiprocess, k8s"):
        cpu_executor()
    with pytest.raises(ValueError, match="CPROX_DEPLOYMENT='staging': choose one of local, production"):
        deployment_resources("staging")


def test_production_resources_fail_naming_the_missing_variable(monkeypatch):
    from cp_assets.resources import production_resources
    from cp_assets.resources.pgvector_store import PgVectorStore

    monkeypatch.delenv("CPROX_DATABASE_URL", raising=False)

    @dg.asset
    def needs_pg(pg: PgVectorStore) -> None:
        pg.store()

    with pytest.raises(dg.DagsterInvalidConfigError,
                       match='environment variable "CPROX_DATABASE_URL" which is not set'):
        dg.materialize([needs_pg], resources={"pg": production_resources()["pg"]})


def test_every_asset_is_labelled_for_the_ui():
    from cp_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)  # what `dagster definitions validate` checks, partition mappings included
    graph = defs.get_repository_def().asset_graph
    groups = set()
    for key in graph.get_all_asset_keys():
        node, name = graph.get(key), key.to_user_string()
        groups.add(node.group_name)
        assert node.group_name in GROUPS, (name, node.group_name)
        assert node.owners and all(o.startswith("team:") for o in node.owners), name
        assert node.kinds, name
        assert node.description and len(node.description) >= 60, name
    assert groups == GROUPS


@pytest.mark.parametrize("deployment", ["local", "production"])
def test_cprox_device_reaches_every_model_resource(monkeypatch, deployment):
    from cp_assets.resources import deployment_resources

    monkeypatch.setenv("CPROX_DEVICE", "cpu")
    monkeypatch.setenv("CPROX_DATABASE_URL", "postgresql://u:never-read@db.invalid/x")
    resources = deployment_resources(deployment)
    for name in ("encoder", "llm"):
        device = resources[name].device
        assert isinstance(device, dg.EnvVar) and device.env_var_name == "CPROX_DEVICE", name
        assert device.get_value() == "cpu"


def test_cprox_device_places_every_local_model(monkeypatch):
    """CPROX_DEVICE reaches the encoder wherever it is loaded without an explicit device (proximity reports, cluster
    naming, search), not only through the resources; an explicit device still wins. (The loader is replaced by a
    recorder: on this CPU-only machine the real model lands on the CPU either way.)"""
    from cp_assets.lib.core import settings
    from cp_assets.lib.corpus import encoder

    asked = []
    monkeypatch.setattr(encoder, "_load_model", lambda name, device: asked.append(device))
    monkeypatch.setenv("CPROX_DEVICE", "cuda:1")
    encoder.load_model("m")
    encoder.load_model("m", "cpu")
    monkeypatch.delenv("CPROX_DEVICE")
    encoder.load_model("m")
    assert asked == ["cuda:1", "cpu", None] and settings.device() is None
