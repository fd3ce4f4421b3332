"""Broken and unusual files sent to every file and image input of every tab, in-process and through a server.

The corpus (tests/support/bad_files.py): an empty file, text named .png, a truncated PNG, a PNG whose header
claims 20000×20000, a 1×1 image, a zip slip, a zip bomb, a pickle renamed .safetensors, a PNG whose compressed
text chunk inflates past Pillow's limit (a metadata bomb), JSON nested 100,000 deep, a landmark JSON whose width
is "abc", a zip of only unusable images and labels, and three unusual but valid images (CMYK JPEG, 16-bit PNG,
palette PNG). Every bad file must be answered with a message that names the file and the problem; no valid image
may be refused as unreadable; the server keeps serving after each. The inputs are found in the built app, so a
tab added later is covered without touching this file.

The in-process tests below also hold each kind to what it must do beyond its message: file sets skip such a
file and name it, nothing a refused upload held stays on disk, paths a client types are never read while folder
inputs are off, and the values a client sets (names, LoRA weights, intervals, landmark fields) stay in bounds.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import time
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pytest
from gradio.data_classes import FileData
from gradio_client import Client, handle_file
from PIL import Image

from tabs.common import CHECKED_INPUT, file_input, image_input
from tests.support.bad_files import CORPUS, NOT_AN_IMAGE, good_image, write_corpus
from tests.support.server import running_app
from tests.support.stream_client import StreamSession

IMAGE_PROBLEM = re.compile(r"not an image we can read|damaged or incomplete|too large to open safely|"
                           r"it must be at least|megapixels", re.IGNORECASE)
FILE_COMPONENTS = {"Image", "File", "Imageeditor"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def _file_data(path: Path) -> FileData:
    return FileData(path=str(path), orig_name=path.name)


# ---------------------------------------------------------------------------------------------- in-process
def test_every_image_input_of_every_tab_is_checked_before_gradio_opens_it():
    """gr.Image and gr.ImageEditor open files in Gradio's own preprocessing, before any handler: each one used
    as an event input must be built by tabs.common (image_input / image_editor_input)."""
    import app

    demo = app.build_app()
    unchecked = [(fn.api_name or fn.name, block.label) for fn in demo.fns.values() for block in fn.inputs
                 if isinstance(block, (gr.Image, gr.ImageEditor)) and not getattr(block, CHECKED_INPUT, False)]
    assert not unchecked, f"image inputs not built with tabs.common: {unchecked}"


@pytest.mark.parametrize("kind", ["numpy", "pil", "filepath"])
def test_an_image_input_answers_each_bad_file_in_words_and_converts_the_unusual_ones(corpus, kind):
    component = image_input("Style image", type=kind)
    for entry in CORPUS:
        path = corpus[entry.name]
        if entry.valid_image:
            value = component.preprocess(_file_data(path))
            array = np.asarray(value if kind != "filepath" else Image.open(value))
            assert array.shape[:2] == (40, 48), entry.name
            if kind != "filepath":
                assert np.asarray(value).dtype == np.uint8 and np.asarray(value).shape[2] == 3
            continue
        with pytest.raises(gr.Error) as caught:
            component.preprocess(_file_data(path))
        message = caught.value.message
        assert entry.name in message and IMAGE_PROBLEM.search(message), (entry.name, message)


def test_a_file_input_refuses_other_types_by_name(corpus):
    weights = file_input("Style weights", ("safetensors",))
    with pytest.raises(gr.Error, match=r"notes_named.png: this input takes .safetensors files, not .png"):
        weights.preprocess(_file_data(corpus["notes_named.png"]))
    assert weights.preprocess(_file_data(corpus["pickle.safetensors"])).endswith("pickle.safetensors")


def test_a_png_metadata_bomb_gets_the_core_message_and_is_skipped_and_named_in_file_sets(corpus, tmp_path):
    from pipelines.core.images import ImageInputError, load_image
    from pipelines.metrics.imagesets import load_image_set
    from pipelines.style_finetune.data import read_images

    bomb, good = corpus["text_bomb.png"], good_image(tmp_path)
    with pytest.raises(ValueError, match="Decompressed data too large"):  # what Pillow itself does with it
        Image.open(bomb)
    with pytest.raises(ImageInputError, match=r"text_bomb.png is too large to open safely"):
        load_image(bomb)
    image_set = load_image_set([str(bomb), str(good)], "A")
    assert image_set.names == ["good"] and any("text_bomb.png" in note for note in image_set.skipped)
    found, notes = read_images([str(bomb), str(good)])
    assert [name for name, _ in found] == ["good.png"] and any("text_bomb.png" in note for note in notes)


def test_user_json_is_bounded_in_size_and_depth(corpus, tmp_path):
    import json

    from pipelines.landmark_faces import landmarks as L

    with pytest.raises(RecursionError):  # the reference: Python's own reader fails on this file
        json.loads(corpus["deep_nesting.json"].read_bytes())
    with pytest.raises(L.LandmarkError, match=r"deep_nesting.json nests lists or objects 100000 levels deep"):
        L.load_json(corpus["deep_nesting.json"])
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"points": [[0.5, 0.5]] * 24, "notes": "x" * 2_000_000}))
    with pytest.raises(L.LandmarkError, match=r"big.json is 2.0 MB; a JSON file here may be at most 1 MB"):
        L.load_json(big)
    with pytest.raises(L.LandmarkError, match=r"levels deep"):
        L.from_json(corpus["deep_nesting.json"].read_bytes())
    brackets_in_strings = json.dumps({"points": [[0.5, 0.5]] * 24, "note": "[" * 1000})
    assert L.from_json(brackets_in_strings).shape == (24, 2)  # brackets inside strings are not nesting


def _landmark_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _face_png_and_json(points_scale: float = 1.0) -> tuple[bytes, bytes]:
    import io

    from pipelines.landmark_faces import landmarks as L
    from pipelines.landmark_faces import synthetic

    face = synthetic.make_faces(1, 32, seed=3)[0]
    buffer = io.BytesIO()
    Image.fromarray(face.image).save(buffer, format="PNG")
    payload = json.loads(L.to_json(face.points, tags=list(face.tags)))
    payload["points"] = {name: [x * points_scale, y * points_scale] for name, (x, y) in payload["points"].items()}
    return buffer.getvalue(), json.dumps({**payload, "width": 1, "height": 1}).encode()


def test_a_refused_landmark_training_zip_leaves_nothing_unpacked(corpus, tmp_path):
    from pipelines.core import settings
    from pipelines.core.errors import UserError
    from pipelines.landmark_faces.runs import run_train
    from pipelines.landmark_faces.train import TrainConfig

    config = TrainConfig(name="mine", image_size=32, width=8, steps=2, batch_size=2, precision="fp32")
    data = settings.outputs_dir() / "landmark_faces" / "data"
    with pytest.raises(UserError) as caught:  # a pickle named .json, a 60000×60000 header, a text bomb, deep JSON
        run_train(config, zip_path=str(corpus["bad_labels.zip"]))
    message = str(caught.value)
    assert all(name in message for name in ("bad_labels.zip", "face.png", "face.json", "deep.json")), message
    assert not (data / "mine").exists() and not [p for p in data.rglob("*") if p.is_file()]
    # Files that unpack cleanly but are refused by the training (points outside the image): removed as well.
    png, outside = _face_png_and_json(points_scale=3.0)
    with pytest.raises(UserError, match="outside the image"):
        run_train(config, zip_path=str(_landmark_zip(tmp_path / "outside.zip", {"a.png": png, "a.json": outside})))
    assert not (data / "mine").exists()


def test_unpacking_keeps_only_files_that_read_and_a_failed_job_removes_what_it_unpacked(corpus, tmp_path):
    from pipelines.core import settings
    from pipelines.core.archives import extract_images
    from pipelines.neural_style import run_train_style

    good = good_image(tmp_path).read_bytes()
    bundle = _landmark_zip(tmp_path / "mixed.zip", {"ok.png": good, "ok.json": b'{"tags": []}',
                                                      "pickle.json": pickle.dumps([1]),
                                                      "huge.png": (corpus["huge_header.png"]).read_bytes(),
                                                      "bomb.png": corpus["text_bomb.png"].read_bytes()})
    paths, skipped = extract_images(bundle, tmp_path / "out", extra_suffixes=(".json",))
    assert sorted(path.name for path in paths) == ["ok.json", "ok.png"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["ok.json", "ok.png"]
    assert [note.split(" ")[0] for note in skipped] == ["pickle.json", "huge.png", "bomb.png"], skipped

    only_bad = _landmark_zip(tmp_path / "content.zip", {"huge.png": corpus["huge_header.png"].read_bytes()})
    with pytest.raises(Exception, match="content.zip holds no images"):
        run_train_style(str(corpus["cmyk.jpg"]), [str(only_bad)], name="mystyle", steps=1)
    assert not list((settings.outputs_dir() / "training" / "mystyle").glob("content-*"))


@pytest.mark.parametrize("path", ["/etc/passwd", "/no/such/file.png", "{good}", "{folder}"])
def test_with_folder_inputs_off_no_path_a_client_types_is_read(tmp_path, monkeypatch, path):
    """The Metrics and judging folder field: the same answer for an existing file, a folder, an image never
    uploaded and nothing at all, and nothing is read."""
    from pipelines.metrics.imagesets import load_image_set
    from tabs.metrics import set_sources

    good = good_image(tmp_path / "never-uploaded")
    path = path.format(good=good, folder=good.parent)
    monkeypatch.delenv("ASL_ALLOW_FOLDER_INPUTS", raising=False)
    with pytest.raises(ValueError) as caught:
        load_image_set(set_sources([str(good_image(tmp_path, "upload.png"))], None, path), "A")
    assert str(caught.value) == ("Paths on the server are switched off here (the host can enable them with "
                                 "ASL_ALLOW_FOLDER_INPUTS); upload the images or a zip instead.")
    if path == str(good):  # the host switched them on: the same field reads it
        monkeypatch.setenv("ASL_ALLOW_FOLDER_INPUTS", "1")
        assert load_image_set(set_sources(None, None, path), "A").names == ["good"]


# ---------------------------------------------------------------------------------------------- bad values
def test_a_trained_style_name_cannot_reach_another_folder(tmp_path):
    from pipelines.core import settings
    from pipelines.core.errors import UserError
    from pipelines.style_finetune.apply import INFO_FILE, load_tuned

    planted = settings.outputs_dir() / "export" / INFO_FILE  # what "../" from training/<name> would reach
    planted.parent.mkdir(parents=True)
    planted.write_text(json.dumps({"name": "x", "method": "lora", "trigger": "x", "base_model": "/etc"}))
    (settings.outputs_dir() / "training").mkdir()
    with pytest.raises(UserError, match="name must be 1–60 letters"):
        load_tuned("..")


@pytest.mark.parametrize("weight", ["1000", "-5", "nan", "inf"])
def test_a_lora_tag_in_the_prompt_has_the_same_weight_limit_as_a_requested_lora(weight):
    from pipelines.diffusion.generate import GenerateRequest, check

    assert any("weight" in problem for problem in check(GenerateRequest(prompt="x", loras=(("style", 1000.0),))))
    problems = check(GenerateRequest(prompt=f"a girl <lora:style:{weight}>"))
    assert any(f"<lora:style:{weight}>" in problem and "between -4 and 4" in problem for problem in problems), problems
    assert check(GenerateRequest(prompt="a girl <lora:style:0.8>")) == []


def test_checkpoint_and_validation_intervals_are_bounded():
    from pipelines.style_finetune.config import TrainConfig, check

    def problems(**values):
        return [p for p in check(TrainConfig(**values)) if "every" in p]

    assert any("Checkpoint every must be 0 (every 10% of the steps) or 50–20000" in p
               for p in problems(steps=3000, checkpoint_every=1))
    assert any("Validation every must be 0 (only at the end) or 25–20000" in p
               for p in problems(steps=3000, validation_every=5))
    assert problems(steps=3000, checkpoint_every=50, validation_every=25) == []
    assert problems(steps=6, checkpoint_every=2, validation_every=1) == []  # 5% of a short run
    assert problems(steps=3000, checkpoint_every=-1)


@pytest.mark.parametrize(("payload", "expected"), [
    ({"width": "abc", "height": 512}, r'"width" must be the image width in pixels, a number above 0 .*got "abc"'),
    ({"width": 512, "height": [1]}, r'"height" must be the image height in pixels.*got a list'),
    ({"width": 0, "height": 512}, r'"width" must be .*got 0'),
    ({"points": "all of them"}, r'"points" must be a list of 24 \[x, y\] pairs or an object.*got "all of them"'),
    ({"points": [[0.5, 0.5]] * 23 + [["a", 0.5]]}, r'point 24 \(chin\) must be \[x, y\], two numbers.*got a list'),
    ({"points": [[0.5, 0.5]] * 23 + [True]}, r"point 24 \(chin\) must be \[x, y\].*got true"),
])
def test_each_wrong_landmark_field_is_named_with_what_it_takes(payload, expected):
    from pipelines.landmark_faces import landmarks as L

    document = {"points": [[100, 100]] * 24, **payload}
    with pytest.raises(L.LandmarkError, match=expected):
        L.from_json(json.dumps(document))


def test_landmark_training_labels_name_a_wrong_tags_field(tmp_path):
    from pipelines.landmark_faces.train import folder_data

    png, label = _face_png_and_json()
    (tmp_path / "a.png").write_bytes(png)
    (tmp_path / "a.json").write_text(json.dumps({**json.loads(label), "tags": 5}))
    with pytest.raises(Exception, match=r'a.json: "tags" must be a list of words or one comma-separated string'):
        folder_data(tmp_path, 32)


# ---------------------------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_cache_dir):
    folder = tmp_path_factory.mktemp("bad-files")
    with running_app(folder / "outputs", shared_cache_dir, env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url


def _serving(url: str) -> bool:
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        return response.status == 200


def _endpoints(client: Client) -> dict[str, list[dict[str, Any]]]:
    """Named endpoints with at least one file or image parameter."""
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    return {name: spec["parameters"] for name, spec in info.items()
            if any(param["component"] in FILE_COMPONENTS for param in spec["parameters"])}


def _value(param: dict[str, Any], path: Path | None) -> Any:
    component = param["component"]
    if path is None:
        return None
    if component == "Imageeditor":
        return {"background": handle_file(str(path)), "layers": [], "composite": handle_file(str(path))}
    if component == "File" and "array" in str(param.get("type", {}).get("type", "")):
        return [handle_file(str(path))]
    return handle_file(str(path))


def _input_components(url: str) -> dict[str, list[tuple[int, list[str] | None]]]:
    """Per endpoint, each API parameter's component id and the file types it accepts (None: any), from the app's
    config."""
    import json

    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = json.load(response)
    components = {component["id"]: component for component in config["components"]}
    types = {}
    for dependency in config["dependencies"]:
        if dependency.get("api_name"):
            inputs = [components[i] for i in dependency["inputs"] if components[i]["type"] != "state"]
            types[f"/{dependency['api_name']}"] = [(item["id"], item.get("props", {}).get("file_types"))
                                                   for item in inputs]
    return types


# Settings that keep an endpoint's work small where its defaults would generate at full size: this test checks
# how files are answered, not generation (a 512 px ControlNet + IP-Adapter image took ~20 s per file).
SMALL_WORK = {"/on_generate_controlnet": {"steps": 1, "size": 64},
              "/single_image_ablation": {"variants": ["baseline"], "steps": 50, "count": 2},
              "/single_image_gpnn": {"count": 1, "iterations": 1}}
# An input several endpoints share is checked once, through the first of them in this order (then by name): the
# single-image upload through one GPNN variation (no training) rather than the ablation, which trains and scores
# (~60 s a file).
CHECKED_FIRST = ("/single_image_gpnn",)


def _baseline(params: list[dict[str, Any]], inputs: list, good: dict[str, Path],
              api_name: str = "") -> dict[str, Any]:
    """Valid values for every parameter but the one under test: defaults, a good image (or a zip of one) for file
    inputs that take it, nothing for sketches; SMALL_WORK's values for the endpoints it names."""
    values = {}
    for param, (_, types) in zip(params, inputs, strict=True):
        name, component = param["parameter_name"], param["component"]
        if component in ("Image", "File"):
            accepted = [kind.lower() for kind in types or [".png", ".zip"]]
            sample = good["image"] if ".png" in accepted or "image" in accepted else \
                good["zip"] if ".zip" in accepted else None
            values[name] = _value(param, sample)
        elif component in FILE_COMPONENTS:
            values[name] = None
        elif param["parameter_has_default"]:
            values[name] = param["parameter_default"]
        else:
            values[name] = "tiny:style" if name == "style" else ""
    values.update({key: value for key, value in SMALL_WORK.get(api_name, {}).items() if key in values})
    return values


def _stream_answer(url: str, path: Path) -> str | None:
    """Send one frame to the webcam stream event as the browser does; the error text, or None on success."""
    session = StreamSession(url, "stylize_frame")
    session.start([session.upload(path), "tiny:style", 1.0, False])
    session.wait_first_output(60)
    result = session.close()
    return result.errors[0] if result.errors else None


def test_every_file_input_of_every_tab_answers_bad_files_in_words(server, corpus, tmp_path):
    client = Client(server, verbose=False)
    good = {"image": good_image(tmp_path), "zip": tmp_path / "good.zip"}
    with zipfile.ZipFile(good["zip"], "w") as archive:
        archive.write(good["image"], "photos/good.png")
    endpoints, inputs = _endpoints(client), _input_components(server)
    assert {"/stylize", "/stylize_frame", "/add_style", "/train_style", "/compare", "/read_png"} <= set(endpoints)
    checked, slow, seen = 0, [], set()
    for api_name, params in sorted(endpoints.items(), key=lambda item: (item[0] not in CHECKED_FIRST, item[0])):
        for param, (component_id, _) in zip(params, inputs[api_name], strict=True):
            if param["component"] not in FILE_COMPONENTS or component_id in seen:
                continue  # a component that several endpoints share is checked once
            seen.add(component_id)
            for entry in CORPUS:
                path = corpus[entry.name]
                start = time.monotonic()
                if api_name == "/stylize_frame":  # a streaming event: driven like the browser's webcam
                    error = _stream_answer(server, path)
                else:
                    arguments = {**_baseline(params, inputs[api_name], good, api_name),
                                 param["parameter_name"]: _value(param, path)}
                    try:
                        client.predict(**arguments, api_name=api_name)
                        error = None
                    except Exception as err:  # noqa: BLE001 - the server's answer, whatever its type
                        error = str(err)
                where = f"{api_name} {param['parameter_name']} <- {entry.name}: {error!r}"
                if entry.valid_image:
                    assert error is None or not IMAGE_PROBLEM.search(error), where  # never refused as unreadable
                else:
                    # An image input reads anything as an image; a file input refuses another kind by its name.
                    other_kind = NOT_AN_IMAGE if param["component"] != "File" else "this input takes"
                    problem = f"{entry.problem}|{other_kind}"
                    assert error is not None and entry.name in error and re.search(problem, error), where
                    assert "Something went wrong" not in error and "Traceback" not in error, where
                assert _serving(server), where
                checked += 1
                if time.monotonic() - start > 20:
                    slow.append(where)
    assert checked >= 10 * len(CORPUS), checked
    print(f"{checked} answers from {len(seen)} inputs checked; slow ones: {slow}")


def test_metrics_and_judging_never_read_a_server_path_while_folder_inputs_are_off(server, tmp_path):
    """/compare and /judge_create, as an API client calls them: the folder field gets one answer for a file that
    exists, an image never uploaded and a path that does not exist; nothing is scored or copied."""
    client = Client(server, verbose=False)
    good = {"image": good_image(tmp_path), "zip": tmp_path / "good.zip"}
    never_uploaded = good_image(tmp_path / "server-side", "secret.png")
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    inputs = _input_components(server)
    for api_name in ("/compare", "/judge_create"):
        params = info[api_name]["parameters"]
        answers = {}
        for path in ("/etc/passwd", str(never_uploaded), "/no/such/file.png"):
            arguments = {**_baseline(params, inputs[api_name], good, api_name), "folder_a": path}
            with pytest.raises(Exception) as caught:  # noqa: PT011 - the server's answer, whatever its type
                client.predict(**arguments, api_name=api_name)
            answers[path] = str(caught.value)
        assert len(set(answers.values())) == 1, (api_name, answers)
        assert "Paths on the server are switched off here" in answers["/etc/passwd"], answers


def test_deep_json_in_a_weights_header_is_refused_in_words(tmp_path):
    from pipelines.core import safeweights

    header = b"[" * 5000 + b"]" * 5000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(safeweights.UnsafeWeightsError, match="deep.safetensors is not a safetensors file"):
        safeweights.check_safetensors(path)
