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


VERDICT_HEADER_RIGHT = """() => {
  const cells = Array.from(document.querySelectorAll('#mt-table th, #mt-table [role=columnheader]'));
  const verdict = cells.find((cell) => cell.textContent.trim().startsWith('Verdict'));
  return verdict ? verdict.getBoundingClientRect().right : -1;
}"""


def _pick_tiny(page, elem_id: str) -> None:
    box = page.locator(f"#{elem_id} input")
    box.click()
    box.fill("tiny")
    page.get_by_role("option", name=re.compile(r"tiny \(test, random weights\)")).first.click()


def _compare(page, done_when: str) -> tuple[str, str]:
    page.locator("#mt-run").click()
    page.locator("#mt-summary").get_by_text(done_when).first.wait_for()
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
        _pick_tiny(page, "mt-inception")
        _pick_tiny(page, "mt-lpips")

        summary, table = _compare(page, "No reference set")
        assert "No reference set: the metrics that need none were computed" in summary
        assert "A reference set of real images would add" in summary
        assert "Diversity (LPIPS)" in table and "IS" in table
        assert "Not computed" not in summary  # the defaults answer instead of listing what they could not do
        for name in ("Diversity (LPIPS)", "IS"):  # a verdict on each (labelled: test networks are not real scores)
            assert re.search(rf"(is better than|No clear difference on) [AB]? ?(on )?{re.escape(name)}", summary), name
        verdicts = page.locator("#mt-table td").filter(has_text="the 95% interval").all_inner_texts()
        assert verdicts, "no verdict in the table"
        assert page.evaluate(NO_SIDEWAYS_SCROLL) == 0
        verdict_header = page.evaluate(VERDICT_HEADER_RIGHT)
        assert 0 < verdict_header <= 1280, verdict_header

        page.locator("#mt-files-r input[type=file]").set_input_files([str(p) for p in sets["r"]])
        page.locator("#mt-files-r").get_by_text("img3").wait_for()
        summary, table = _compare(page, "Paired with the reference")  # its names match
        assert "Paired with the reference by file name, as the names match" in summary
        assert "A is closer to the reference than B on SSIM" in summary  # less noise: truly closer
        assert not re.search(r"\de[-+]\d|\d\.\d{5,}", table), table  # no 1e-07, no long decimals
        assert page.evaluate(NO_SIDEWAYS_SCROLL) == 0
        browser.close()
