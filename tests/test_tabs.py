"""Tab functions without a server: webcam frames, error messages, the banner, ZeroGPU decoration."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import gradio as gr
import numpy as np
import pytest

from pipelines.core.images import ImageInputError
from pipelines.core.jobs import JobCancelled
from tabs import common
from tabs import neural_style as tab


def test_live_webcam_frame_is_stylized_at_frame_size():
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    out = tab.live_frame(frame, "tiny:style", 1.0, False)
    assert out.size == (160, 120)
    assert not np.array_equal(np.asarray(out), frame)
    assert np.array_equal(np.asarray(tab.live_frame(frame, "tiny:style", 0.0, False)), frame)  # strength 0
    assert tab.live_frame(None, "tiny:style", 1.0, False) is None


def test_large_webcam_frames_are_capped_for_real_time():
    frame = np.zeros((720, 1280, 3), np.uint8)
    assert max(tab.live_frame(frame, "tiny:style", 1.0, False).size) == tab.LIVE_MAX_SIZE


def test_user_errors_become_plain_gradio_errors():
    def bad_image():
        raise ImageInputError("cat.txt is not an image we can read")

    with pytest.raises(gr.Error, match="cat.txt is not an image"):
        common.friendly_errors(bad_image)()


def test_every_pipeline_user_error_reaches_the_page_as_written():
    from pipelines.core.archives import ArchiveError
    from pipelines.core.errors import UserError
    from pipelines.core.loader import ModelLoadError
    from pipelines.core.safeweights import UnsafeWeightsError
    from pipelines.neural_style.styles import StyleUnavailableError
    from pipelines.neural_style.train import StyleTrainingUnavailable

    for error in (ArchiveError, ModelLoadError, UnsafeWeightsError, StyleUnavailableError, StyleTrainingUnavailable):
        assert issubclass(error, UserError)
        assert common.user_message(error("plain words for the user")) == "plain words for the user"
    assert "Something went wrong (RuntimeError: internal)" in common.user_message(RuntimeError("internal"))


def test_library_errors_that_subclass_value_error_are_still_logged(caplog):
    import numpy as np

    def diverged():
        raise np.linalg.LinAlgError("SVD did not converge")

    with caplog.at_level("ERROR"), pytest.raises(gr.Error, match="SVD did not converge"):
        common.friendly_errors(diverged)()
    assert "Unexpected error in diverged" in caplog.text
    caplog.clear()

    def bad_input():
        raise ImageInputError("not an image")

    with caplog.at_level("ERROR"), pytest.raises(gr.Error):
        common.friendly_errors(bad_input)()
    assert "Unexpected error" not in caplog.text


def test_unexpected_errors_are_summarised_not_dumped():
    def crash():
        raise ZeroDivisionError("division by zero")

    with pytest.raises(gr.Error) as caught:
        common.friendly_errors(crash)()
    assert "still running" in str(caught.value) and "Traceback" not in str(caught.value)


def test_cancel_says_work_is_kept_and_generators_are_wrapped():
    def cancelled_generator():
        yield 1
        raise JobCancelled("Cancelled by the user.")

    wrapped = common.friendly_errors(cancelled_generator)
    with pytest.raises(gr.Error, match="Work done so far is kept"):
        list(wrapped())


def test_stylize_without_files_asks_for_an_image():
    with pytest.raises(ValueError, match="Add at least one image"):
        tab.stylize_files([], "tiny:style", 1.0, False, 256)


def test_offline_banner_names_missing_styles_and_default_is_the_test_style(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    banner = common.status_banner_markdown()
    assert "Offline" in banner and "rain_princess" in banner and "not downloaded" in banner
    assert tab._default_style() == "tiny:style"


def test_gpu_task_uses_spaces_when_installed(monkeypatch):
    from pipelines.core.gpu import gpu_task

    calls = []
    fake = types.ModuleType("spaces")
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)

    def gpu(fn=None, duration=None):
        if fn is None:
            return lambda handler: (calls.append(("duration", duration)), handler)[1]
        calls.append(("plain", None))
        return fn

    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    gpu_task(lambda: None)
    gpu_task(duration=600)(lambda: None)
    assert calls == [("plain", None), ("duration", 600)]


def test_style_names_from_the_browser_cannot_be_server_paths(tmp_path):
    path = tmp_path / "secret.safetensors"
    path.write_bytes(b"anything")
    with pytest.raises(ValueError, match="Unknown style"):
        tab.stylize_files([str(tmp_path / "x.png")], str(path), 1.0, False, 256)
    with pytest.raises(ValueError, match="Unknown style"):
        tab.live_frame(np.zeros((32, 32, 3), np.uint8), "/etc/passwd", 1.0, False)


def test_model_events_share_one_queue_slot_and_the_webcam_has_its_own():
    import app

    demo = app.build_app()
    model_events = {"stylize", "train_style", "history_rerun"}
    slots = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()
             if fn.api_name in model_events | {"stylize_frame"}}
    assert {slots[name] for name in model_events} == {("model", 1)}
    # a stream holds its slot for its whole time limit: never the model slot (see tabs.common.LIVE_WORK)
    assert slots["stylize_frame"] == ("live", common.LIVE_STREAMS)


def test_cancel_reaches_only_the_sessions_own_job():
    from pipelines.core.jobs import JOBS

    page, other = types.SimpleNamespace(session_hash="page-a"), types.SimpleNamespace(session_hash="page-b")
    job_id, token = JOBS.start(tab._job_id("stylize", page))
    try:
        assert tab.cancel_stylize(other) == "Nothing is running." and not token.cancelled
        assert tab.cancel_training(page) == "Nothing is running." and not token.cancelled  # another kind of job
        assert tab.cancel_stylize(page).startswith("Cancelling") and token.cancelled
        newer_id, newer = JOBS.start(job_id)  # the same page's next run
        JOBS.finish(job_id, token)  # the old run finishing late does not forget the newer one
        assert JOBS.get(job_id) is newer
    finally:
        JOBS.finish(job_id)


def _banner_parts(banner: str) -> tuple[str, str]:
    """(the one line shown closed, the details behind the click) of the status banner's <details> element."""
    import re

    match = re.fullmatch(r"<details[^>]*><summary>(.*?)</summary>(.*)</details>", banner, re.S)
    assert match, banner
    return match.group(1), match.group(2)


def test_offline_banner_is_one_plain_line_with_the_developer_facts_behind_a_click(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    summary, details = _banner_parts(common.status_banner_markdown())
    assert "\n" not in summary and len(summary) < 160, summary
    assert "offline" in summary.lower() and "noise" in summary
    for developer_fact in ("HF_HUB_OFFLINE", "rain_princess", "Salesforce/", "**"):
        assert developer_fact not in summary
    assert "HF_HUB_OFFLINE=1" in details and "rain_princess" in details


def test_bold_text_uses_one_font_file_that_has_every_letter():
    """Gradio's bundled Source Sans Pro SemiBold holds only "A" and "B": bold text mixed two fonts. The app's
    theme must name only font files that hold the whole alphabet (read from the files themselves)."""
    ttlib = pytest.importorskip("fontTools.ttLib")
    from gradio.themes.utils import fonts

    theme = common.app_theme()
    local = [font for font in [*theme._font, *theme._font_mono] if isinstance(font, fonts.LocalFont)]
    assert local
    letters = {ord(c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"}
    for font in local:
        for weight in font.weights:
            path = fonts.font_file_path(font.name, weight)
            missing = letters - set(ttlib.TTFont(str(path)).getBestCmap())
            assert not missing, f"{path.name} lacks {''.join(sorted(map(chr, missing)))}"
    default_semibold = fonts.font_file_path("Source Sans Pro", 600)  # the glitch this guards against
    assert letters - set(ttlib.TTFont(str(default_semibold)).getBestCmap())


def test_offline_the_pretrained_styles_do_not_promise_a_download(monkeypatch):
    from pipelines.neural_style import list_styles

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pretrained = [entry for entry in list_styles() if entry.kind == "pretrained"]
    assert len(pretrained) == 11 and not any(entry.available for entry in pretrained)
    for entry in pretrained:
        assert "downloads on first use" not in entry.label and "cannot be downloaded" in entry.label
    assert "cannot be downloaded" in tab.style_note("rain_princess")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    from pipelines.core import network

    network.forget_probes()  # online state unknown (never probed): a download is still possible
    assert all("downloads on first use" in entry.label for entry in list_styles() if entry.kind == "pretrained")


def test_a_style_that_cannot_load_leaves_the_earlier_results_in_place(monkeypatch, tmp_path):
    """Gradio paints an event's error over every output that shows its progress, hiding the images made before:
    Stylize shows progress and errors on its readout only, and a refused style changes no output (it raises)."""
    from PIL import Image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with gr.Blocks() as demo:
        tab.build(None)
    config = demo.get_config_file()
    components = {block["id"]: block for block in config["components"]}
    stylize = next(dep for dep in config["dependencies"] if dep.get("api_name") == "stylize")
    gallery, readout = stylize["outputs"]
    assert components[gallery]["type"] == "gallery" and components[readout]["type"] == "markdown"
    assert stylize["show_progress_on"] == [readout]
    photo = tmp_path / "photo.png"
    Image.new("RGB", (32, 24), (200, 120, 40)).save(photo)
    with pytest.raises(gr.Error, match="rain_princess.*not downloaded"):
        common.friendly_errors(tab.stylize_files)([str(photo)], "rain_princess", 1.0, False, 64)
    images, note = common.friendly_errors(tab.stylize_files)([str(photo)], "tiny:style", 1.0, False, 64)
    assert len(images) == 1 and "1 image" in note  # a good pick still works


def test_a_warning_about_the_visitors_work_stays_on_the_banners_line(monkeypatch):
    from pipelines.core import settings

    monkeypatch.setenv("ASL_MULTI_USER", "1")
    monkeypatch.setenv("SPACE_ID", "someone/anime-style-lab")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(settings, "persistent_storage", lambda: None)
    from pipelines.core import owners

    with owners.acting_as(owners.Owner("browser", "abc123")):
        summary, details = _banner_parts(common.status_banner_markdown())
    assert "results vanish when it restarts" in summary and "\n" not in summary
    assert "private to" in details and "private to" not in summary  # the privacy note waits behind the click


RESULT_TYPES = {"gallery", "image", "dataframe", "plot", "lineplot", "scatterplot", "barplot", "file", "imageeditor",
                "model3d", "video"}
TEXT_TYPES = {"markdown", "textbox", "json", "html"}
# Outputs that describe a new input (a PNG just dropped): a refused file must not leave the last file's readings
# beside it, so its error rightly covers them.
NEW_INPUT_EVENTS = {"read_png"}


def test_no_failed_run_covers_the_results_made_before(monkeypatch):
    """Every model-running event (and every event whose outputs mix earlier results with a line of text) shows
    its progress and errors on that one line only: Gradio paints its error state over every output that shows
    progress, and a failed pick must leave the images, tables and plots made before in view."""
    import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = app.build_app().get_config_file()
    kinds = {block["id"]: block["type"] for block in config["components"]}
    checked, uncovered = [], []
    for dep in config["dependencies"]:
        outputs = dep["outputs"]
        results = [out for out in outputs if kinds.get(out) in RESULT_TYPES]
        texts = [out for out in outputs if kinds.get(out) in TEXT_TYPES]
        if (not dep.get("api_name") or dep["api_visibility"] == "private" or dep["api_name"] in NEW_INPUT_EVENTS
                or not results or not texts or len(outputs) < 2):
            continue  # a single result, or no line to speak on: nothing else to cover
        checked.append(dep["api_name"])
        spots = dep.get("show_progress_on") or []
        if not (len(spots) == 1 and spots[0] in texts):
            uncovered.append(dep["api_name"])
    assert not uncovered, f"errors would cover the results of {uncovered}"
    for name in ("style_prepare", "style_train", "style_compare", "style_evaluate", "storyboard", "storyboard_ab",
                 "storyboard_sketches", "single_image_variations", "single_image_edit", "compare", "stylize",
                 "history_rerun", "generate_from_png", "single_image_ablation", "judge_results", "on_photo",
                 "storyboard_sweep"):
        assert name in checked
