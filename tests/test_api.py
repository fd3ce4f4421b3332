"""The app's endpoints through gradio_client against a launched app (offline, tiny test style)."""

from __future__ import annotations

import pickle
import re
import time
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.core.pngmeta import read_png_metadata
from tests.support.server import ROOT, running_app

pytestmark = pytest.mark.slow
SAMPLE = ROOT / "assets" / "samples" / "chelsea.jpg"


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_cache_dir):
    """(base URL, outputs folder) of a launched app."""
    folder = tmp_path_factory.mktemp("api")
    with running_app(folder / "outputs", shared_cache_dir, env={"HF_HUB_OFFLINE": "1"}) as url:
        yield url, folder / "outputs"


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


def _stylize(client: Client, files: list[Path], style: str = "tiny:style", strength: float = 1.0):
    return client.predict([handle_file(str(path)) for path in files], style, strength, False, 256,
                          api_name="/stylize")


def _gallery_paths(gallery) -> list[Path]:
    return [Path(item["image"] if isinstance(item["image"], str) else item["image"]["path"]) for item in gallery]


def test_stylize_returns_png_with_metadata_and_labels_test_model(client):
    gallery, readout = _stylize(client, [SAMPLE, ROOT / "assets" / "samples" / "coffee.jpg"])
    paths = _gallery_paths(gallery)
    assert len(paths) == 2
    with Image.open(paths[0]) as image:
        assert max(image.size) == 256
    assert read_png_metadata(paths[0])["settings"]["Style"] == "tiny:style"
    assert "random weights" in readout and "2 images" in readout


def test_bad_inputs_get_messages_and_the_app_keeps_serving(client, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(Exception, match="not an image|damaged"):
        _stylize(client, [broken])
    with pytest.raises(Exception, match="Unknown style|unknown style"):
        _stylize(client, [SAMPLE], style="no_such_style")
    with pytest.raises(Exception, match="Add at least one image"):
        client.predict([], "tiny:style", 1.0, False, 256, api_name="/stylize")
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weight": [1, 2]}))
    with pytest.raises(Exception, match="not a safetensors file"):
        client.predict(handle_file(str(evil)), "evil", api_name="/add_style")
    gallery, _ = _stylize(client, [SAMPLE])  # still serving
    assert len(_gallery_paths(gallery)) == 1


def test_history_lists_shows_and_reruns(client):
    gallery, _ = _stylize(client, [SAMPLE], strength=0.5)
    output = _gallery_paths(gallery)[0]
    run_id = read_png_metadata(output)["settings"]["Run"]
    _, table = client.predict("Neural style", api_name="/history_list")
    rows = table["data"] if isinstance(table, dict) else table
    assert run_id in [row[-1] for row in rows]
    details = client.predict(run_id, api_name="/history_show")
    assert details["params"]["strength"] == 0.5 and details["status"] == "done"
    rerun_gallery, new_id = client.predict(run_id, api_name="/history_rerun")
    assert new_id != run_id
    rerun_output = _gallery_paths(rerun_gallery)[0]
    with Image.open(output) as first, Image.open(rerun_output) as again:
        assert first.tobytes() == again.tobytes()  # same settings, same deterministic network


def test_training_offline_says_why_instead_of_faking_a_style(client):
    """Without ImageNet VGG16 weights a trained 'style' would be meaningless: the app refuses plainly."""
    style_image = handle_file(str(ROOT / "assets" / "samples" / "style_cel_ink.png"))
    with pytest.raises(Exception, match="ImageNet VGG16 weights"):
        client.predict(style_image, None, "offline_try", 20, 64, 1e5, 1e10, "imagenet", api_name="/train_style")
    _, table = client.predict("Neural style", api_name="/history_list")
    rows = table["data"] if isinstance(table, dict) else table
    failed = client.predict(rows[0][-1], api_name="/history_show")  # newest first: the refused training
    assert failed["params"]["name"] == "offline_try" and failed["status"] == "failed"
    assert "ImageNet VGG16" in failed["error"]


def _wait_for_progress(job, at_least: int, timeout: float = 120) -> int:
    """Poll a submitted job until its progress bar has reached `at_least` steps; the step reached."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        units = job.status().progress_data or []
        if units and units[-1].index is not None and units[-1].index >= at_least:
            return int(units[-1].index)
        if job.done():
            raise AssertionError(f"the job ended before reaching step {at_least}: {job.result()}")
        time.sleep(0.05)
    raise AssertionError(f"no progress to step {at_least} within {timeout} s")


def test_a_running_multi_image_stylize_is_cancelled_through_the_server(client):
    photos = [handle_file(str(SAMPLE))] * 24
    job = client.submit(photos, "tiny:style", 1.0, False, 1024, api_name="/stylize")
    _wait_for_progress(job, 1)
    assert client.predict(api_name="/cancel_stylize").startswith("Cancelling")
    with pytest.raises(Exception, match=r"Stylizing cancelled after (\d+) of 24 images") as caught:
        job.result(timeout=120)
    done = int(re.search(r"after (\d+) of 24", str(caught.value)).group(1))
    run_id = re.search(r"run (\w+)", str(caught.value)).group(1)
    record = client.predict(run_id, api_name="/history_show")
    assert record["status"] == "cancelled" and record["params"]["cancelled_after"] == done
    assert 1 <= done < 24 and len(record["outputs"]) == done  # the finished images are kept
    assert client.predict(api_name="/cancel_stylize") == "Nothing is running."


def test_a_running_training_is_cancelled_and_its_checkpoint_loads(server, client):
    from pipelines.core.loader import model_info
    from pipelines.neural_style import load_style
    from pipelines.neural_style.train import read_checkpoint

    url, outputs = server
    style_image = handle_file(str(ROOT / "assets" / "samples" / "style_cel_ink.png"))
    job = client.submit(style_image, None, "cancel_me", 2000, 64, 1e5, 1e10, "random", api_name="/train_style")
    _wait_for_progress(job, 2)
    assert client.predict(api_name="/cancel_training").startswith("Cancelling")
    with pytest.raises(Exception, match=r"Training cancelled by the user at step (\d+) of 2000") as caught:
        job.result(timeout=120)
    step = int(re.search(r"at step (\d+)", str(caught.value)).group(1))
    _, table = client.predict("Neural style", api_name="/history_list")
    rows = table["data"] if isinstance(table, dict) else table
    record = client.predict(rows[0][-1], api_name="/history_show")
    assert record["params"]["name"] == "cancel_me" and record["status"] == "cancelled"
    state = read_checkpoint(outputs / "training" / "cancel_me" / "checkpoints")
    assert state["step"] == step >= 2 and len(state["losses"]) == step
    model = load_style(outputs / "training" / "cancel_me" / "checkpoints" / state["model"])  # it loads
    assert model_info(model).test_model  # trained against a random VGG16: marked as a test model
    with torch.inference_mode():
        assert tuple(model(torch.rand(1, 3, 40, 56)).shape) == (1, 3, 40, 56)


def test_an_open_webcam_stream_does_not_hold_up_another_clients_stylize(server):
    """The stream event is driven through the server as the browser drives it; another client's Stylize,
    submitted while it streams, finishes while the stream is still open instead of waiting for it to end (which
    it did when the stream held the model slot: bench/bench_live.py measured 21 s for a 1.4 s job behind a 20 s
    stream). The order of events is asserted, not a time bound, so a loaded machine cannot fail it; the figures
    are printed, and bench/bench_live.py measures them."""
    from tests.support.stream_client import measure_live

    photos = sorted((ROOT / "assets" / "samples").glob("*.jpg"))[:4]
    stream_seconds = 60  # the stream stays open this long unless the other Stylize ends first
    figures = measure_live(server[0], SAMPLE, photos, stream_seconds=stream_seconds)
    assert figures.finished_while_streaming, figures
    assert figures.frames >= 1, figures  # the stream really was running beside it
    print(f"stylize alone {figures.stylize_alone:.2f} s, during the stream {figures.stylize_during:.2f} s, "
          f"frame {figures.frame_seconds * 1000:.0f} ms: {figures.extra_frames:.1f} frame times extra")


def _sample_set(folder: Path, sigma: float, seed: int) -> list[Path]:
    """Four 64 px crops of the bundled photos, with Gaussian noise of `sigma` (0 = the originals)."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, name in enumerate(("astronaut", "chelsea", "coffee", "horse")):
        with Image.open(ROOT / "assets" / "samples" / f"{name}.jpg") as photo:
            crop = np.asarray(photo.convert("RGB"))[40:104, 40:104].astype(float)
        noisy = np.clip(crop + rng.normal(0, sigma, crop.shape), 0, 255).astype(np.uint8) if sigma else crop
        path = folder / f"img{index}.png"
        Image.fromarray(noisy.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def test_compare_endpoint_gives_verdicts_skips_missing_models_and_is_recorded(client, tmp_path):
    a, b, ref = (_sample_set(tmp_path / name, sigma, seed) for name, sigma, seed in
                 (("a", 3, 1), ("b", 40, 2), ("ref", 0, 0)))
    files = lambda paths: [handle_file(str(path)) for path in paths]  # noqa: E731
    summary, table, bars, scatter, per_image, downloads = client.predict(
        files(a), [], "", files(b), [], "", files(ref), "", "", "Pair by order", ["ssim", "psnr", "fid", "nima"],
        "fid-inception", "tiny:clip", "tiny:lpips", "", "tiny:dino", 200, 0, api_name="/compare")
    rows = {row[0]: row for row in (table["data"] if isinstance(table, dict) else table)}
    assert rows["SSIM"][5] == "A" and rows["PSNR (dB)"][5] == "A"  # less noise is truly closer
    assert "needs model FID Inception v3" in summary and "FID" not in rows  # offline: skipped, not faked
    assert "needs model NIMA: no NIMA model is configured" in summary and "NIMA" not in rows
    assert bars and Path(bars).exists() and len(downloads) == 3
    run_id = summary.rsplit("Run `", 1)[1].split("`")[0]
    assert client.predict(run_id, api_name="/history_show")["tab"] == "Metrics / A-B"


def test_compare_with_unusable_sets_says_why_and_the_app_keeps_serving(client, tmp_path):
    notes, named_png = tmp_path / "notes.txt", tmp_path / "notes.png"
    notes.write_text("not an image")
    named_png.write_text("not an image either")
    good = _sample_set(tmp_path / "good", 0, 0)
    for path, message in ((notes, "notes.txt: this input takes .png, .jpg"),
                          (named_png, r"Set A has no usable images \(notes.png is not an image we can read")):
        with pytest.raises(Exception, match=message):
            client.predict([handle_file(str(path))], [], "", [handle_file(str(p)) for p in good], [], "", [], "",
                           "", "No pairing", ["is"], "tiny:inception", "tiny:clip", "tiny:lpips", "", "tiny:dino",
                           100, 0, api_name="/compare")
    with pytest.raises(Exception, match="equal size"):
        client.predict([handle_file(str(p)) for p in good[:3]], [], "", [handle_file(str(p)) for p in good], [], "",
                       [handle_file(str(p)) for p in good], "", "", "Pair by order", ["ssim"], "tiny:inception",
                       "tiny:clip", "tiny:lpips", "", "tiny:dino", 100, 0, api_name="/compare")
    assert client.predict("Neural style", api_name="/history_list") is not None  # still serving


A1111_INFOTEXT = ("1girl, (silver hair:1.2), looking at viewer\nNegative prompt: lowres, bad anatomy\n"
                  "Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 77, Size: 64x64, "
                  "Model hash: 0123456789, Model: anything-v5, Clip skip: 2, Denoising strength: 0.5, Version: v1.9.4")


def test_read_an_a1111_png_and_generate_again_through_the_diffusion_core(client, tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_INFOTEXT)
    source = tmp_path / "from_a1111.png"
    Image.new("RGB", (64, 64), "white").save(source, pnginfo=info)
    table, prompt, negative, _raw = client.predict(handle_file(str(source)), api_name="/read_png")
    settings = {row[0]: row[1] for row in table["data"]}
    assert settings["Sampler"] == "DPM++ 2M" and settings["Seed"] == "77" and settings["Clip skip"] == "2"
    assert prompt == "1girl, (silver hair:1.2), looking at viewer" and negative == "lowres, bad anatomy"
    gallery, text, notes = client.predict(prompt, negative, table, "tiny:sd15", api_name="/generate_from_png")
    paths = _gallery_paths(gallery)
    assert len(paths) == 1
    written = read_png_metadata(paths[0])["settings"]
    assert (written["Seed"], written["Steps"], written["Sampler"], written["Schedule type"]) == (77, 3, "DPM++ 2M",
                                                                                                  "Karras")
    assert written["CFG scale"] == 6.5 and written["Clip skip"] == 2 and written["Size"] == "64x64"
    assert "Seed: 77" in text and "img2img" in notes and "random weights" in notes
    with pytest.raises(Exception, match="not installed"):
        client.predict(prompt + " <lora:nowhere:0.5>", negative, table, "tiny:sd15", api_name="/generate_from_png")
