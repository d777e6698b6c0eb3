"""UI smoke test: the Dagster webserver on loopback lists every asset, its split partitions and the checks."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cp_assets_tests.conftest import REGISTRY_SPLITS

REPO = Path(__file__).resolve().parents[1]
QUERY = """{
  assetNodes { assetKey { path } partitionKeys isPartitioned pools
               assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.load(resp)
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def webserver(store):
    port = free_port()
    exe = Path(sys.executable).with_name("dagster-webserver")
    proc = subprocess.Popen([str(exe), "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited: {proc.stdout.read()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("dagster-webserver did not answer within 180 s")
                time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_webserver_lists_assets_partitions_and_checks(webserver):
    deadline = time.monotonic() + 120
    while True:  # the code location loads in the background after the server answers
        data = graphql(webserver, QUERY)
        locations = data["workspaceOrError"]["locationEntries"]
        if all(loc["loadStatus"] == "LOADED" for loc in locations) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [loc["name"] for loc in locations] == ["corpus_proximity"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"raw_corpus", "chunks", "embeddings"} <= set(nodes)
    for name in ("raw_corpus", "chunks", "embeddings"):
        assert nodes[name]["isPartitioned"] and nodes[name]["partitionKeys"] == list(REGISTRY_SPLITS)
    assert nodes["embeddings"]["pools"] == ["gpu"]
    checks = {c["name"]: c["blocking"] for c in nodes["embeddings"]["assetChecksOrError"]["checks"]}
    assert checks == {"check_embeddings_count_matches_chunks": True, "check_embeddings_dim_matches_model": True,
                      "check_embeddings_finite": True}
