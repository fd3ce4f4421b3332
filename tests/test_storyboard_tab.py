"""The Storyboard tab's handlers with the tiny models: sketches into the editors, reorder, frames, A/B, errors."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from tabs import storyboard as tab

PROMPTS = ("1boy, outdoors,", "1boy, outdoors, sitting, on a bench")
SKETCH_SETTINGS = (2, "", "tiny:sd15", 3, 2, 64, "adaptive", 15, 8, 100, 200)  # count … size … canny high


def padded(values: list) -> list:
    return values + [None if not isinstance(values[0], str) else ""] * (tab.MAX_PANELS - len(values))


def settings(**changes) -> list:
    values = dict(count=2, prefix="anime style, ", negative="lowres", model="tiny:sd15", control="tiny:controlnet",
                  scale=1.0, steps=3, cfg=6.0, seed=1, size=128, memory_on=True, start_layer=1, start_step=10,
                  scope="all", ratio=1.0)
    values.update(changes)
    return list(values.values())


def test_sketches_fill_the_editors_and_a_redraw_touches_only_its_panel() -> None:
    outputs = tab.draw_sketches(*SKETCH_SETTINGS, 0, *padded(list(PROMPTS)))
    sketches, status = outputs[:tab.MAX_PANELS], outputs[-1]
    assert all(isinstance(image, Image.Image) for image in sketches[:2]) and "random weights" in status
    assert sketches[0].size == (64, 64)  # the sketch size setting
    redrawn = tab.draw_sketches(*SKETCH_SETTINGS, 2, *padded(list(PROMPTS)))
    assert isinstance(redrawn[1], Image.Image) and not isinstance(redrawn[0], Image.Image)  # panel 1 kept
    assert np.array_equal(np.asarray(redrawn[1]), np.asarray(sketches[1]))


def test_reorder_moves_prompts_and_sketches_together() -> None:
    red, blue = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    moved = tab.reorder_panels("2,1", 2, *padded(list(PROMPTS)), *padded([red, blue]))
    assert moved[:2] == [PROMPTS[1], PROMPTS[0]] and moved[tab.MAX_PANELS] is blue
    with pytest.raises(ValueError, match="panel numbers"):
        tab.reorder_panels("second, first", 2, *padded(list(PROMPTS)), *padded([red, blue]))


def test_the_storyboard_from_edited_sketches_and_the_on_off_comparison() -> None:
    sketch = Image.new("RGB", (256, 256), "white")
    editor = {"background": sketch, "layers": [], "composite": sketch}  # what gr.ImageEditor hands over
    frames, strip, files, readout = tab.draw_storyboard(*settings(), *padded(list(PROMPTS)), *padded([editor, None]))
    assert len(frames) == 2 and strip.endswith("_strip.png") and len(files) == 3
    assert "Panel 2 has no sketch" in readout and "random weights" in readout
    from pipelines.core.records import default_store

    before = {record.id for record in default_store().list(tab="Storyboard")}
    off, on, rows, notes = tab.compare_on_off(*settings(), *padded(list(PROMPTS)), *padded([editor, editor]))
    assert len(off) == len(on) == 2 and {row[0] for row in rows} >= {"CLIP-I"} and "Panel 1" in notes
    # both storyboards of the comparison are in History, memory on and off
    added = [record for record in default_store().list(tab="Storyboard") if record.id not in before]
    assert sorted(record.params["storyboard"]["memory_settings"]["enabled"] for record in added) == [False, True]


def test_bad_storyboards_are_answered_in_words() -> None:
    with pytest.raises(gr.Error, match="Panel 2 has no prompt"):
        tab.friendly_errors(tab.draw_storyboard)(*settings(), *padded(["a girl", " "]), *padded([None, None]))
    with pytest.raises(gr.Error, match="Layers L to try"):
        tab.friendly_errors(tab.sweep_grid)("0,99", "10", *settings(), *padded(list(PROMPTS)), *padded([None, None]))
    # not numbers at all: the field and what it takes, not Python's "invalid literal for int()"
    for blocks, steps, field in (("a,b", "10", "Layers L to try"), ("0,4", "x", "Steps S to try")):
        with pytest.raises(gr.Error, match=f"{field}: .* is not a list of numbers; list 1 to 6 whole numbers") as err:
            tab.friendly_errors(tab.sweep_grid)(blocks, steps, *settings(), *padded(list(PROMPTS)),
                                                *padded([None, None]))
        assert "invalid literal" not in str(err.value)


def _new_records(before: set[str]) -> list:
    from pipelines.core.records import default_store

    return [record for record in default_store().list(tab="Storyboard") if record.id not in before]


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_sketches_and_the_sweep_are_in_history_and_rerun_to_the_same_images() -> None:
    """History lists every Storyboard run: the drawn sketches (each PNG the sketch the editor got) and the L × S
    sweep (its grid); a re-run of either from its record draws the same pixels (same seeds, same settings)."""
    from pipelines.core import runs

    outputs = tab.draw_sketches(*SKETCH_SETTINGS, 0, *padded(list(PROMPTS)))
    (sketches,) = _new_records(set())
    assert sketches.params["kind"] == "sketches" and sketches.status == "done" and len(sketches.outputs) == 2
    from tabs.history import run_summary

    summary = run_summary(sketches)  # History's row: what it was, its prompts, what it made
    assert summary.startswith("Sketches · “1boy, outdoors,”") and summary.endswith("→ 2 images")
    for path, shown in zip(sketches.outputs, outputs[:2], strict=True):
        assert np.array_equal(_pixels(path), np.asarray(shown.convert("RGB")))
    again = runs.rerun(sketches.id)
    assert again.id != sketches.id and np.array_equal(_pixels(again.outputs[1]), _pixels(sketches.outputs[1]))

    before = {record.id for record in _new_records(set())}
    sketch = Image.new("RGB", (64, 64), "white")
    grid, note = tab.sweep_grid("0", "10", *settings(size=64, steps=2), *padded(list(PROMPTS)), *padded([sketch, None]))
    (sweep,) = _new_records(before)
    assert sweep.params["kind"] == "sweep" and sweep.params["layers"] == [0] and len(sweep.outputs) == 1
    assert sweep.id in note and "layers L 0" in note
    assert run_summary(sweep).startswith("L × S sweep") and run_summary(sweep).endswith("→ 1 image")
    assert np.array_equal(_pixels(sweep.outputs[0]), np.asarray(grid.convert("RGB")))
    assert np.array_equal(_pixels(runs.rerun(sweep.id).outputs[0]), np.asarray(grid.convert("RGB")))
