"""A person's blind A/B judging in Debian chromium: give two sets at the top of Metrics / A-B, set up the
comparison in the Judge by eye sub-tab, judge ten pairs with the keyboard (with an undo; Left and Right side by
side on a 390 px phone screen), survive a server restart, and, as the owner with the owner key, read the running
verdict, close the voting and read the final one. The page never names a set or a file while judging.

Saves assets/screenshot_judging.png on the way.
"""

from __future__ import annotations

import csv
import io
import os
import re

import numpy as np
import pytest
from PIL import Image

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.screenshots import screenshot_path
from tests.support.server import running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SCREENSHOT = "screenshot_judging.png"  # under assets/ only when refreshing the README's screenshots
PAIRS = 10
SET_NAMES = ("Zanzibar-tuned", "Quokka-base")  # what the user calls A and B: never on the page while judging


def _make_sets(folder):
    """A is blue, B is red (the simulated judge prefers B and tells them apart by looking); names are unusual
    words so that any leak into the page is found."""
    paths = {}
    for label, colour, stem in (("a", (30, 60, 210), "marmalade_tuned"), ("b", (210, 60, 30), "periwinkle_base")):
        (folder / label).mkdir(parents=True)
        paths[label] = []
        for index in range(PAIRS):
            image = np.zeros((96, 96, 3), np.uint8)
            image[...] = colour
            image[30:66, 30:66, 1] = 20 * index  # a square that differs per image
            path = folder / label / f"{stem}_{index:03d}.png"
            Image.fromarray(image).save(path)
            paths[label].append(path)
    return paths


def _secrets(paths) -> list[str]:
    return [*SET_NAMES, "marmalade", "periwinkle", *(path.stem for group in paths.values() for path in group)]


def _browser(playwright):
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian chromium is missing: run tests/run_all.sh, which installs it")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.set_default_timeout(90_000)
    return browser, page


def _open_judging(page, url: str, sub_tab: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Metrics / A-B").click()
    page.get_by_role("tab", name="Judge by eye (blind)").click()
    page.get_by_role("tab", name=sub_tab).click()


def _left_is_b(page) -> bool:
    """Look at the left image as a person would: fetch what the page shows and check its colour."""
    source = page.locator("#jd-left-image img").get_attribute("src")
    assert source and not re.search(r"marmalade|periwinkle|tuned|base", source), source
    with Image.open(io.BytesIO(page.request.get(source).body())) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    return pixels[..., 0].mean() > pixels[..., 2].mean()


def _wait_for_pair(page, number: int) -> None:
    page.locator("#jd-progress").get_by_text(f"Pair {number} of {PAIRS}", exact=True).wait_for()


def _judge(page, first: int, last: int, secrets: list[str], undo_at: int | None = None) -> list[bool]:
    """Answer pairs first..last (1-based) with the keyboard, preferring B; returns where B was shown."""
    sides = []
    for number in range(first, last + 1):
        _wait_for_pair(page, number)
        content = page.content()
        leaked = [word for word in secrets if word.lower() in content.lower()]
        assert not leaked, f"the page names {leaked} while judging"
        left_is_b = _left_is_b(page)
        sides.append(left_is_b)
        if number == undo_at:  # a slip of the finger, taken back
            page.keyboard.press("ArrowRight" if left_is_b else "ArrowLeft")
            _wait_for_pair(page, number + 1)
            page.keyboard.press("u")
            _wait_for_pair(page, number)
            assert "Took back" in page.locator("#jd-status").inner_text()
            assert _left_is_b(page) == left_is_b  # the same pair, on the same sides
        page.keyboard.press("ArrowLeft" if left_is_b else "ArrowRight")
    return sides


def test_judge_ten_pairs_blind_with_the_keyboard_across_a_restart(tmp_path, shared_cache_dir):
    from playwright.sync_api import sync_playwright

    paths = _make_sets(tmp_path / "sets")
    secrets = _secrets(paths)
    outputs = tmp_path / "outputs"
    with sync_playwright() as playwright:
        with running_app(outputs, shared_cache_dir, env={"HF_HUB_OFFLINE": "1"}) as url:
            browser, page = _browser(playwright)
            _open_judging(page, url, "1 · Set up")
            for label in ("a", "b"):  # the sets are given once, above the sub-tabs
                page.locator(f"#mt-files-{label} input[type=file]").set_input_files([str(p) for p in paths[label]])
                page.locator(f"#mt-files-{label}").get_by_text(paths[label][-1].stem).wait_for()
                page.locator(f"#jd-name-{label} textarea").fill(SET_NAMES["ab".index(label)])
            page.locator("#jd-create").click()
            message = page.locator("#jd-setup-message")
            message.get_by_text("Blind comparison ready").wait_for()
            assert f"{PAIRS} pairs" in message.inner_text()
            assert "do not match, so images are paired at random" in message.inner_text()
            comparison = re.search(r"ready: ([0-9a-f]{12})", message.inner_text()).group(1)
            owner_key = re.search(r"Your owner key: ([A-Za-z0-9_-]+)", message.inner_text()).group(1)
            page.get_by_role("tab", name="2 · Judge").click()
            assert page.locator("#jd-comparison textarea").input_value() == comparison
            page.locator("#jd-judge-name textarea").fill("ann")
            page.locator("#jd-start").click()
            sides = _judge(page, 1, 5, secrets, undo_at=3)
            _wait_for_pair(page, 6)
            page.set_viewport_size({"width": 390, "height": 844})  # a phone: Left and Right stay side by side
            left, right = (page.locator(f"#jd-{side}-image").bounding_box() for side in ("left", "right"))
            assert left["x"] + left["width"] <= right["x"] + 1 and abs(left["y"] - right["y"]) < 5, (left, right)
            assert right["x"] + right["width"] <= 390
            page.set_viewport_size({"width": 1280, "height": 1100})
            page.locator("#jd-panel").screenshot(path=str(screenshot_path(SCREENSHOT, tmp_path)))
            session = page.locator("#jd-session textarea").input_value()
            assert re.fullmatch(r"[0-9a-f]{10}", session), session
            _open_judging(page, url, "2 · Judge")  # the page is loaded again: this browser remembers the session
            page.locator("#jd-keyboard").get_by_text(session).wait_for()
            browser.close()  # the browser closes mid-session, and then the server stops
        with running_app(outputs, shared_cache_dir, env={"HF_HUB_OFFLINE": "1"}) as url:
            browser, page = _browser(playwright)
            _open_judging(page, url, "2 · Judge")
            page.locator("#jd-session textarea").fill(session)
            page.locator("#jd-resume").click()
            sides += _judge(page, 6, PAIRS, secrets)
            notice = page.locator("#jd-notice")
            notice.get_by_text("once the comparison's owner closes the voting").wait_for()  # no verdict for a judge
            assert "preferred" not in notice.inner_text()
            assert 0 < sum(sides) < PAIRS  # B was shown on both sides (balance: tests/test_metrics_judging.py)
            page.get_by_role("tab", name="3 · Results").click()
            page.locator("#jd-owner-key input").fill(owner_key)  # the owner, with the key
            page.locator("#jd-show").click()
            verdict = page.locator("#jd-verdict")
            verdict.get_by_text("Running verdict (voting is open").wait_for()
            page.locator("#jd-close").click()
            verdict.get_by_text("is closed").wait_for()
            page.locator("#jd-show").click()
            verdict.get_by_text("Final verdict (voting is closed)").wait_for()
            assert "B (Quokka-base) is preferred" in verdict.inner_text()  # names come back once judging is over
            assert f"B won {PAIRS}, A won 0, 0 ties of {PAIRS} votes" in verdict.inner_text()
            assert "cluster-robust t-test" in verdict.inner_text()
            page.locator("#jd-table").get_by_test_id("cell-0-0").get_by_text("Blind preference (people)").wait_for()
            browser.close()
    with open(outputs / "metrics" / f"{comparison}_judging_votes.csv", newline="") as file:
        votes = list(csv.DictReader(file))
    assert len(votes) == PAIRS and {(vote["choice"], vote["judge"]) for vote in votes} == {("B", "ann")}
