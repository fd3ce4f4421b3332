"""A person's path through the app in Debian chromium: the Start page they land on (also at phone size) and its
quick example made again with one click, every tab, a stylization on the defaults, the Metrics example, History
listing what was made, the About cards.

Takes the README's screenshots on the way, into a temporary folder; they replace assets/screenshot*.png only when
asked (tests/support/screenshots.py:
ASL_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest -q -m browser), so a test run leaves the work tree clean.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.screenshots import screenshot_path
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def made_runs() -> list[str]:
    """The run ids the page's readouts showed, for History to list."""
    return []


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


def _selected_tab(page) -> str:
    return page.locator("#asl-tabs [role=tab][aria-selected=true]").first.inner_text().strip()


def _example(name: str) -> dict:
    from tabs.start import EXAMPLES_DIR

    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


RUN_ID = re.compile(r"[Rr]un `?([0-9a-f]{12})")
OVERFLOW = """() => ({page: document.documentElement.scrollWidth, body: document.body.scrollWidth,
                     viewport: window.innerWidth})"""


def test_a_visitor_lands_on_the_start_page_with_real_examples(page, screenshots):
    from tabs.start import SD_TABS

    assert _selected_tab(page) == "Start here"
    page.locator("#status-banner").get_by_text("Offline").first.wait_for()  # the screenshot shows what a visitor sees
    start_here = page.locator("#start-here")
    start_here.get_by_text("New here?").wait_for()
    assert start_here.is_visible()
    for name in ("single_image", "landmark_faces", "metrics"):  # the methods that give a real result offline
        image = page.locator(f"#start-image-{name} img")
        image.wait_for(state="visible")
        assert page.evaluate("(img) => img.naturalWidth", image.element_handle()) > 100, name
    for name in SD_TABS:  # no real SD 1.5 here: said plainly, and no example picture
        assert page.locator(f"#start-image-{name}").count() == 0, name
    assert page.get_by_text("none is on this machine").filter(visible=True).count() == len(SD_TABS)
    page.screenshot(path=str(screenshot_path("screenshot_start.png", screenshots)), full_page=True)


def test_the_first_screen_fits_a_phone(page, screenshots):
    phone = page.context.browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                          is_mobile=True, has_touch=True)
    try:
        phone.goto(page.url)
        phone.locator("#status-banner").get_by_text("Offline").first.wait_for()  # the page's last change in height
        start_here = phone.locator("#start-here").get_by_text("New here?")
        start_here.wait_for()
        phone.locator("#start-image-single_image img").wait_for(state="visible")
        phone.screenshot(path=str(screenshot_path("screenshot_start_phone.png", screenshots)))
        widths = phone.evaluate(OVERFLOW)
        assert widths["page"] <= widths["viewport"] and widths["body"] <= widths["viewport"], widths
        box = start_here.bounding_box()  # on the first screen, without scrolling
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["y"] + box["height"] <= 844, box
    finally:
        phone.close()


def test_the_quick_example_is_made_again_with_one_click(page, made_runs):
    example = _example("single_image")
    page.locator("#start-try-single_image").click()
    page.wait_for_function("() => document.querySelector('#asl-tabs [role=tab][aria-selected=true]')"
                           "?.textContent.includes('Single-image variation')")
    status = page.locator("#si-var-status")
    # a few seconds alone on 2 cores; the limit is for a CI machine busy with other work
    status.get_by_text(re.compile(rf"{example['params']['count']} variations in")).wait_for(timeout=240_000)
    assert f"seeds {example['params']['seed']}, " in status.inner_text()  # the example's own settings
    assert page.locator("#si-gallery img").count() >= example["params"]["count"]
    made_runs.append(_run_id(status.inner_text()))


def test_visit_every_tab(page):
    from tabs import TABS

    for spec in TABS:
        _open_tab(page, spec.title)
        assert page.get_by_role("tab", name=spec.title).get_attribute("aria-selected") == "true", spec.title
    page.get_by_text("How do AI models make images that look like animation?").wait_for()
    page.get_by_text("Fast neural style transfer", exact=False).first.wait_for()
    _open_tab(page, "History")
    page.get_by_text("Show runs of").wait_for()


def test_stylize_a_bundled_image_and_see_the_result(page, screenshots, made_runs):
    _open_tab(page, "Neural style")  # on its defaults: offline with no style downloaded, the labelled test style
    page.locator("#ns-samples").click()
    page.locator("#ns-files").get_by_text("chelsea").wait_for()
    page.locator("#ns-run").click()
    page.locator("#ns-gallery img").first.wait_for(state="visible")
    readout = page.locator("#ns-readout")
    readout.get_by_text("images in").wait_for()
    assert "random weights" in readout.inner_text()
    made_runs.append(_run_id(readout.inner_text()))
    assert page.locator("#ns-gallery img").count() >= 5
    page.evaluate("window.scrollTo(0, 0)")  # the taller Start page left the window scrolled
    page.wait_for_function("() => Array.from(document.querySelectorAll('#ns-gallery img'))"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
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


def _run_id(text: str) -> str | None:
    found = RUN_ID.search(text)
    return found.group(1) if found else None


def test_the_metrics_example_is_made_again_from_the_start_page(page, made_runs):
    summary = page.locator("#mt-summary")
    before = _run_id(summary.inner_text()) if summary.count() else None
    _open_tab(page, "Start here")
    page.locator("#start-try-metrics").click()
    page.wait_for_function("""before => {
        const found = /[Rr]un `?([0-9a-f]{12})/.exec(document.querySelector('#mt-summary')?.innerText || '');
        return found && found[1] !== before; }""", arg=before)  # this comparison's own summary
    made_runs.append(_run_id(summary.inner_text()))
    # set A has a little noise and B a lot: A is truly closer to the reference, as the example's card says
    assert "A is closer to the reference than B on SSIM" in summary.inner_text()
    assert "A is closer to the reference than B on PSNR" in summary.inner_text()
    assert "Not computed" not in summary.inner_text()
    assert any("A is closer to the reference than B on SSIM" in line for line in _example("metrics")["verdicts"])


def test_history_lists_what_each_tab_made(page, made_runs):
    assert len(made_runs) >= 3, made_runs  # variations, a stylization, a comparison
    _open_tab(page, "History")
    for run_id in made_runs:  # (the readouts in the tabs now hidden hold the ids too)
        page.get_by_text(run_id).filter(visible=True).first.wait_for()


def test_about_has_a_card_per_method(page):
    from tabs.about import method_cards

    _open_tab(page, "About")
    for card in method_cards():
        page.get_by_text(card.name, exact=False).first.wait_for(state="visible")
