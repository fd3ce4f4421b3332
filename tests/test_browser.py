"""A person's path through the app in Debian chromium: every tab, a stylization, the result on screen.

Takes the README's screenshots on the way, into a temporary folder; they replace assets/screenshot.png and
assets/screenshot_metrics.png only when asked (tests/support/screenshots.py:
ASL_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest -q -m browser), so a test run leaves the work tree clean.
"""

from __future__ import annotations

import os

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.screenshots import screenshot_path
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def outside_log(tmp_path_factory):
    return tmp_path_factory.mktemp("guard") / "outside.log"


@pytest.fixture(scope="module")
def page(tmp_path_factory, shared_cache_dir, outside_log):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run tests/run_all.sh, which installs it")
    from playwright.sync_api import sync_playwright

    folder = tmp_path_factory.mktemp("browser")
    # The app runs under the network guard: page-load events and clicks must not reach outside either.
    with running_app(folder / "outputs", shared_cache_dir, env={"HF_HUB_OFFLINE": "1"},
                     prefix=["tests/support/netguard.py", str(outside_log)]) as url, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                             headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(90_000)
        page.goto(url)
        yield page
        browser.close()


def _open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_visit_every_tab(page):
    from tabs import TABS

    for spec in TABS:
        _open_tab(page, spec.title)
        assert page.get_by_role("tab", name=spec.title).get_attribute("aria-selected") == "true", spec.title
    page.get_by_text("How do AI models make images that look like animation?").wait_for()
    page.get_by_text("Fast neural style transfer", exact=False).first.wait_for()
    _open_tab(page, "History")
    page.get_by_text("Show runs of").wait_for()


def test_stylize_a_bundled_image_and_see_the_result(page, screenshots):
    _open_tab(page, "Neural style")
    style = page.locator("#ns-style input")
    style.click()
    style.fill("tiny")
    page.get_by_role("option", name="tiny (test, random weights)").click()
    page.locator("#ns-samples").click()
    page.locator("#ns-files").get_by_text("chelsea").wait_for()
    page.locator("#ns-run").click()
    page.locator("#ns-gallery img").first.wait_for(state="visible")
    readout = page.locator("#ns-readout")
    readout.get_by_text("images in").wait_for()
    assert "random weights" in readout.inner_text()
    assert page.locator("#ns-gallery img").count() >= 5
    shot = screenshot_path("screenshot.png", screenshots)
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def test_the_session_made_no_outside_connection(page, outside_log):
    page.reload()
    page.get_by_text("Anime Style Lab").first.wait_for()
    assert not outside_log.exists() or outside_log.read_text() == "", outside_log.read_text()


def test_compare_two_small_sets_and_see_table_and_plots(page, tmp_path, screenshots):
    from tests.test_api import _sample_set

    _open_tab(page, "Metrics / A-B")
    for label, (sigma, seed) in {"a": (3, 1), "b": (40, 2), "r": (0, 0)}.items():
        paths = _sample_set(tmp_path / label, sigma, seed)
        page.locator(f"#mt-files-{label} input[type=file]").set_input_files([str(p) for p in paths])
        page.locator(f"#mt-files-{label}").get_by_text("img3").wait_for()
    page.get_by_text("Options").click()
    page.get_by_label("Pair by order").check()
    inception = page.locator("#mt-inception input")
    inception.click()
    inception.fill("tiny")
    page.get_by_role("option", name="Inception — tiny (test, random weights)").click()
    page.locator("#mt-run").click()
    page.locator("#mt-table").get_by_text("SSIM").first.wait_for()
    page.locator("#mt-bars img").wait_for(state="visible")
    page.locator("#mt-scatter img").wait_for(state="visible")
    summary = page.locator("#mt-summary").inner_text()
    assert "not real scores" in summary  # the tiny Inception's numbers are labelled, never shown as real
    page.screenshot(path=str(screenshot_path("screenshot_metrics.png", screenshots)), full_page=True)
