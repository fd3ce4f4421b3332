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
