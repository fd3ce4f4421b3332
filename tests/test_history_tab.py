"""History as a visitor reads it: what each run made (thumbnail + summary), readable settings, a table that
follows a re-run, and Read a PNG showing the dropped file. No server: the tab's functions and its built events."""

from __future__ import annotations

import base64
import io

import gradio as gr
import numpy as np
from PIL import Image

from pipelines.core.records import RunRecord, default_store
from tabs import history


def _decode_thumbnail(cell: str) -> Image.Image:
    assert cell.startswith("![") and "(data:image/jpeg;base64," in cell, cell
    payload = cell.split("base64,", 1)[1].rstrip(")")
    return Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


def _saved_run(tmp_path, params, colour=(30, 160, 220), tab="Storyboard", outputs=None) -> RunRecord:
    image_path = tmp_path / f"{abs(hash(tab))}.png"
    Image.new("RGB", (256, 128), colour).save(image_path)
    record = RunRecord(tab=tab, params=params, outputs=[str(image_path)] if outputs is None else outputs,
                       status="done")
    return default_store().save(record)


def test_each_row_shows_a_thumbnail_of_what_the_run_made_and_says_what_it_was(tmp_path):
    prompts = ["anime style, 1boy, outdoors", "1boy, sitting, on a bench"]
    record = _saved_run(tmp_path, {"prompt": "", "prompts": prompts, "steps": 3,
                                   "storyboard": {"memory_settings": {"enabled": False}}})
    _, rows = history.list_runs(history.ALL)
    row = next(row for row in rows if row[-1] == record.id)
    thumb = _decode_thumbnail(row[0])
    assert max(thumb.size) == history.THUMB_PX and thumb.size[0] == 2 * thumb.size[1]  # the image's own shape
    assert np.abs(np.asarray(thumb, float).mean((0, 1)) - (30, 160, 220)).max() < 6  # its colour, JPEG aside
    assert "anime style, 1boy, outdoors" in row[1] and "on a bench" in row[1] and "1 image" in row[1]
    assert "memory off" in row[1]
    assert dict(zip(history.TABLE_HEADERS, row, strict=True))["Tab"] == "Storyboard"


def test_summaries_name_the_style_the_training_or_the_compared_sets(tmp_path):
    styled = _saved_run(tmp_path, {"style": "tiny:style", "strength": 1.0}, tab="Neural style")
    trained = _saved_run(tmp_path, {"train": {"name": "ark", "steps": 2}}, tab="Style fine-tuning", outputs=[])
    compared = _saved_run(tmp_path, {"set_a": ["a1.png", "a2.png"], "set_b": "5 arrays"}, tab="Metrics / A-B",
                          outputs=[])
    summaries = {row[-1]: (row[0], row[1]) for row in history.list_runs(history.ALL)[1]}
    assert "style tiny:style" in summaries[styled.id][1]
    assert summaries[trained.id] == ("—", "Training · named ark")
    assert "A: 2 files (a1.png, …) vs B: 5 arrays" in summaries[compared.id][1]


def test_settings_are_written_out_not_folded_like_a_json_viewer():
    details = {"tab": "Storyboard", "status": "done", "seed": 7,
               "params": {"prompts": ["a", "b"], "image_size": [512, 768], "memory": {"start": 0.2, "blocks": [1, 2]},
                          "controlnets": [{"model": "lineart", "scale": 0.8}]},
               "outputs": ["/x/0.png", "/x/1.png"], "error": None}
    rows = dict(history.settings_rows(details))
    assert rows["settings › prompts"] == "a; b" and rows["settings › image size"] == "512; 768"
    assert rows["settings › memory › blocks"] == "1; 2" and rows["settings › controlnets 1 › scale"] == "0.8"
    assert rows["seed"] == "7" and rows["error"] == "—" and rows["outputs"] == "/x/0.png; /x/1.png"
    assert not any("Array" in value or "{" in value for value in rows.values())


def _history_blocks() -> tuple[gr.Blocks, dict]:
    with gr.Blocks() as demo:
        history.build(None)
    return demo, demo.get_config_file()


def test_a_rerun_refreshes_the_table_and_read_a_png_shows_the_dropped_image(tmp_path):
    demo, config = _history_blocks()
    components = {block["id"]: block for block in config["components"]}
    dependencies = config["dependencies"]
    rerun = next(index for index, dep in enumerate(dependencies) if dep.get("api_name") == "history_rerun")
    followers = [dep for dep in dependencies if dep.get("trigger_after") == rerun]
    table_ids = {block_id for block_id, block in components.items()
                 if block["type"] == "dataframe" and block["props"].get("label") == "Runs (click a row)"}
    assert any(table_ids & set(dep["outputs"]) for dep in followers), followers

    png_file = next(block_id for block_id, block in components.items()
                    if block["props"].get("label") == "Drop an image with generation parameters")
    shown = [components[out] for dep in dependencies if png_file in [t[0] for t in dep["targets"]]
             for out in dep["outputs"]]
    assert any(block["type"] == "image" for block in shown)
    image_path = tmp_path / "dropped.png"
    Image.new("RGB", (8, 8)).save(image_path)
    assert history.dropped_image(str(image_path)) == str(image_path) and history.dropped_image(None) is None
