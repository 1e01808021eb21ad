"""The `gadms serve` page in headless Chromium (Debian's chromium, driven by Playwright).

Loads ``/?q=a+woman+in+a+red+dress``, waits for the results and checks them against the
JSON API: the number of result images, their order, and the highlighted words. Then
clicks a result (search by that image) and checks the URL keeps the query. Set
``GADMS_SCREENSHOT=FILE`` to save the page as a PNG (docs/serve.png is made that way).

The test needs a Chromium executable (``apt-get install -y chromium``); ``.ci/run`` installs
it and sets ``GADMS_REQUIRE_BROWSER=1``, which turns a missing browser into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from gadms_cli.serve.app import create_app
from tests.test_serve import QUERY, LiveServer, gallery, model, service  # noqa: F401  (fixtures)

CHROMIUM = os.environ.get("GADMS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")

if CHROMIUM is None:
    if os.environ.get("GADMS_REQUIRE_BROWSER") == "1":
        raise RuntimeError("GADMS_REQUIRE_BROWSER=1 but no chromium executable: apt-get install -y chromium")
    pytest.skip("no chromium executable (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_the_page_shows_the_api_results_in_order_with_highlighted_words(service, browser):  # noqa: F811
    live = LiveServer(create_app(service))
    try:
        api = httpx.get(f"{live.url}/api/search", params={"q": QUERY, "k": 20, "explain": 1}).json()
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{live.url}/?q=a+woman+in+a+red+dress")
        page.wait_for_selector(".result img")
        page.wait_for_function("document.querySelectorAll('#explanation .word').length > 0")
        page.wait_for_function("[...document.querySelectorAll('.result img')].every(i => i.complete && i.naturalWidth > 0)")

        ids = page.eval_on_selector_all(".result", "cards => cards.map(c => c.dataset.id)")
        assert len(ids) == len(api["results"]) == min(20, 12)  # the page's default top-k is 20; the gallery shows 12
        assert ids == [r["id"] for r in api["results"]]
        assert page.input_value("#q") == QUERY
        words = page.eval_on_selector_all("#explanation .word", "spans => spans.map(s => [s.textContent, Number(s.dataset.score)])")
        assert [w for w, _ in words] == [w["word"] for w in api["explanation"]["words"]]
        assert [s for _, s in words] == pytest.approx([w["score"] for w in api["explanation"]["words"]], abs=1e-3)
        top = page.eval_on_selector_all("#explanation .word.top", "spans => spans.map(s => s.textContent)")
        best = max(api["explanation"]["words"], key=lambda w: w["score"])["word"]
        assert top == [best]
        if os.environ.get("GADMS_SCREENSHOT"):
            page.screenshot(path=os.environ["GADMS_SCREENSHOT"], full_page=True)

        # Click the second result: the page searches by that image (the image itself left out).
        clicked = ids[1]
        page.click(f".result[data-id='{clicked}']")
        page.wait_for_function(f"document.getElementById('status').textContent.startsWith('{min(20, 11)} results for people like')")
        similar = page.eval_on_selector_all(".result", "cards => cards.map(c => c.dataset.id)")
        expected = httpx.get(f"{live.url}/api/search/image", params={"id": clicked, "k": 20}).json()["results"]
        assert similar == [r["id"] for r in expected] and clicked not in similar

        # A new text search goes into the URL; reloading it shows the same results.
        page.fill("#q", "a man in blue jeans")
        page.select_option("#k", "10")
        page.click("button[type=submit]")
        page.wait_for_url("**/?q=a+man+in+blue+jeans&k=10")
        page.wait_for_function("document.querySelectorAll('.result').length === 10")
        again = httpx.get(f"{live.url}/api/search", params={"q": "a man in blue jeans", "k": 10}).json()["results"]
        page.reload()
        page.wait_for_function("document.querySelectorAll('.result').length === 10")
        assert page.eval_on_selector_all(".result", "cards => cards.map(c => c.dataset.id)") == [r["id"] for r in again]
        page.close()
    finally:
        live.stop()


def test_a_dropped_image_searches_by_example(service, browser, gallery):  # noqa: F811
    live = LiveServer(create_app(service))
    try:
        picture = sorted((gallery / "people").iterdir())[0]
        expected = httpx.post(f"{live.url}/api/search/image", params={"k": 20},
                              files={"image": (picture.name, picture.read_bytes(), "image/jpeg")}).json()["results"]
        page = browser.new_page()
        page.goto(live.url + "/")
        data = list(picture.read_bytes())
        page.evaluate(
            """([name, bytes]) => {
                const file = new File([new Uint8Array(bytes)], name, { type: "image/jpeg" });
                const transfer = new DataTransfer();
                transfer.items.add(file);
                window.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
            }""",
            [picture.name, data],
        )
        page.wait_for_function("document.getElementById('status').textContent.includes('people like')")
        ids = page.eval_on_selector_all(".result", "cards => cards.map(c => c.dataset.id)")
        assert ids == [r["id"] for r in expected] and len(ids) == 12
        page.close()
    finally:
        live.stop()
