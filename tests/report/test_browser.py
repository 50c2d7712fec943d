"""The report in a real browser: headless Chromium opens report.html from disk with the network cut."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import ARTIFACTS
from hwsim.report.html import INTERACTIVE_ID, POINTS_TABLE_ID

CHROMIUM = Path("/usr/bin/chromium")
#: milliseconds to wait for plotly to draw
DRAW_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} missing: scripts/setup.sh installs Debian's chromium")


def test_report_renders_offline_in_chromium(results, report_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    page_url = (report_dir / "report.html").resolve().as_uri()
    blocked, errors = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)
            page = context.new_page()

            def route(r):
                if r.request.url.startswith(("file:", "data:")):
                    r.continue_()
                else:
                    blocked.append(r.request.url)
                    r.abort()

            page.route("**/*", route)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url, wait_until="load")
            page.wait_for_selector(f"#{INTERACTIVE_ID} .main-svg", timeout=DRAW_TIMEOUT_MS)

            widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
            assert len(widths) == 6 and all(w > 0 for w in widths), widths
            assert page.locator(f"#{INTERACTIVE_ID} .plot-container").count() == 1
            n_points = page.locator(f"#{INTERACTIVE_ID} .scatterlayer .point").count()
            assert n_points == (results["status"] == "ok").sum()
            assert page.locator(f"#{POINTS_TABLE_ID} tbody tr").count() == len(results)

            # hovering a point shows its configuration
            point = page.locator(f"#{INTERACTIVE_ID} .scatterlayer .point").nth(3)
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_selector(f"#{INTERACTIVE_ID} .hoverlayer .hovertext", timeout=DRAW_TIMEOUT_MS)
            hover = page.locator(f"#{INTERACTIVE_ID} .hoverlayer .hovertext").first.text_content()
            assert "SRAM" in hover and "recipe" in hover and "ppl" in hover, hover

            # sorting the table by a header keeps every row
            page.locator(f"#{POINTS_TABLE_ID} thead th", has_text="ppl").first.click()
            assert page.locator(f"#{POINTS_TABLE_ID} tbody tr").count() == len(results)

            page.evaluate("window.scrollTo(0, 0)")
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert blocked == [], f"the page tried the network: {blocked}"
    assert errors == [], f"console errors: {errors}"
    ARTIFACTS.mkdir(exist_ok=True)
    copy = shutil.copy(shot, ARTIFACTS / "report_screenshot.png")
    print(f"screenshot: {shot} (copy: {copy})")
