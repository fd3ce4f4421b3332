"""Core: loader and cache eviction, offline path, seeds, PNG metadata, records, images, weights, zips."""

from __future__ import annotations

import io
import json
import pickle
import socket
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core import archives, images, jobs, loader, network, pngmeta, records, safeweights, seeds


# ------------------------------------------------------------------------------------------ loader
def _linear_architecture(config, state_dict):
    module = torch.nn.Linear(int(config["features"]), int(config["features"]), bias=False)
    module.load_state_dict(state_dict)
    return module


@pytest.fixture
def linear_models(tmp_path):
    """Three 'torch_module' folders of 1 MiB each (256x1024 float32), registered architecture."""
    loader.register_architecture("test_linear", _linear_architecture)
    folders = []
    for index in range(3):
        folder = tmp_path / f"linear{index}"
        folder.mkdir()
        weight = torch.full((512, 512), float(index))
        safeweights.save_safetensors({"weight": weight}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"architecture": "test_linear", "features": 512}))
        folders.append(str(folder))
    return folders


def test_loader_returns_cached_object_and_records_info(linear_models):
    first = loader.load_model("torch_module", linear_models[0], device="cpu")
    again = loader.load_model("torch_module", linear_models[0], device="cpu")
    assert first is again
    info = loader.model_info(first)
    assert info.size_bytes == 512 * 512 * 4 and info.revision == "local" and not info.test_model
    assert torch.all(first.weight == 0)


def test_cache_evicts_least_recently_used_under_budget(linear_models):
    cache = loader.CACHE
    cache.budget_bytes = int(2.5 * 512 * 512 * 4)  # room for two models
    try:
        a = loader.load_model("torch_module", linear_models[0], device="cpu")
        loader.load_model("torch_module", linear_models[1], device="cpu")
        assert loader.load_model("torch_module", linear_models[0], device="cpu") is a  # a is now most recent
        loader.load_model("torch_module", linear_models[2], device="cpu")  # evicts models[1], not a
        sources = [key[1] for key in cache.loaded_keys()]
        assert sources == [linear_models[0], linear_models[2]]
        assert cache.used_bytes() <= cache.budget_bytes
    finally:
        cache.budget_bytes = None


def test_missing_hub_model_offline_names_model_and_reason():
    with pytest.raises(loader.ModelLoadError) as caught:
        loader.load_model("diffusers_model", "nobody/no-such-model", device="cpu", class_name="UNet2DModel")
    message = str(caught.value)
    assert "nobody/no-such-model" in message and "offline" in message


def test_unknown_architecture_and_family_are_plain_errors(tmp_path):
    safeweights.save_safetensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "nonexistent"}))
    with pytest.raises(loader.ModelLoadError, match="unknown architecture 'nonexistent'"):
        loader.load_model("torch_module", str(tmp_path), device="cpu")
    with pytest.raises(loader.ModelLoadError, match="Unknown model family"):
        loader.load_model("no_family", "x", device="cpu")


# ------------------------------------------------------------------------------------------ offline
def test_offline_env_needs_no_connection(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no connection may be attempted when HF_HUB_OFFLINE=1")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    status = network.hub_status()
    assert status.offline and "HF_HUB_OFFLINE" in status.reason


def test_unreachable_hub_is_offline_and_probed_once(monkeypatch):
    calls = []
    real = socket.create_connection

    def counting(address, timeout=None):
        calls.append(address)
        return real(address, timeout=timeout)

    with socket.socket() as closed:  # a port with nothing listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"https://127.0.0.1:{port}")
    monkeypatch.setattr(socket, "create_connection", counting)
    network.forget_probes()
    try:
        assert network.known_offline() is None  # not probed yet: unknown, and no connection made
        assert calls == []
        first, second = network.hub_status(), network.hub_status()
        assert first.offline and second.offline and "cannot be reached" in first.reason
        assert len(calls) == 1
    finally:
        network.forget_probes()


# ------------------------------------------------------------------------------------------ seeds
def test_seeded_noise_reproduces_and_differs():
    assert torch.equal(seeds.seeded_noise((4, 8), 123), seeds.seeded_noise((4, 8), 123))
    assert not torch.equal(seeds.seeded_noise((4, 8), 123), seeds.seeded_noise((4, 8), 124))
    assert seeds.seeded_noise((2,), 5, dtype=torch.float64).dtype == torch.float64


def test_randomize_seed_range_and_validation():
    assert seeds.randomize_seed(42, randomize=False) == 42
    drawn = {seeds.randomize_seed(0, randomize=True) for _ in range(20)}
    assert len(drawn) > 1 and all(0 <= s <= seeds.MAX_SEED for s in drawn)
    with pytest.raises(ValueError, match="Seed must be between"):
        seeds.randomize_seed(-1, randomize=False)


# ------------------------------------------------------------------------------------------ PNG metadata
A1111_TEXT = (
    "masterpiece, 1girl, silver hair\n"
    "Negative prompt: lowres, bad hands\n"
    'Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3632131843, Size: 512x768, '
    'Model hash: 6ce0161689, Model: anything-v5, Lora hashes: "lora1: abc, lora2: def", Version: v1.6.0'
)


def test_parse_a1111_text():
    parsed = pngmeta.parse_a1111(A1111_TEXT)
    assert parsed["prompt"] == "masterpiece, 1girl, silver hair"
    assert parsed["negative_prompt"] == "lowres, bad hands"
    assert parsed["settings"]["Seed"] == "3632131843"
    assert parsed["settings"]["Sampler"] == "DPM++ 2M Karras"
    assert parsed["settings"]["Lora hashes"] == "lora1: abc, lora2: def"
    assert parsed["settings"]["Version"] == "v1.6.0"


def test_png_metadata_round_trip(tmp_path):
    settings_in = {"Steps": 20, "Seed": 7, "Style": "rain, princess", "Note": 'say "hi"'}
    path = pngmeta.save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", settings_in,
                            prompt="a cat", negative_prompt="blurry")
    meta = pngmeta.read_png_metadata(path)
    assert meta == {"prompt": "a cat", "negative_prompt": "blurry", "settings": settings_in}
    with Image.open(path) as image:
        text = pngmeta.parse_a1111(image.text["parameters"])
    assert text["prompt"] == "a cat" and text["negative_prompt"] == "blurry"
    assert text["settings"]["Style"] == "rain, princess" and text["settings"]["Note"] == 'say "hi"'
    assert text["settings"]["Seed"] == "7"


def test_png_written_by_a1111_is_read(tmp_path):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (4, 4)).save(tmp_path / "a1111.png", pnginfo=info)
    assert pngmeta.read_png_metadata(tmp_path / "a1111.png")["settings"]["Model"] == "anything-v5"


# ------------------------------------------------------------------------------------------ records
def test_records_round_trip_filter_and_status(tmp_path):
    store = records.RunStore(tmp_path / "runs.sqlite")
    with store.run(records.RunRecord(tab="Neural style", params={"style": "candy"}, seed=3)) as record:
        with record.stage("stylize"):
            pass
        record.outputs.append("x.png")
    with pytest.raises(RuntimeError), store.run(records.RunRecord(tab="Other", params={})):
        raise RuntimeError("boom")
    with pytest.raises(jobs.JobCancelled), store.run(records.RunRecord(tab="Other", params={})):
        raise jobs.JobCancelled("stop")
    saved = store.get(record.id)
    assert saved.params == {"style": "candy"} and saved.seed == 3 and saved.status == "done"
    assert saved.outputs == ["x.png"] and "stylize" in saved.timings
    assert [r.tab for r in store.list(tab="Neural style")] == ["Neural style"]
    assert sorted(r.status for r in store.list(tab="Other")) == ["cancelled", "failed"]
    assert next(r for r in store.list(tab="Other") if r.status == "failed").error == "boom"


# ------------------------------------------------------------------------------------------ images
def _png_bytes(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


@pytest.mark.parametrize("make", [
    lambda: Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),  # 16-bit
    lambda: Image.new("CMYK", (64, 48), (0, 255, 255, 0)),
    lambda: Image.new("RGBA", (64, 48), (255, 0, 0, 0)),  # fully transparent: white after compositing
    lambda: Image.new("RGB", (64, 48), "blue").convert("P"),
    lambda: Image.new("L", (64, 48), 128),
])
def test_unusual_modes_become_rgb(make):
    source = make()
    fmt = "JPEG" if source.mode == "CMYK" else "PNG"
    image = images.load_image(_png_bytes(source, format=fmt))
    assert image.mode == "RGB" and image.size == source.size


def test_transparent_pixels_composite_on_white():
    image = images.load_image(_png_bytes(Image.new("RGBA", (32, 32), (255, 0, 0, 0))))
    assert images.to_array(image)[0, 0].tolist() == [255, 255, 255]


def test_sixteen_bit_keeps_its_range():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    array = images.to_array(images.load_image(_png_bytes(Image.fromarray(ramp))))
    assert array.min() == 0 and array.max() == 255


@pytest.mark.parametrize("payload, message", [
    (b"%PDF-1.4 not an image", "not an image"),
    (_png_bytes(Image.new("RGB", (1, 1))), "at least"),
])
def test_bad_images_get_plain_messages(payload, message):
    with pytest.raises(images.ImageInputError, match=message):
        images.load_image(payload)


def test_truncated_image_is_refused():
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    with pytest.raises(images.ImageInputError, match="damaged or incomplete"):
        images.load_image(data[: len(data) // 2])


def test_huge_image_is_refused_without_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 megapixels, a few hundred KB on disk
    with pytest.raises(images.ImageInputError, match="downscale"):
        images.load_image(path)


def test_max_side_downscales():
    image = images.load_image(_png_bytes(Image.new("RGB", (300, 100))), max_side=150)
    assert image.size == (150, 50)


# ------------------------------------------------------------------------------------------ weights
def test_pickle_renamed_safetensors_is_refused(tmp_path):
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    with pytest.raises(safeweights.UnsafeWeightsError, match="not a safetensors file"):
        safeweights.load_safetensors(path)
    torch.save({"w": torch.zeros(3)}, path)  # a real torch checkpoint, renamed
    with pytest.raises(safeweights.UnsafeWeightsError, match="not a safetensors file"):
        safeweights.load_safetensors(path)


def test_safetensors_round_trip_and_bad_header(tmp_path):
    path = safeweights.save_safetensors({"w": torch.arange(4.0)}, tmp_path / "ok.safetensors", {"k": "v"})
    tensors, metadata = safeweights.load_safetensors(path)
    assert torch.equal(tensors["w"], torch.arange(4.0)) and metadata == {"k": "v"}
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 5) + b"notjs" + b"\0" * 16)
    with pytest.raises(safeweights.UnsafeWeightsError, match="not valid JSON"):
        safeweights.check_safetensors(bad)


# ------------------------------------------------------------------------------------------ zips
def _zip(tmp_path, entries: dict[str, bytes]):
    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_zip_skips_escaping_and_non_image_entries(tmp_path):
    png = _png_bytes(Image.new("RGB", (16, 16)))
    path = _zip(tmp_path, {"ok/a.png": png, "../evil.png": png, "/abs/b.png": png, "notes.txt": b"hi"})
    paths, skipped = archives.extract_images(path, tmp_path / "out")
    assert [p.name for p in paths] == ["00000_a.png"]
    assert all(p.parent == tmp_path / "out" for p in paths)
    assert len(skipped) == 3 and not (tmp_path / "evil.png").exists()


def test_zip_bomb_is_refused_before_writing(tmp_path):
    path = _zip(tmp_path, {"big.png": b"\0" * (8 * 2**20)})  # compresses to a few KB
    with pytest.raises(archives.ArchiveError, match="unpack to"):
        archives.extract_images(path, tmp_path / "out", max_total_bytes=2**20)
    assert not list((tmp_path / "out").iterdir())
    with pytest.raises(archives.ArchiveError, match="not a valid zip"):
        archives.extract_images(tmp_path / "upload.zip.missing", tmp_path / "out")


def test_zip_count_cap(tmp_path):
    path = _zip(tmp_path, {f"{i}.png": b"x" for i in range(5)})
    with pytest.raises(archives.ArchiveError, match="limit is 3"):
        archives.extract_images(path, tmp_path / "out", max_files=3)


# ------------------------------------------------------------------------------------------ jobs
def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "checkpoint.bin"
    jobs.atomic_write_bytes(target, b"first")
    with pytest.raises(RuntimeError), jobs.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.bin"]


def test_job_registry_cancel_reaches_token():
    job_id, token = jobs.JOBS.start()
    assert not token.cancelled and jobs.JOBS.cancel(job_id) and token.cancelled
    with pytest.raises(jobs.JobCancelled):
        token.raise_if_cancelled()
    jobs.JOBS.finish(job_id)
    assert not jobs.JOBS.cancel(job_id)


def test_a_prompt_with_a_colon_is_not_taken_for_settings():
    parsed = pngmeta.parse_a1111("anime girl, style: watercolor")
    assert parsed == {"prompt": "anime girl, style: watercolor", "negative_prompt": "", "settings": {}}


def test_probing_a_download_host_does_not_make_the_hub_known(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    network.forget_probes()
    try:
        assert network.url_status(f"https://127.0.0.1:{port}/file.zip").offline
        assert network.known_offline() is None  # the banner must not trigger a hub probe now
    finally:
        network.forget_probes()


def test_thirty_two_bit_images_keep_their_range():
    array = (np.arange(64 * 64, dtype=np.int32).reshape(64, 64) * 1000)
    image = images.to_array(images.load_image(_png_bytes(Image.fromarray(array, mode="I"), format="TIFF")))
    assert image.max() == 255 and image.min() == 0
