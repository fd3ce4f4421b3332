"""What every browser test shares: Debian's chromium with its flags for a headless, offline run, and setting a
Gradio number box as a person does (type, then leave the box)."""

from __future__ import annotations

import contextlib
import shutil

from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(str(value))
    box.press("Tab")
    # A slider's range input is bound to the component's state, not to the box: once it shows the value, the
    # next click sends it (on a slow machine a click right after Tab could still carry the old value).
    # Best effort: a few seconds at most (a slider that rounds the value to its step never shows it exactly).
    handle = page.locator(f"#{elem_id} input[type=range]")
    if handle.count():
        with contextlib.suppress(PlaywrightTimeout):
            page.wait_for_function("([selector, wanted]) => Number(document.querySelector(selector).value) === wanted",
                                   arg=[f"#{elem_id} input[type=range]", float(value)], timeout=5000)
