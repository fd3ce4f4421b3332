"""The tab's handlers without a browser: plain messages for missing input, the full-UNet hint, memory presets, and
captions edited in the table reaching the dataset."""

from __future__ import annotations

import gradio as gr
import pandas as pd
import pytest

from tabs import style_finetune as tab


def test_missing_input_and_bad_names_get_plain_messages():
    with pytest.raises(gr.Error, match="Upload 3–200 images"):
        tab.prepare_dataset(None, "my_style", "zqstyle", 64, False, "")
    with pytest.raises(gr.Error, match="name must be"):
        tab.prepare_dataset(["a.png"], "bad name/..", "zqstyle", 64, False, "")
    with pytest.raises(gr.Error, match="Choose a trained style"):
        tab.compare_models("", "", "", 1.0, 0, 1, 2, 64)


def test_full_unet_hint_and_memory_presets():
    assert "24 GB" in tab.method_hint("full") and tab.method_hint("lora") == ""
    assert tab.memory_preset("8 GB") == ("fp16", True, True)
    assert tab.memory_preset("24 GB or more") == ("auto", False, False)


def test_captions_come_from_the_edited_table():
    table = pd.DataFrame({"image": ["a.png", "b.png", ""], "caption": ["zq, one", "two", "ignored"]})
    assert tab._captions_from_table(table) == ["zq, one", "two"]
    assert tab._captions_from_table(None) is None


def test_the_tab_builds_with_its_api_names():
    with gr.Blocks() as demo, gr.Tab("Style fine-tuning") as page:
        tab.build(page)
    names = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert {"style_prepare", "style_train", "style_cancel", "style_compare", "style_evaluate"} <= names


def test_the_loss_curve_after_one_step_shows_its_point_and_whole_axis_titles():
    """After one step the curve is a visible dot (a line chart drew an empty frame), and the axis titles lie
    inside the picture (the chart used to clip "step")."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for losses in ([0.1234], [0.3, 0.2, 0.25]):
        figure = tab.loss_figure(losses)
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
        orange = np.abs(pixels - [0xDD, 0x84, 0x52]).sum(axis=-1) < 60  # the curve's colour
        assert orange.sum() >= 10, losses
        axes = figure.axes[0]
        box = figure.bbox
        for label in (axes.xaxis.label, axes.yaxis.label, axes._left_title):  # the title names the plot inside it
            extent = label.get_window_extent(canvas.get_renderer())
            assert label.get_text() and box.x0 <= extent.x0 and extent.x1 <= box.x1
            assert box.y0 <= extent.y0 and extent.y1 <= box.y1
        assert all(float(tick).is_integer() for tick in axes.get_xticks())
