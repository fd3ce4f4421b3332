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
