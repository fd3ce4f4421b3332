"""Metrics / A-B on its defaults, in Debian chromium: two sets compared without a reference, then with one, each
time getting verdicts with nothing changed but the networks (this machine has no real weights, so the tiny test
networks stand in; the metrics and the pairing stay on their defaults). Without a reference the tab runs the
metrics that need none and says what a reference would add; with one whose file names match, it pairs by name,
says so, and gives SSIM/PSNR verdicts. Numbers read as a person reads them, and the verdict column is on screen
without sideways scrolling.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NO_SIDEWAYS_SCROLL = """() => {
  const scrolling = Array.from(document.querySelectorAll('#mt-table *')).filter((element) => {
    const overflow = getComputedStyle(element).overflowX;
    return ['auto', 'scroll'].includes(overflow) && element.scrollWidth > element.clientWidth + 2;
  });
  return scrolling.length;
}"""


def _pick_tiny(page, elem_id: str, option: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill("tiny")
    page.get_by_role("option", name=option).click()


def _compare(page) -> tuple[str, str]:
    page.locator("#mt-summary").evaluate("element => element.textContent = ''")
    page.locator("#mt-run").click()
    page.locator("#mt-summary").get_by_text("Run ").wait_for()
    return page.locator("#mt-summary").inner_text(), page.locator("#mt-table").inner_text()


def test_two_sets_on_defaults_with_and_without_a_reference_get_verdicts(tmp_path, shared_cache_dir):
    from playwright.sync_api import sync_playwright

    from tests.test_api import _sample_set

    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run tests/run_all.sh, which installs it")
    sets = {label: _sample_set(tmp_path / label, sigma, seed) for label, sigma, seed in
            (("a", 3, 1), ("b", 40, 2), ("r", 0, 0))}  # the same file names in every set: img0 … img3
    with sync_playwright() as playwright, running_app(tmp_path / "outputs", shared_cache_dir,
                                                      env={"HF_HUB_OFFLINE": "1"}) as url:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("tab", name="Metrics / A-B").click()
        for label in ("a", "b"):
            page.locator(f"#mt-files-{label} input[type=file]").set_input_files([str(p) for p in sets[label]])
            page.locator(f"#mt-files-{label}").get_by_text("img3").wait_for()
        page.get_by_text("Options").click()
        _pick_tiny(page, "mt-inception", "Inception — tiny (test, random weights)")
        _pick_tiny(page, "mt-lpips", "LPIPS (tiny test network)")

        summary, table = _compare(page)  # no reference
        assert "No reference set: the metrics that need none were computed" in summary
        assert "A reference set of real images would add" in summary
        assert "Diversity (LPIPS)" in table and "IS" in table
        assert "Not computed" not in summary  # the defaults answer instead of listing what they could not do
        verdicts = page.locator("#mt-table tbody tr td:nth-child(8)").all_inner_texts()
        assert verdicts and all(text.strip() for text in verdicts), verdicts
        assert page.evaluate(NO_SIDEWAYS_SCROLL) == 0
        header = page.locator("#mt-table thead th").nth(7).bounding_box()
        assert header["x"] + header["width"] <= 1280

        page.locator("#mt-files-r input[type=file]").set_input_files([str(p) for p in sets["r"]])
        page.locator("#mt-files-r").get_by_text("img3").wait_for()
        summary, table = _compare(page)  # with a reference whose names match
        assert "Paired with the reference by file name, as the names match" in summary
        rows = {row[0]: row for row in (line.split("\t") for line in table.splitlines()) if row}
        ssim = next(row for name, row in rows.items() if name.strip() == "SSIM")
        assert ssim[5].strip() == "A" and "A is closer to the reference" in summary  # less noise: truly closer
        assert not re.search(r"\de[-+]\d|\d\.\d{5,}", table), table  # no 1e-07, no long decimals
        assert page.evaluate(NO_SIDEWAYS_SCROLL) == 0
        browser.close()
