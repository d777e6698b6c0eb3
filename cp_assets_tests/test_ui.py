"""UI smoke test: the Dagster webserver on loopback lists every asset, its split partitions and the checks."""

import pytest

from cp_assets_tests.conftest import REGISTRY_SPLITS
from cp_assets_tests.servers import webserver  # noqa: F401 - `webserver` is a fixture

QUERY = """{
  assetNodes { assetKey { path } partitionKeys isPartitioned pools
               assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }
}"""


@pytest.mark.slow
def test_webserver_lists_assets_partitions_and_checks(webserver):
    webserver.wait_loaded()
    data = webserver.graphql(QUERY)
    locations = data["workspaceOrError"]["locationEntries"]
    assert [loc["name"] for loc in locations] == ["corpus_proximity"]
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"raw_corpus", "chunks", "embeddings"} <= set(nodes)
    for name in ("raw_corpus", "chunks", "embeddings"):
        assert nodes[name]["isPartitioned"] and nodes[name]["partitionKeys"] == list(REGISTRY_SPLITS)
    assert nodes["embeddings"]["pools"] == ["gpu"]
    checks = {c["name"]: c["blocking"] for c in nodes["embeddings"]["assetChecksOrError"]["checks"]}
    assert checks == {"check_embeddings_count_matches_chunks": True, "check_embeddings_dim_matches_model": True,
                      "check_embeddings_finite": True}
