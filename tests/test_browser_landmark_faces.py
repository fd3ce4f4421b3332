"""Landmark faces in Debian chromium: move the yaw and mouth sliders (the overlay and the table follow), generate
faces with the seed's U-Net (the shipped model, else the tiny one) and with the tiny SD 1.5 + ControlNet."""

from __future__ import annotations

import os
import re

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.screenshots import screenshot_path
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, shared_cache_dir):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run tests/run_all.sh, which installs it")
    with running_app(tmp_path_factory.mktemp("landmark_faces") / "outputs", shared_cache_dir,
                     env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url


def _set_slider(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")



def test_sliders_set_landmarks_and_both_models_draw_faces(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
        page.set_default_timeout(180_000)
        page.goto(app_url)
        page.get_by_role("tab", name="Landmark faces").click()
        overlay = page.locator("#lf-overlay img").first
        overlay.wait_for()
        before = overlay.get_attribute("src")
        _set_slider(page, "lf-yaw", 30)
        _set_slider(page, "lf-mouth_open", 0.9)
        page.wait_for_function(
            "before => { const i = document.querySelector('#lf-overlay img'); return i && i.src !== before; }",
            arg=before)
        _set_slider(page, "lf-steps", 5)
        page.locator("#lf-generate").click()
        notes = page.locator("#lf-notes")
        notes.get_by_text(re.compile(r"face\(s\) in")).wait_for()
        assert page.locator("#lf-gallery img").count() >= 1
        page.screenshot(path=str(screenshot_path("screenshot_landmark_faces.png", tmp_path)), full_page=True)

        page.get_by_role("tab", name="ControlNet (SD 1.5)").click()
        _set_slider(page, "lf-sd-steps", 2)
        _set_slider(page, "lf-sd-size", 64)
        page.locator("#lf-sd-generate").click()
        page.locator("#lf-sd-notes").get_by_text(re.compile(r"test model")).wait_for()
        assert page.locator("#lf-sd-gallery img").count() >= 1
        browser.close()
