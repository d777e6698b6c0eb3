"""Where steps run: the executor for CPU jobs and for GPU jobs, chosen by CPROX_EXECUTOR, and the tags of GPU steps.

    CPROX_EXECUTOR   CPU jobs                     GPU jobs (embedding, generation, training, scoring)
    multiprocess     a process per step (local)   in-process: one process keeps the model loaded
    k8s              a Kubernetes Job per step    a Job per step on a GPU node (`nvidia.com/gpu: 1`, node selector)
    celery           Celery workers (queue        Celery workers of queue `gpu` (run them on GPU hosts:
                     `dagster`)                   `dagster-celery worker start -q gpu`)
    docker           a container per step         a container per step (GPU hosts: give the code image --gpus)

Every GPU step also sits in the Dagster concurrency pool `gpu` (its limit = GPUs per deployment, dagster.yaml), so
whatever executor runs it, no more GPU steps run at once than there are GPUs. `k8s` needs `dagster-k8s`, `celery`
`dagster-celery` (the `cluster` extra); their settings (namespace, image) come from the run config or the
environment as those libraries document; Celery's broker and result backend from CPROX_CELERY_BROKER and
CPROX_CELERY_BACKEND (start workers with the same values: docker/celery_worker.yaml). The choice is made once when
the code location loads, never in assets.

The boundary is the step, not the job: every asset that runs a model (generation, scoring, encoding, training) has
`pool="gpu"` and GPU_OP_TAGS (test_deployment checks each). So a job that mixes CPU and GPU steps
(`proximity_job`, `rollout_reports_job`, `all_assets_job`) runs on the CPU executor and still sends its GPU steps to
GPU nodes / the `gpu` queue on a cluster, and holds them to the pool's limit locally (where each such step is then a
process of its own that loads its model). Jobs of GPU steps only, or a chain of them, use the GPU executor.
"""



import dagster as dg

from cp_assets.lib.core import settings

EXECUTORS = ("multiprocess", "k8s", "celery", "docker")
GPU_NODE_SELECTOR = {"cprox/accelerator": "gpu"}  # label your GPU nodes with it (or edit it here)

# Tags every GPU step carries: a Kubernetes GPU request and node placement, and the Celery queue of GPU workers.
GPU_OP_TAGS = {
    "cprox/resource": "gpu",
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": GPU_NODE_SELECTOR,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
    "dagster-celery/queue": "gpu",
}


class ExecutorUnavailable(RuntimeError):
    """CPROX_EXECUTOR names an executor whose library is not installed, or no executor at all."""


def executor_kind() -> str:
    kind = settings.executor()
    if kind not in EXECUTORS:
        raise ExecutorUnavailable(f"CPROX_EXECUTOR={kind!r}: choose one of {', '.join(EXECUTORS)}")
    return kind


def _cluster_executor(kind: str) -> dg.ExecutorDefinition:
    try:
        if kind == "k8s":
            from dagster_k8s import k8s_job_executor
            return k8s_job_executor
        if kind == "celery":
            from dagster_celery import celery_executor
            config = {"broker": settings.celery_broker(), "backend": settings.celery_backend()}
            config = {k: v for k, v in config.items() if v}
            return celery_executor.configured(config, name="celery") if config else celery_executor
        from dagster_docker import docker_executor
        return docker_executor
    except ImportError as exc:
        extra = {"k8s": "dagster-k8s", "celery": "dagster-celery", "docker": "dagster-docker"}[kind]
        raise ExecutorUnavailable(f"CPROX_EXECUTOR={kind} needs {extra}: pip install -e '.[cluster]' "
                                  f"({exc})") from exc


def cpu_executor() -> dg.ExecutorDefinition:
    """The default executor of the code location (every job that does not set its own)."""
    kind = executor_kind()
    return dg.multiprocess_executor if kind == "multiprocess" else _cluster_executor(kind)


def gpu_executor() -> dg.ExecutorDefinition:
    """GPU jobs: in one process locally (the model loads once for every step), one GPU pod/worker per step on a
    cluster."""
    kind = executor_kind()
    return dg.in_process_executor if kind == "multiprocess" else _cluster_executor(kind)
