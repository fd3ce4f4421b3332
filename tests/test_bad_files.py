"""Broken and unusual files sent to every file and image input of every tab, in-process and through a server.

The corpus (tests/support/bad_files.py): an empty file, text named .png, a truncated PNG, a PNG whose header
claims 20000×20000, a 1×1 image, a zip slip, a zip bomb, a pickle renamed .safetensors, and three unusual but
valid images (CMYK JPEG, 16-bit PNG, palette PNG). Every bad file must be answered with a message that names
the file and the problem; no valid image may be refused as unreadable; the server keeps serving after each.
The inputs are found in the built app, so a tab added later is covered without touching this file.
"""

from __future__ import annotations

import re
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
SMALL_WORK = {"/on_generate_controlnet": {"steps": 1, "size": 64}}


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
    for api_name, params in sorted(endpoints.items()):
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
