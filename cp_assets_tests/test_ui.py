"""UI smoke test: the Dagster webserver on loopback lists every asset of the loaded definitions, with the same group,
partitions (static keys; dynamic and multi-partition dimensions by name) and asset checks, in one GraphQL query."""

import dagster as dg
import pytest

from cp_assets_tests.conftest import REGISTRY_SPLITS
from cp_assets_tests.servers import webserver  # noqa: F401 - `webserver` is a fixture

PARTITIONS = """partitionDefinition { type dimensionTypes { name type dynamicPartitionsDefinitionName } }
                partitionKeysByDimension { name partitionKeys }"""
QUERY = """{
  assetNodes { assetKey { path } groupName isPartitioned pools %s
               assetChecksOrError { ... on AssetChecks { checks { name blocking %s } } } }
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }
}""" % (PARTITIONS, PARTITIONS)
SINGLE_DIMENSION = "default"  # the name GraphQL gives the one dimension of a partitions definition that is not multi


def dimension(pd: dg.PartitionsDefinition) -> tuple:
    """A dimension as the UI shows it: its static keys in order, or the dynamic definition's name (the webserver's
    instance holds no dynamic partitions, so there are no keys to compare)."""
    if isinstance(pd, dg.DynamicPartitionsDefinition):
        return "DYNAMIC", pd.name
    assert isinstance(pd, dg.StaticPartitionsDefinition), f"no UI shape written for {type(pd).__name__}"
    return "STATIC", tuple(pd.get_partition_keys())


def expected_partitions(pd: dg.PartitionsDefinition | None) -> dict | None:
    """{dimension name: dimension(...)} of a partitions definition, None when unpartitioned."""
    if pd is None:
        return None
    if isinstance(pd, dg.MultiPartitionsDefinition):
        return {d.name: dimension(d.partitions_def) for d in pd.partitions_defs}
    return {SINGLE_DIMENSION: dimension(pd)}


def shown_partitions(node: dict) -> dict | None:
    """The same shape from a GraphQL asset node or asset check."""
    pdef = node["partitionDefinition"]
    if pdef is None:
        assert node["partitionKeysByDimension"] in ([], [{"name": SINGLE_DIMENSION, "partitionKeys": []}]), node
        return None
    keys = {d["name"]: tuple(d["partitionKeys"]) for d in node["partitionKeysByDimension"]}
    shown = {}
    for d in pdef["dimensionTypes"]:
        if d["type"] == "DYNAMIC":
            assert keys[d["name"]] == (), f"the webserver's fresh instance has no dynamic partitions: {node}"
            shown[d["name"]] = "DYNAMIC", d["dynamicPartitionsDefinitionName"]
        else:
            shown[d["name"]] = d["type"], keys[d["name"]]
    assert (pdef["type"] == "MULTIPARTITIONED") == (len(shown) > 1), pdef
    return shown


def expected_from_definitions() -> tuple[dict, dict]:
    """(asset -> (group, partitions), (asset, check) -> (blocking, partitions)) from the loaded definitions."""
    from cp_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = {key.to_user_string(): (graph.get(key).group_name, expected_partitions(graph.get(key).partitions_def))
              for key in graph.get_all_asset_keys()}
    checks = {}
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        checks[key.asset_key.to_user_string(), key.name] = spec.blocking, expected_partitions(spec.partitions_def)
    return assets, checks


def shown_in_ui(data: dict) -> tuple[dict, dict]:
    assets, checks = {}, {}
    for node in data["assetNodes"]:
        name = "/".join(node["assetKey"]["path"])
        assets[name] = node["groupName"], shown_partitions(node)
        assert node["isPartitioned"] == (assets[name][1] is not None), node
        for check in node["assetChecksOrError"]["checks"]:
            checks[name, check["name"]] = check["blocking"], shown_partitions(check)
    return assets, checks


NO_DIFFERENCE = {"missing from the UI": [], "only in the UI": []}


def differences(want: dict, got: dict) -> dict:
    return {"missing from the UI": sorted(want.keys() - got.keys()), "only in the UI": sorted(got.keys() - want.keys())}


@pytest.mark.slow
def test_webserver_lists_every_asset_partition_set_and_check(webserver):
    webserver.wait_loaded()
    data = webserver.graphql(QUERY)
    locations = data["workspaceOrError"]["locationEntries"]
    assert [(loc["name"], loc["loadStatus"]) for loc in locations] == [("corpus_proximity", "LOADED")]
    want_assets, want_checks = expected_from_definitions()
    got_assets, got_checks = shown_in_ui(data)
    assert differences(want_assets, got_assets) == NO_DIFFERENCE  # names an asset missing from the UI (or extra)
    for name, want in want_assets.items():
        assert got_assets[name] == want, name
    assert differences(want_checks, got_checks) == NO_DIFFERENCE
    for key, want in want_checks.items():
        assert got_checks[key] == want, key
    # a few values written out, so the comparison above cannot pass on two equally wrong sides
    assert got_assets["chunks"] == ("corpus", {"split": ("STATIC", REGISTRY_SPLITS),
                                               "shard": ("DYNAMIC", "corpus_shards")})
    assert got_assets["eval_samples"][1] == {SINGLE_DIMENSION: ("STATIC", ("gsm8k", "math500", "math", "recall"))}
    assert got_assets["rollouts"][1]["model"] == ("DYNAMIC", "models")
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert nodes["embeddings"]["pools"] == ["gpu"]
    assert {check: blocking for (asset, check), (blocking, _) in got_checks.items() if asset == "embeddings"} == {
        "check_embeddings_count_matches_chunks": True, "check_embeddings_dim_matches_model": True,
        "check_embeddings_finite": True}
    print(f"\nUI lists {len(got_assets)} assets and {len(got_checks)} checks, as the definitions do")
