"""Storyboard stages on the tiny SD 1.5 pipeline and tiny ControlNet: sketches, lines, frames, outputs, runs."""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines.core.errors import UserError
from pipelines.storyboard.request import LineSettings, MemorySettings, SketchRequest, StoryboardRequest, check
from pipelines.storyboard.sketches import clean_lines, control_image, generate_sketches, reordered

PROMPTS = ("1boy, outdoors,", "1boy, outdoors, sitting, on a bench", "1boy, outdoors, sitting, on a bench, rain")


def drawing(size: int = 64) -> Image.Image:
    """A pencil drawing on paper with uneven lighting: a grey stroke on a light gradient."""
    gradient = np.tile(np.linspace(200, 255, size, dtype=np.uint8), (size, 1))
    image = Image.fromarray(np.stack([gradient] * 3, axis=-1))
    ImageDraw.Draw(image).line((8, 32, 56, 32), fill=(120, 120, 120), width=2)
    return image


def test_adaptive_lines_keep_the_stroke_and_drop_the_paper_shading() -> None:
    lines = np.asarray(clean_lines(drawing()).convert("L"))
    assert set(np.unique(lines)) <= {0, 255}
    assert (lines[31:34, 12:52] == 0).mean() > 0.5  # the stroke is black
    assert (lines[5:20, :] == 255).all() and (lines[45:60, :] == 255).all()  # the shaded paper is white


def test_canny_lines_and_what_each_controlnet_sees_match_opencv() -> None:
    import cv2

    image = drawing()
    grey = np.asarray(image.convert("L"))
    canny = np.asarray(clean_lines(image, LineSettings(method="canny", canny_low=50, canny_high=150)).convert("L"))
    assert np.array_equal(canny == 0, cv2.Canny(grey, 50, 150) > 0)
    sketch = clean_lines(image)
    assert np.array_equal(np.asarray(control_image(sketch, "anime line art").convert("L")),
                          255 - np.asarray(sketch.convert("L")))
    assert np.array_equal(np.asarray(control_image(sketch, "canny").convert("L")),
                          cv2.Canny(np.asarray(sketch.convert("L")), 100, 200))


def test_sketches_per_panel_and_regenerating_one_panel() -> None:
    request = SketchRequest(prompts=PROMPTS, seed=5, steps=2, width=64, height=64)
    progress: list = []
    all_panels = generate_sketches(request, callback=lambda done, total, text: progress.append((done, total, text)))
    assert all_panels.seeds == [5, 6, 7] and len(all_panels.sketches) == 3 and all_panels.test_model
    # progress over all three sketches (3 × 2 steps), rising, naming the sketch
    assert [done for done, _, _ in progress] == [1, 2, 3, 4, 5, 6] and {total for _, total, _ in progress} == {6}
    assert progress[-1][2] == "Sketch 3 of 3, step 2/2"
    again = generate_sketches(request, panels=[1])
    assert again.panels == [1] and np.array_equal(np.asarray(again.sketches[0]), np.asarray(all_panels.sketches[1]))
    assert set(np.unique(np.asarray(all_panels.sketches[0].convert("L")))) <= {0, 255}
    assert reordered(["a", "b", "c"], [2, 0, 1]) == ["c", "a", "b"]
    with pytest.raises(UserError, match="each panel"):
        reordered(["a", "b"], [0, 0])


def board(**changes) -> StoryboardRequest:
    sketch = clean_lines(drawing())
    base = StoryboardRequest(prompts=PROMPTS, sketches=(sketch, sketch, sketch), control="tiny:controlnet",
                             steps=4, width=64, height=64, seed=3, sampler="Euler", cfg_scale=6.0,
                             memory=MemorySettings(start_layer=1, start_step_of_50=10))
    return dataclasses.replace(base, **changes)


def test_a_panel_without_a_sketch_is_drawn_from_its_text_alone() -> None:
    """With the memory off, panel 2 without a sketch equals its prompt and seed generated with no ControlNet."""
    from pipelines.diffusion.generate import GenerateRequest, generate
    from pipelines.storyboard.generate import generate_storyboard

    request = board(memory=MemorySettings(enabled=False))
    request = dataclasses.replace(request, sketches=(request.sketches[0], None, request.sketches[2]))
    output = generate_storyboard(request)
    assert any("Panel 2 has no sketch" in note for note in output.notes)
    alone = generate(GenerateRequest(prompt=request.panel_prompts()[1], negative_prompt=request.negative_prompt,
                                     steps=4, width=64, height=64, seed=4, sampler="Euler", schedule="Automatic",
                                     cfg_scale=6.0, clip_skip=2))
    assert np.abs(np.asarray(output.frames[1], np.int16) - np.asarray(alone.images[0], np.int16)).max() <= 1
    with_sketch = generate_storyboard(dataclasses.replace(request, sketches=board().sketches))
    assert not np.array_equal(np.asarray(with_sketch.frames[1]), np.asarray(output.frames[1]))


def test_memory_on_and_off_share_the_first_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the memory on, the storyboard's call really reaches the memory attention: the third panel's
    self-attention reads panels 1 and 2 from the scaled start block and step on, and panel 1 is unchanged."""
    from pipelines.storyboard import memory as memory_module
    from pipelines.storyboard.generate import generate_storyboard

    made: list = []

    class TracedMemory(memory_module.FrameMemory):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.trace = []
            made.append(self)

    monkeypatch.setattr(memory_module, "FrameMemory", TracedMemory)
    on, off = generate_storyboard(board()), generate_storyboard(board(memory=MemorySettings(enabled=False)))
    assert on.memory_on and not off.memory_on and len(made) == 1
    third = {(entry[1], entry[3]) for entry in made[0].trace if entry[2] == 2}
    assert third and all(step >= made[0].start_step and frames == (0, 1) for step, frames in third)
    assert np.abs(np.asarray(on.frames[0], np.int16) - np.asarray(off.frames[0], np.int16)).max() <= 1
    assert on.seconds_per_frame > 0 and on.peak_memory_mb > 0


def test_memory_acts_even_when_auto_picks_another_preset_between_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" decides from free GPU memory at each load; here it answers "none", then "low", then "none", ... .
    The memory must still act on the pipeline that draws the frames (issue #22)."""
    import itertools

    from pipelines.core import loader
    from pipelines.storyboard import memory as memory_module
    from pipelines.storyboard.generate import generate_storyboard

    made: list = []

    class CountedMemory(memory_module.FrameMemory):
        def __post_init__(self) -> None:
            super().__post_init__()
            made.append(self)

    presets = itertools.cycle(["none", "low"])
    monkeypatch.setattr(loader, "choose_memory_preset", lambda device: next(presets))
    monkeypatch.setattr(memory_module, "FrameMemory", CountedMemory)
    output = generate_storyboard(board())
    assert output.memory_on and len(made) == 1 and made[0].attended > 0


def test_frames_without_the_memory_they_asked_for_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the memory processors were not on the pipeline that drew the frames, the call fails loudly."""
    import contextlib

    from pipelines.storyboard import memory as memory_module
    from pipelines.storyboard.generate import generate_storyboard

    monkeypatch.setattr(memory_module, "frame_attention", lambda unet: contextlib.nullcontext())
    with pytest.raises(RuntimeError, match="memory attention did not act"):
        generate_storyboard(board(steps=2))


def test_the_text_only_panel_hook_leaves_other_threads_calls_alone() -> None:
    """The ControlNet is shared by every base pipeline (cached per source) while each pipeline has its own lock:
    a call through another pipeline, in another thread, must get the ControlNet's plain output."""
    import threading

    import torch

    from pipelines.storyboard.generate import _text_only_panels

    class Residuals(torch.nn.Module):  # a ControlNet's output shape: (down residuals, mid residual)
        def forward(self, sample):
            return [sample, sample * 2], sample * 3

    controlnet, sample = Residuals(), torch.ones(4, 2, 3, 3)  # [uncond 2 frames | cond 2 frames]
    seen: dict = {}
    with _text_only_panels(controlnet, [1], frames=2):
        ours = controlnet(sample)
        other = threading.Thread(target=lambda: seen.setdefault("other", controlnet(sample)))
        other.start()
        other.join()
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(-1, 1, 1, 1)  # panel 2 zeroed in both CFG halves
    assert torch.equal(ours[1], sample * 3 * mask) and torch.equal(ours[0][1], sample * 2 * mask)
    assert torch.equal(seen["other"][1], sample * 3) and torch.equal(seen["other"][0][0], sample)


def test_a_recorded_storyboard_saves_every_output_and_reruns_to_the_same_frames() -> None:
    from pipelines.core.records import default_store
    from pipelines.core.runs import rerun
    from pipelines.storyboard import TAB
    from pipelines.storyboard.runs import run_storyboard

    record, output = run_storyboard(board())
    assert record.tab == TAB and record.status == "done"
    from pathlib import Path

    suffixes = sorted(Path(path).name.removeprefix(record.id) for path in record.outputs)
    assert suffixes == [".gif", "_00.png", "_01.png", "_02.png", "_grid.png", "_page.pdf", "_page.png", "_strip.png"]
    with Image.open(next(path for path in record.outputs if path.endswith(".gif"))) as gif:
        assert gif.n_frames == 3
    with Image.open(record.outputs[1]) as frame:
        assert PROMPTS[1] in frame.text["parameters"]
    again = rerun(record.id, default_store())
    with Image.open(record.outputs[2]) as first, Image.open(again.outputs[2]) as second:
        assert np.array_equal(np.asarray(first), np.asarray(second))


def test_out_of_memory_falls_back_to_smaller_chunks_with_the_same_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device that fits one frame at a time: the storyboard is drawn in chunks (3 → 2 → 1 frames per call),
    the memory carried over through the bank, one run recorded, and the frames match the lockstep ones. A panel
    without a sketch stays text-only in its chunk."""
    core = importlib.import_module("pipelines.diffusion.generate")  # the module (the package exports the function)
    from pipelines.storyboard.runs import run_storyboard

    request = dataclasses.replace(board(), sketches=(board().sketches[0], None, board().sketches[2]))
    _, lockstep = run_storyboard(request)
    real_generate, batches = core.generate, []

    def one_frame_fits(core_request, **kwargs):
        batches.append(core_request.batch_size)
        if core_request.batch_size > 1:
            raise core.DeviceOutOfMemory("out of memory")
        return real_generate(core_request, **kwargs)

    monkeypatch.setattr(core, "generate", one_frame_fits)
    record, chunked = run_storyboard(request)
    assert batches == [3, 2, 1, 1, 1]
    assert any("drawn 1 at a time" in note for note in chunked.notes)
    pngs = [path for path in record.outputs if path.endswith(".png")]
    assert record.status == "done" and len(pngs) == 6  # 3 frames, strip, grid, page
    for frame, (ours, theirs) in enumerate(zip(chunked.frames, lockstep.frames, strict=True)):
        difference = np.abs(np.asarray(ours, np.int16) - np.asarray(theirs, np.int16)).max()
        assert difference <= 1, f"frame {frame + 1} differs by {difference}"
    monkeypatch.setattr(core, "generate", lambda *args, **kwargs: (_ for _ in ()).throw(
        core.DeviceOutOfMemory("The device ran out of memory; set Memory to 'low'")))
    with pytest.raises(UserError, match="Memory to 'low'"):
        run_storyboard(request)


def test_the_character_line_and_each_panel_prompt_are_kept_apart() -> None:
    from pipelines.storyboard.request import with_prefix

    assert board(prefix="anime style", prompts=("she wakes up",), sketches=()).panel_prompts() == (
        "anime style, she wakes up",)
    assert with_prefix("1boy, red scarf,", "sitting") == "1boy, red scarf, sitting"
    assert with_prefix("", " sitting ") == "sitting" and with_prefix("1boy", "") == "1boy"


@pytest.mark.parametrize(("change", "words"), [
    ({"prompts": ("a",) * 9, "sketches": ()}, "1 to 8 panels"),
    ({"prompts": ("a", " "), "sketches": ()}, "Panel 2 has no prompt"),
    ({"sketches": (None,)}, "1 sketches for 3 panels"),
    ({"memory": MemorySettings(scope="sometimes")}, "memory scope"),
    ({"width": 100}, "multiple of 8"),
])
def test_bad_storyboards_get_plain_messages(change: dict, words: str) -> None:
    assert any(words in problem for problem in check(board(**change)))


def test_ab_compare_reports_consistency_through_the_metrics_pipeline_and_the_sweep_grid() -> None:
    from pipelines.storyboard.compare import ab_compare, consistency_report, sweep

    result = ab_compare(board())  # test-model frames: scored by the test CLIP and DINO, labelled so
    rows = {row.key: row for row in result.report.rows}
    assert set(rows) == {"clip_i", "dino_i", "clip_score"} and all(row.test_model for row in rows.values())
    assert rows["clip_i"].paired and rows["dino_i"].paired  # each later panel against the first
    real = consistency_report(result.memory_on, result.memory_off, models={"clip": "tiny:clip"}, n_bootstrap=100)
    assert "needs model DINOv2" in real.skipped["dino_i"]  # the real DINO is not on this machine: said, not faked
    assert result.memory_on.memory_on and not result.memory_off.memory_on
    swept = sweep(board(), layers=[0, 3], steps_of_50=[10])
    width, height = 64 * 3 + 2 * 4, 64  # a strip of three panels per cell
    assert swept.image.size == (2 * width + 24 + 16, height + 16)
    assert len(swept.strips) == 1 and len(swept.strips[0]) == 2


def test_a_multi_user_server_refuses_an_unoffered_controlnet_even_without_sketches(monkeypatch) -> None:
    request = StoryboardRequest(prompts=("a cat",), control="/etc")
    monkeypatch.setenv("ASL_MULTI_USER", "0")
    assert check(request) == []  # single user: any folder, as before
    monkeypatch.setenv("ASL_MULTI_USER", "1")
    assert any("'/etc' is not a model this server offers" in problem for problem in check(request))
    assert check(dataclasses.replace(request, control="canny")) == []  # a catalog ControlNet
