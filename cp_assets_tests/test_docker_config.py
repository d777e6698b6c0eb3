"""The Docker deployment files (docker/), checked without Docker: compose structure, the Dockerfile's install order,
docker/dagster.yaml against Dagster's instance config schema (placeholder credentials, no connection), workspace."""

import importlib
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DAGSTER_HOME = "/opt/dagster/dagster_home"
PG_VARS = {"DAGSTER_PG_HOST": "db.invalid", "DAGSTER_PG_PORT": "6543", "DAGSTER_PG_USER": "someone",
           "DAGSTER_PG_PASSWORD": "p@ss word", "DAGSTER_PG_DB": "dagster_db"}
CODE_SERVER = ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "cp_assets.definitions"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped, ARG defaults and ENV substituted."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out, args = [], {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, rest = line.partition(" ")
        rest = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest)
        if op.upper() in ("ARG", "ENV"):
            args.update(token.split("=", 1) for token in shlex.split(rest) if "=" in token)
        out.append((op.upper(), rest))
    return out


def env_refs(node) -> set[str]:
    """Names of the `{env: NAME}` values anywhere in a Dagster config tree."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node)) if node else set()
    return set()


# --- docker-compose.yml -------------------------------------------------------------------------------------------

def test_compose_services_and_images(compose):
    services = compose["services"]
    assert set(services) == {"pgvector", "dagster-postgres", "vllm", "code", "webserver", "daemon"}
    assert services["pgvector"]["image"] == "pgvector/pgvector:pg16"
    assert services["dagster-postgres"]["image"].startswith("postgres:")
    images = {services[s]["image"] for s in ("code", "webserver", "daemon")}
    assert len(images) == 1, "code, webserver and daemon share one image"
    for name in ("code", "webserver", "daemon"):
        build = services[name]["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"


def test_compose_commands(compose):
    services = compose["services"]
    assert services["code"]["command"] == CODE_SERVER
    web = services["webserver"]["command"]
    assert web[0] == "dagster-webserver" and web[web.index("-h") + 1] == "0.0.0.0" and web[web.index("-p") + 1] == "3000"
    assert web[web.index("-w") + 1] == f"{DAGSTER_HOME}/workspace.yaml"
    daemon = services["daemon"]["command"]
    assert daemon[:2] == ["dagster-daemon", "run"] and daemon[daemon.index("-w") + 1] == f"{DAGSTER_HOME}/workspace.yaml"


def test_compose_ports_on_loopback_only(compose):
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port!r} beyond loopback"
            published.setdefault(name, []).append(port.rsplit(":", 1)[1])
    assert published["webserver"] == ["3000"]
    assert "code" not in published and "daemon" not in published


def test_compose_healthchecks_and_start_order(compose):
    services = compose["services"]
    for db in ("pgvector", "dagster-postgres"):
        assert "pg_isready" in " ".join(services[db]["healthcheck"]["test"])
    assert "grpc-health-check" in services["code"]["healthcheck"]["test"]
    assert services["code"]["depends_on"] == {"pgvector": {"condition": "service_healthy"},
                                              "dagster-postgres": {"condition": "service_healthy"}}
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"] == {"dagster-postgres": {"condition": "service_healthy"},
                                                "code": {"condition": "service_healthy"}}


def test_compose_dagster_storage_is_its_own_postgres(compose):
    services, env = compose["services"], compose["x-dagster-env"]
    assert env["DAGSTER_PG_HOST"] == "${DAGSTER_PG_HOST:-dagster-postgres}"
    pg = services["dagster-postgres"]["environment"]
    for var, key in (("DAGSTER_PG_USER", "POSTGRES_USER"), ("DAGSTER_PG_PASSWORD", "POSTGRES_PASSWORD"),
                     ("DAGSTER_PG_DB", "POSTGRES_DB")):
        assert env[var] == pg[key], "the Dagster services log in with the credentials the server is created with"
    assert "ports" not in services["dagster-postgres"], "Dagster's storage is not published"


def test_compose_vllm_serves_an_openai_endpoint_on_the_gpu(compose):
    from cp_assets.lib.evals.model_registry import load_models

    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["gpu"], "only GPU hosts start it (--profile gpu)"
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    cmd = vllm["command"]
    port = cmd[cmd.index("--port") + 1]
    served = cmd[cmd.index("--served-model-name") + 1]
    assert "ports" not in vllm and vllm["expose"] == [port]
    code_env = compose["services"]["code"]["environment"]
    models_file = code_env["CPROX_MODELS"].split(":-", 1)[1].rstrip("}")
    assert models_file == "/app/docker/models.yaml"
    spec = load_models(ROOT / "docker" / "models.yaml").get("vllm-served")
    assert spec.backend == "openai" and spec.base_url == f"http://vllm:{port}/v1" and spec.model == served


def test_compose_code_runs_with_production_resources(compose):
    env = compose["services"]["code"]["environment"]
    assert env["CPROX_DEPLOYMENT"] == "production"
    from cp_assets.defs.core.executors import EXECUTORS

    assert env["CPROX_EXECUTOR"].split(":-", 1)[1].rstrip("}") in EXECUTORS


def test_compose_code_environment_and_volumes(compose):
    code = compose["services"]["code"]
    env = code["environment"]
    assert "@pgvector:5432/" in env["CPROX_DATABASE_URL"] and env["CPROX_DATABASE_URL"].count("postgresql://") >= 1
    assert env["CPROX_DATA_DIR"] == "/data" and env["CPROX_HOME"] == "/var/cprox"
    volumes = code["volumes"]
    [data] = [v for v in volumes if v.endswith(":/data:ro")]
    assert data.startswith("${CPROX_DATA_DIR_HOST:-")
    default = data[len("${CPROX_DATA_DIR_HOST:-"):data.index("}")]
    assert (DOCKER / default).resolve() == (ROOT / ".." / "shared" / "data").resolve()
    assert "cprox_home:/var/cprox" in volumes
    named = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", []) if not v.startswith(("$", ".", "/"))}
    assert named <= set(compose["volumes"])


def test_every_dagster_service_gets_the_storage_settings(compose):
    needed = env_refs(yaml.safe_load((DOCKER / "dagster.yaml").read_text()))
    assert set(PG_VARS) <= needed
    for name in ("code", "webserver", "daemon"):
        assert needed <= set(compose["services"][name]["environment"]), name
        assert f"dagster_storage:{DAGSTER_HOME}/storage" in compose["services"][name]["volumes"]


# --- Dockerfile ---------------------------------------------------------------------------------------------------

def test_dockerfile_base_matches_the_venv_python():
    [(_, base)] = [i for i in dockerfile_instructions() if i[0] == "FROM"]
    assert base == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    from packaging.specifiers import SpecifierSet
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in SpecifierSet(requires)


def test_dockerfile_installs_cpu_torch_before_the_package():
    runs = [args for op, args in dockerfile_instructions() if op == "RUN"]
    torch = [i for i, r in enumerate(runs) if "torch==" in r]
    package = [i for i, r in enumerate(runs) if re.search(r"pip install (-r |.*-e \.)", r)]
    assert len(torch) == 1 and package, runs
    assert torch[0] < min(package)
    tokens = shlex.split(runs[torch[0]])
    assert "torch==2.13.0" in tokens
    assert tokens[tokens.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    # The pinned torch satisfies the project's own torch requirement, so installing the package keeps it.
    from packaging.requirements import Requirement
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [spec] = [Requirement(d).specifier for d in deps if Requirement(d).name == "torch"]
    assert "2.13.0" in spec
    assert "dagster-postgres" in " ".join(deps), "the Postgres instance storage needs dagster-postgres in the image"


def test_dockerfile_copies_and_command():
    instructions = dockerfile_instructions()
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert f"DAGSTER_HOME={DAGSTER_HOME}" in env
    copies = [shlex.split(args) for op, args in instructions if op == "COPY"]
    assert ["docker/dagster.yaml", "docker/workspace.yaml", f"{DAGSTER_HOME}/"] in copies
    for *sources, _ in copies:
        for source in sources:
            if "*" not in source:
                assert (ROOT / source).exists(), f"COPY source {source} is not in the build context"
    [(_, cmd)] = [i for i in instructions if i[0] == "CMD"]
    assert yaml.safe_load(cmd) == CODE_SERVER


def test_dockerfile_copies_every_registry_the_code_reads_at_load_time():
    copied = {Path(src).name for op, args in dockerfile_instructions() if op == "COPY" for src in shlex.split(args)[:-1]}
    registries = {p.name for p in ROOT.glob("*.yaml")} - {"dagster.yaml", "workspace.yaml"}
    assert registries == {"corpora.yaml", "corpora.full.yaml", "evals.yaml", "models.yaml", "training.yaml"}
    assert registries <= copied and "models.yaml" in copied


# --- dagster.yaml and workspace.yaml ------------------------------------------------------------------------------

def _instance_ref(tmp_path, monkeypatch):
    from dagster._core.instance.ref import InstanceRef

    shutil.copy(DOCKER / "dagster.yaml", tmp_path / "dagster.yaml")
    return InstanceRef.from_dir(str(tmp_path))


def _validate_class(data):
    """Validate one configurable class's config against its schema, as rehydrate() does, without instantiating it."""
    from dagster._config import process_config, resolve_to_config_type

    klass = getattr(importlib.import_module(data.module_name), data.class_name)
    return process_config(resolve_to_config_type(klass.config_type()), data.config_dict)


def test_dagster_yaml_validates_against_the_instance_schema(tmp_path, monkeypatch):
    for name, value in PG_VARS.items():
        monkeypatch.setenv(name, value)
    ref = _instance_ref(tmp_path, monkeypatch)  # top-level schema, storage/run-queue/concurrency conflicts
    classes = {f: getattr(ref, f) for f in ref._fields if hasattr(getattr(ref, f), "module_name")}
    for field, data in classes.items():
        result = _validate_class(data)
        assert result.success, (field, data.module_name, data.class_name, result.errors)
    assert (ref.storage_data.module_name, ref.storage_data.class_name) == ("dagster_postgres", "DagsterPostgresStorage")
    for field in ("run_storage_data", "event_storage_data", "schedule_storage_data"):
        assert classes[field].module_name == "dagster_postgres"
    assert ref.run_coordinator_data.class_name == "QueuedRunCoordinator"
    assert ref.run_launcher_data.class_name == "DefaultRunLauncher"

    from dagster_postgres.utils import pg_url_from_config

    url = pg_url_from_config(_validate_class(ref.storage_data).value)
    assert url == "postgresql+psycopg2://someone:p%40ss%20word@db.invalid:6543/dagster_db"

    assert ref.settings["telemetry"] == {"enabled": False}
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert ref.settings["concurrency"] == local["concurrency"], "docker/dagster.yaml mirrors the local pools and runs"
    assert ref.settings["concurrency"]["pools"]["default_limit"] == 1


def test_dagster_yaml_needs_the_storage_settings(tmp_path, monkeypatch):
    for name, value in PG_VARS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_PG_HOST")
    result = _validate_class(_instance_ref(tmp_path, monkeypatch).storage_data)
    assert not result.success and "DAGSTER_PG_HOST" in str(result.errors)


def test_workspace_names_the_code_server(compose):
    from dagster._config import validate_config
    from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA

    workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    assert validate_config(WORKSPACE_CONFIG_SCHEMA, workspace).success
    [location] = workspace["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] == "code" and grpc["host"] in compose["services"]
    assert str(grpc["port"]) == CODE_SERVER[CODE_SERVER.index("-p") + 1]
    [local] = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"]
    assert grpc["location_name"] == local["python_module"]["location_name"] == "corpus_proximity"
