"""The Dagster UI in headless Chromium (Playwright): the `corpus` group's lineage, the `chunks` asset page, and one
partition of `chunks` materialized from the UI (Materialize -> split `tiny`, shard `00000` -> Launch 1 run -> the
run page shows Success; the webserver's instance records the materialization).

Needs the `playwright` package (the `dev` extra) and Debian's Chromium at /usr/bin/chromium (`.ci/run` installs it);
Playwright's own browser download is never used. A full-page screenshot of every step goes to the test's tmp_path;
with SCREENSHOT_DIR set (a test setting, e.g. `SCREENSHOT_DIR=docs/img`), the README's curated set is also saved
there: viewport-sized PNGs of the lineage, the partitions, the run page with Success and the chunks' token histogram.
"""

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest

from cp_assets_tests.conftest import REGISTRY_SPLITS
from cp_assets_tests.servers import webserver  # noqa: F401 - `webserver` is a fixture

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPLIT = "tiny"
KEY = f"00000|{SPLIT}"  # the corpus assets' partitions: shard x split
UI_TIMEOUT_MS = 60_000  # 2 shared cores: the first page compiles a lot of JavaScript
RUN_TIMEOUT_S = 180
VIEWPORT = {"width": 1280, "height": 800}  # a curated PNG is one viewport: ~100-250 KB
SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR")

REPORT_EVENT = """mutation($params: ReportRunlessAssetEventsParams!) {
  reportRunlessAssetEvents(eventParams: $params) { __typename ... on PythonError { message } }
}"""
RUN_QUERY = """query($runId: String!) {
  runsOrError(filter: {runIds: [$runId]}) {
    ... on Runs { results { runId status assetSelection { path } tags { key value } } }
  }
}"""
MATERIALIZATIONS_QUERY = """query($partition: String!) {
  assetOrError(assetKey: {path: ["chunks"]}) {
    ... on Asset { assetMaterializations(partitions: [$partition]) { runId partition } }
  }
}"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not installed (pip install -e '.[dev]')"),
]


@pytest.fixture
def shots(tmp_path):
    """`shoot(page, name, curated=None)`: a full-page screenshot in tmp_path, and with SCREENSHOT_DIR set and a
    `curated` name, the viewport as SCREENSHOT_DIR/<curated>.png too; returns the tmp_path one."""
    out = tmp_path / "screenshots"
    out.mkdir()
    taken: list[Path] = []

    def shoot(page, name: str, curated: str | None = None) -> Path:
        path = out / f"{len(taken) + 1:02d}_{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)
        if curated and SCREENSHOT_DIR:
            Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"{curated}.png"))
        return path

    shoot.dir, shoot.taken = out, taken
    return shoot


def test_materialize_one_chunks_partition_from_the_ui(webserver, materialized, shots):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    t0 = time.monotonic()
    assert [loc["loadStatus"] for loc in webserver.wait_loaded()] == ["LOADED"]
    assert webserver.graphql("{ shouldShowNux }") == {"shouldShowNux": False}  # servers.UI_DAGSTER_YAML
    # `materialized` built raw_corpus for `tiny` in the shared Postgres, outside this webserver's instance: report
    # it there, so the UI knows the upstream partition exists (no "upstream data missing" warning).
    import dagster as dg

    with dg.DagsterInstance.from_config(str(webserver.dagster_home)) as instance:  # as the shards sensor would
        instance.add_dynamic_partitions("corpus_shards", ["00000"])
    reply = webserver.graphql(REPORT_EVENT, {"params": {"eventType": "ASSET_MATERIALIZATION",
                                                        "assetKey": {"path": ["raw_corpus"]},
                                                        "partitionKeys": [KEY],
                                                        "description": "built by the test session"}})
    assert reply["reportRunlessAssetEvents"]["__typename"] == "ReportRunlessAssetEventsSuccess", reply

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=VIEWPORT)  # a fresh context and profile
        page.set_default_timeout(UI_TIMEOUT_MS)
        expect.set_options(timeout=UI_TIMEOUT_MS)
        try:
            _drive(page, webserver, shots)
        except (AssertionError, PlaywrightError) as e:
            try:
                shots(page, "failure")
            except PlaywrightError:
                pass
            raise AssertionError(f"{e}\nscreenshots: {[str(p) for p in shots.taken]}\n"
                                 f"webserver log: {webserver.log}") from e
        finally:
            browser.close()
    print(f"\nUI test: {time.monotonic() - t0:.1f} s; screenshots in {shots.dir}")


def _drive(page, webserver, shots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    # 1. the `corpus` group's lineage graph
    # the webserver's instance turns off the first visit's "Join the Dagster community" dialog (`nux`); should it
    # still open over a page (a second after it loads), Skip it
    community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    page.add_locator_handler(community, lambda dlg: dlg.get_by_role("button", name="Skip").click())
    page.goto(f"{webserver.url}/locations/corpus_proximity/asset-groups/corpus")
    for name in ("raw_corpus", "chunks", "ngram_index", "embeddings"):
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text(f"{len(REGISTRY_SPLITS)} partitions").first).to_be_visible()  # shard 00000 x splits
    shots(page, "corpus_lineage", curated="ui_lineage")

    # 2. the `chunks` asset page: its description, then its partitions
    page.goto(f"{webserver.url}/assets/chunks")
    expect(page.get_by_text("Chunks of at most", exact=False)).to_be_visible()
    expect(page.get_by_text("replaced atomically per shard", exact=False)).to_be_visible()
    shots(page, "chunks_overview")
    page.get_by_role("tab", name="Partitions").or_(page.get_by_role("link", name="Partitions")).first.click()
    for split in REGISTRY_SPLITS:
        expect(page.get_by_text(split, exact=True).first).to_be_visible()
    shots(page, "chunks_partitions")

    # 3. Materialize -> exactly one partition (`tiny`) -> Launch 1 run. The dialog may start with a selection (the
    # Partitions tab's, all three), so every split's box in the picker is set, not just tiny's ticked.
    page.goto(f"{webserver.url}/assets/chunks")
    page.get_by_role("button", name="Materialize").first.click()  # "Materialize…", after an icon
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize chunks")
    expect(dialog).to_be_visible()
    # one picker per dimension (shard, then split); in each, exactly one value ticked
    pickers = dialog.locator("[aria-haspopup=dialog]").filter(has=page.get_by_role("img", name="expand_more"))
    expect(pickers).to_have_count(2)
    for i, (values, wanted) in enumerate(((["00000"], "00000"), (REGISTRY_SPLITS, SPLIT))):
        pickers.nth(i).click()
        for value in values:
            item = page.get_by_role("menuitem").filter(has=page.get_by_title(value, exact=True))
            box = item.get_by_role("checkbox")
            expect(box).to_have_count(1)
            if box.is_checked() != (value == wanted):
                item.click()
            expect(box).to_be_checked(checked=value == wanted)
        dialog.get_by_text("Launch runs to materialize chunks").click()  # closes the partition picker
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    expect(dialog.get_by_text("Upstream data missing")).to_have_count(0)
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    shots(page, "launch_dialog")
    launch.click()

    # 4. the "Launched run" toast -> the run page, which follows the run live until its status tag says Success
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}"))
    expect(toast).to_be_visible()
    short_id = re.search(r"Launched run ([0-9a-f]{8})", toast.inner_text()).group(1)
    try:
        page.get_by_role("button", name="View").or_(page.get_by_role("link", name="View")).first.click(timeout=10_000)
    except PlaywrightTimeoutError:  # the toast went (it stays some seconds): open the run from the Runs list
        page.goto(f"{webserver.url}/runs")
        page.get_by_role("link", name=short_id).first.click()
    expect(page).to_have_url(re.compile(rf"/runs/{short_id}[0-9a-f-]{{28}}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    expect(page.get_by_text(f"partition: {KEY}", exact=True)).to_be_visible()
    try:
        expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)
    except AssertionError as e:
        raise AssertionError(f"{e}\nrun {run_id} per GraphQL: {_run(webserver, run_id)}") from e
    expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
    shots(page, "run_success")
    if SCREENSHOT_DIR:  # the run page again, without the "Launched run" toast over it
        page.goto(page.url)
        expect(page.get_by_text("RUN_SUCCESS", exact=True)).to_be_visible()
        shots(page, "run_success_reloaded", curated="ui_run_success")
    run = _run(webserver, run_id)
    assert run["status"] == "SUCCESS", run
    assert [a["path"] for a in run["assetSelection"]] == [["chunks"]], run
    assert {"key": "dagster/partition", "value": KEY} in run["tags"], run["tags"]

    # 5. the materialization: in the UI's Events tab, over GraphQL and in the instance's event log
    page.goto(f"{webserver.url}/assets/chunks?view=events&partition={KEY}")
    expect(page.get_by_text(run_id[:8]).first).to_be_visible()
    shots(page, "chunks_events")
    mats = webserver.graphql(MATERIALIZATIONS_QUERY, {"partition": KEY})["assetOrError"]["assetMaterializations"]
    assert {"runId": run_id, "partition": KEY} in mats, mats
    _assert_instance_materialization(webserver, run_id)

    # 6. the partition's metadata in the Partitions tab, down to the token histogram (an inline PNG)
    page.goto(f"{webserver.url}/assets/chunks?view=partitions&partition={KEY}")
    expect(page.get_by_text("token_histogram", exact=True).first).to_be_visible()
    shots(page, "chunks_partition_metadata", curated="ui_partitions")
    page.get_by_text("[Show Markdown]", exact=True).first.click()  # opens the markdown in a dialog
    plot = page.get_by_role("dialog").get_by_role("img", name="tokens per chunk")
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 100  # the PNG decoded, not a broken image
    shots(page, "chunks_token_histogram", curated="ui_metadata_plot")


def _run(webserver, run_id: str) -> dict:
    [run] = webserver.graphql(RUN_QUERY, {"runId": run_id})["runsOrError"]["results"]
    return run


def _assert_instance_materialization(webserver, run_id: str) -> None:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(webserver.dagster_home)) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("chunks"), asset_partitions=[KEY]), limit=10).records
    assert [(r.run_id, r.partition_key) for r in records] == [(run_id, KEY)], records
    metadata = records[0].asset_materialization.metadata
    assert metadata["chunks"].value > 0, metadata
