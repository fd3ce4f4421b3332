"""A person's storyboard in Debian chromium: sketches for three panels, a stroke drawn on one, the storyboard drawn
over them; meanwhile a second browser session draws its own storyboard, and neither page shows the other's frames.
Saves the README's storyboard screenshot (tests/support/screenshots.py says when it goes to assets/)."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS, set_number
from tests.support.screenshots import screenshot_path
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
RUN_ID = re.compile(r"run `?([0-9a-f]{12})")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, shared_cache_dir):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run tests/run_all.sh, which installs it")
    with running_app(tmp_path_factory.mktemp("storyboard") / "outputs", shared_cache_dir,
                     env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url



def _prepare(page, url: str, prefix: str, seed: int) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Storyboard").click()
    set_number(page, "sb-count", 3)
    page.locator("#sb-prefix textarea").fill(prefix)
    for index, text in enumerate(("outdoors, standing", "sitting on a bench", "walking in the rain")):
        page.locator(f"#sb-prompt-{index} textarea").fill(text)
    set_number(page, "sb-steps", 2)
    set_number(page, "sb-size", 256)
    page.locator("#sb-seed input").fill(str(seed))


def _read(page) -> tuple[str, list[str]]:
    """The run id in the page's readout and the sources of the frames its gallery shows."""
    readout = page.locator("#sb-readout")
    readout.get_by_text(re.compile(r"3 frames in")).wait_for()
    sources = [image.get_attribute("src") or "" for image in page.locator("#sb-frames img").all()]
    return RUN_ID.search(readout.inner_text()).group(1), sources


def test_sketch_edit_and_draw_a_storyboard_while_another_session_draws_its_own(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    results: dict[str, tuple[str, list[str]]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        first = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        first.set_default_timeout(300_000)
        _prepare(first, app_url, "1boy, red scarf,", 1)
        first.get_by_text("Sketch settings").click()
        set_number(first, "sb-sketch-steps", 2)
        set_number(first, "sb-sketch-size", 256)
        first.locator("#sb-sketch-all").click()
        first.locator("#sb-sketch-status").get_by_text(re.compile("Sketches in")).wait_for()
        # the returned sketch is the editor's only layer: no Layers panel is drawn over it (issue #22)
        assert first.locator("#sb-sketch-0").get_by_text("Layers").count() == 0
        canvas = first.locator("#sb-sketch-1 canvas").first
        box = canvas.bounding_box()
        first.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
        first.mouse.down()
        first.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.5, steps=8)
        first.mouse.up()

        second = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
        second.set_default_timeout(300_000)
        _prepare(second, app_url, "1girl, blue hat,", 2)
        # Both press Draw together; the app runs model work one job at a time, each session gets its own result.
        second.locator("#sb-draw").click()
        first.locator("#sb-draw").click()
        results["second"], results["first"] = _read(second), _read(first)
        first.locator("#sb-frames").scroll_into_view_if_needed()
        first.screenshot(path=str(screenshot_path("screenshot_storyboard.png", tmp_path)))
        browser.close()
    (first_run, first_frames), (second_run, second_frames) = results["first"], results["second"]
    assert first_run != second_run
    for run, frames in ((first_run, first_frames), (second_run, second_frames)):  # each page: its own run's frames
        assert len(frames) == 3 and all(run in source for source in frames), (run, frames)
