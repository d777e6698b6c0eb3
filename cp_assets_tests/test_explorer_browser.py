"""The provenance explorer (`cprox serve`) on the test splits, served in-process on a loopback port: its JSON API
(explain, a bad text, an unknown rollout, a document in context, the rollout list) and, in headless Chromium
(Playwright, Debian's /usr/bin/chromium as test_ui_browser.py), the page: paste a corpus sentence, submit, see it
highlighted, click the span, see its document with the span marked in context, and the side panels filled.
With SCREENSHOT_DIR set (e.g. `SCREENSHOT_DIR=docs/img`), the page is saved there as explorer_*.png."""

import importlib.util
import json
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cp_assets_tests.servers import free_port
from cp_assets_tests.test_explain import corpus_sentence, explainer  # noqa: F401 - `explainer` is a fixture
from cp_assets_tests.test_ui_browser import CHROMIUM, CHROMIUM_ARGS

SCREENSHOT_DIR = os.environ.get("SCREENSHOT_DIR")
VIEWPORT = {"width": 1280, "height": 900}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(explainer):  # noqa: F811
    import uvicorn

    from cp_assets.lib.provenance.web import create_app

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(explainer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "the explorer did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def call(url: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_answers_and_refuses_with_reasons(server, store):
    text, doc_id = corpus_sentence(store)
    status, r = call(server + "/api/explain", {"text": text})
    assert status == 200 and r["seen"] and r["spans"]
    span = max(r["spans"], key=lambda s: s["n_tokens"])
    d = span["docs"][0]
    status, doc = call(server + f"/api/document?split={span['split']}&doc_id={d['doc_id']}&start={d['char_start']}"
                                f"&end={d['char_end']}")
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731 - the corpus may break a line where the text has a space
    assert status == 200 and norm(doc["text"][doc["span_start"]:doc["span_end"]]) == norm(span["text"])
    assert call(server + "/api/explain", {"text": " "})[0] == 400
    status, r = call(server + "/api/rollout/nobody%2Fgsm8k-0")
    assert status == 404 and "no rollout 'nobody/gsm8k-0'" in r["detail"]
    assert call(server + "/api/document?split=tiny&doc_id=nope")[0] == 404
    status, r = call(server + "/api/rollouts")
    assert status == 200 and set(r) == {"rollouts", "eval_sets", "models"}


def test_loopback_only_without_a_warning():
    from cp_assets.lib.provenance.web import loopback_warning

    assert loopback_warning("127.0.0.1") is None and loopback_warning("localhost") is None
    assert "no authentication" in loopback_warning("0.0.0.0")


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
@pytest.mark.skipif(importlib.util.find_spec("playwright") is None, reason="the playwright package is not installed")
def test_the_page_highlights_a_span_and_shows_its_document(server, store, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    text, doc_id = corpus_sentence(store)
    shots = []

    def shoot(page, name):
        path = tmp_path / f"{len(shots) + 1:02d}_{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)
        if SCREENSHOT_DIR:
            Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(SCREENSHOT_DIR) / f"explorer_{name}.png"))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)
        try:
            page.goto(server + "/")
            page.fill("#text", text)
            page.click("#go")
            marks = page.locator("mark.span")
            expect(marks.first).to_be_visible()
            assert text.startswith(page.locator("#answer").inner_text().strip()[:40])
            expect(page.locator("#seen")).to_contain_text("seen")
            expect(page.locator("#neighbours")).to_contain_text("tiny")
            shoot(page, "answer")
            longest = max(range(marks.count()), key=lambda i: len(marks.nth(i).inner_text()))
            span_text = marks.nth(longest).inner_text()
            marks.nth(longest).click()
            expect(page.locator("#docs")).to_contain_text(doc_id)
            expect(page.locator("#doc mark")).to_be_visible()
            assert " ".join(page.locator("#doc mark").inner_text().lower().split()) == " ".join(
                span_text.lower().split())
            shoot(page, "document")
        except Exception as e:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            raise AssertionError(f"{e}\nscreenshots: {shots + [tmp_path / 'failure.png']}") from e
        finally:
            browser.close()
