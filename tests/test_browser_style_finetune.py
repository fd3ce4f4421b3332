"""A person's style fine-tuning in Debian chromium: upload four images, prepare the dataset, train two steps of the
default method (embedding, then LoRA) on the tiny SD 1.5, and see the base-versus-tuned grid."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from PIL import Image

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS, set_number
from tests.support.screenshots import screenshot_path
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory, shared_cache_dir):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run tests/run_all.sh, which installs it")
    with running_app(tmp_path_factory.mktemp("style") / "outputs", shared_cache_dir,
                     env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url



def test_upload_train_and_compare_from_the_page(app_url, tmp_path):
    from playwright.sync_api import sync_playwright

    paths = []
    for index in range(4):
        pixels = (np.random.default_rng(index).random((80, 80, 3)) * 255).astype("uint8")
        paths.append(str(tmp_path / f"style{index}.png"))
        Image.fromarray(pixels).save(paths[-1])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 1400}).new_page()
        page.set_default_timeout(300_000)
        page.goto(app_url)
        page.get_by_role("tab", name="Style fine-tuning").click()
        page.locator("#sf-files input[type=file]").set_input_files(paths)
        page.locator("#sf-name textarea, #sf-name input").first.fill("browser_style")
        page.locator("#sf-trigger textarea, #sf-trigger input").first.fill("zqstyle")
        set_number(page, "sf-resolution", 64)
        page.locator("#sf-prepare").click()
        page.locator("#sf-dataset-status").get_by_text(re.compile(r"4 images")).wait_for()
        assert "zqstyle" in page.locator("#sf-captions").inner_text()

        set_number(page, "sf-steps", 2)
        page.locator("#sf-train").click()
        page.locator("#sf-train-status").get_by_text(re.compile(r"2/2 steps, finished")).wait_for()
        assert "test model" in page.locator("#sf-train-status").inner_text()
        assert page.locator("#sf-validation img").count() >= 1

        set_number(page, "sf-count", 2)
        set_number(page, "sf-ab-steps", 2)
        set_number(page, "sf-size", 64)
        page.locator("#sf-compare").click()
        page.locator("#sf-compare-notes").get_by_text(re.compile(r"bottom row: tuned")).wait_for()
        assert page.locator("#sf-grid img").count() == 1
        page.screenshot(path=str(screenshot_path("screenshot_style_finetune.png", tmp_path)), full_page=True)
        browser.close()
