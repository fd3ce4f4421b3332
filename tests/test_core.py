"""Core: loader and cache eviction, offline path, seeds, PNG metadata, records, images, weights, zips."""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

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
    assert paths == [tmp_path / "out" / "ok" / "a.png"]  # named as inside the zip
    assert paths[0].read_bytes() == png
    assert len(skipped) == 3 and not (tmp_path / "evil.png").exists()


def test_zip_bomb_is_refused_before_writing(tmp_path):
    path = _zip(tmp_path, {"big.png": b"\0" * (8 * 2**20)})  # compresses to a few KB
    with pytest.raises(archives.ArchiveError, match="unpack to"):
        archives.extract_images(path, tmp_path / "out", max_total_bytes=2**20)
    assert not list((tmp_path / "out").iterdir())
    with pytest.raises(archives.ArchiveError, match="not a valid zip"):
        archives.extract_images(tmp_path / "upload.zip.missing", tmp_path / "out")


def test_zip_bomb_is_refused_by_its_compression_ratio_before_writing(tmp_path):
    """The issue's case: ~40 KB that would unpack to 40 MB, under the size cap, refused from the directory."""
    png = _png_bytes(Image.new("RGB", (16, 16)))
    path = _zip(tmp_path, {"ok.png": png, "bomb.png": b"\0" * (40 * 2**20)})
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("bomb.png")
        assert info.file_size / info.compress_size > archives.MAX_RATIO  # the premise: a real bomb ratio
    with pytest.raises(archives.ArchiveError, match=r"upload.zip looks like a zip bomb: bomb.png"):
        archives.extract_images(path, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_many_small_members_are_refused_by_the_archive_ratio(tmp_path):
    path = _zip(tmp_path, {f"flat{i}.bmp": b"\0" * (4 * 2**20) for i in range(4)})  # each under the free size
    with pytest.raises(archives.ArchiveError, match="it would unpack from"):
        archives.extract_images(path, tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())
    flat = io.BytesIO()
    Image.new("RGB", (600, 600)).save(flat, format="BMP")  # a real 1 MB image, highly compressible but small: fine
    small = _zip(tmp_path, {"flat.bmp": flat.getvalue()})
    assert len(archives.extract_images(small, tmp_path / "small")[0]) == 1


def test_a_damaged_member_removes_everything_already_unpacked(tmp_path):
    png = _png_bytes(Image.new("RGB", (16, 16)))
    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("first/a.png", png)
        archive.writestr("second.png", png)
    data = bytearray(path.read_bytes())
    offset = data.rfind(png)  # corrupt the second member's bytes: its CRC no longer matches
    data[offset + 40] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(archives.ArchiveError, match="damaged.zip is damaged"):
        archives.extract_images(path, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*"))


def test_repeated_names_in_a_zip_are_skipped_not_overwritten(tmp_path):
    first, second = _png_bytes(Image.new("RGB", (16, 16), "red")), _png_bytes(Image.new("RGB", (16, 16), "blue"))
    path = tmp_path / "twice.zip"
    with zipfile.ZipFile(path, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("a.png", first)
        archive.writestr("a.png", second)
    paths, skipped = archives.extract_images(path, tmp_path / "out")
    assert [p.read_bytes() for p in paths] == [first] and skipped == ["a.png: a second file of that name, skipped"]


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


def test_a_replaced_folder_keeps_the_old_one_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "step-0000010"
    with jobs.atomic_folder(target) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError), jobs.atomic_folder(target, replace=True) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("crash mid-write")
    assert (target / "weights").read_text() == "old"
    with jobs.atomic_folder(target, replace=True) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["step-0000010"]


def test_step_checkpoints_keep_the_newest_two_and_never_point_at_missing_weights(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        jobs.write_step_checkpoint(root, step, lambda folder, step=step: (folder / "w").write_text(str(step)),
                                   {"losses": [1.0] * step})
    assert sorted(p.name for p in root.iterdir()) == ["state.json", "step-0000020", "step-0000030"]
    state = jobs.read_step_state(root, "w")
    assert state["step"] == 30 and state["folder"] == "step-0000030" and len(state["losses"]) == 30
    assert jobs.read_step_state(root, "optimizer.pt") is None  # names a folder without the required file
    (root / "step-0000030" / "w").unlink()
    assert jobs.read_step_state(root, "w") is None


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


# ------------------------------------------------------------------------------------------ method registries
REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "pipelines" / "core"
_MODULE_PATH = re.compile(r"pipelines\.[\w.]+")


def _method_imports(source: str, module: str) -> list[str]:
    """Every pipelines.<method> module that `source` (the module `module` of pipelines.core) imports, or names
    as a whole string (importlib.import_module("pipelines.x")), anywhere in it, inside functions included."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_PATH.fullmatch(node.value):
            targets = [node.value]
        found += [name for name in targets
                  if name.startswith("pipelines.") and name.split(".")[1] != "core"]
    return found


def test_the_core_never_imports_a_method_module():
    problems = {}
    for path in sorted(CORE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        if path.name == "__init__.py":
            module += ".__init__"  # relative imports in a package's __init__ are relative to the package
        if found := _method_imports(path.read_text(encoding="utf-8"), module):
            problems[str(path.relative_to(REPO))] = found
    assert problems == {}, "the core must not name a method: let the method register with the core instead"


def test_the_import_check_catches_every_form():
    bad = {
        "import pipelines.neural_style": "pipelines.neural_style",
        "from pipelines.metrics.features import build_tiny_lpips": "pipelines.metrics.features",
        "from pipelines import metrics": "pipelines.metrics",
        "from ..neural_style import network": "pipelines.neural_style",
        "from .. import metrics as m": "pipelines.metrics",
        "PROVIDERS = {'lpips': 'pipelines.metrics.features'}": "pipelines.metrics.features",
        "def f():\n    from pipelines.neural_style.network import save_tiny_style": "pipelines.neural_style.network",
    }
    for line, target in bad.items():
        assert target in _method_imports(line, "pipelines.core.loader"), line
    good = ("from . import loader\nfrom .loader import TINY_LABEL\nfrom pipelines.core import settings\n"
            "import pipelines\nfrom .. import core\nNOTE = 'see pipelines.neural_style for an example'")
    assert _method_imports(good, "pipelines.core.tiny_models") == []


def _fresh_python(code: str, tmp_path: Path, extra_path: Path | None = None) -> str:
    """Run `code` in a new interpreter (nothing imported yet), with its own cache; returns its stdout."""
    env = {**os.environ, "ASL_CACHE": str(tmp_path / "cache"), "ASL_OUTPUTS": str(tmp_path / "outputs"),
           "ASL_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    env.pop("ASL_DTYPE", None)
    prelude = "import sys\n"
    if extra_path is not None:  # extra method packages, found by discovery as if they were in pipelines/
        prelude += f"import pipelines\npipelines.__path__.append({str(extra_path)!r})\n"
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_methods_tiny_model_loads_before_its_package_is_imported(tmp_path):
    out = _fresh_python("""
        from pipelines.core.loader import load_model
        assert "pipelines.neural_style" not in sys.modules
        module = load_model("torch_module", "tiny:style")
        print(type(module).__name__, "pipelines.neural_style" in sys.modules)
    """, tmp_path)
    assert out.split() == ["StyleNet", "True"]


def test_a_saved_file_naming_a_methods_architecture_loads_before_its_package_is_imported(tmp_path):
    from pipelines.neural_style.network import save_tiny_style

    save_tiny_style(tmp_path / "style")
    out = _fresh_python(f"""
        from pipelines.core.loader import load_model
        assert not any(name.startswith(("pipelines.neural_style", "pipelines.metrics")) for name in sys.modules)
        module = load_model("torch_module", {str(tmp_path / "style" / "model.safetensors")!r})
        print(type(module).__name__)
    """, tmp_path)
    assert out.split() == ["StyleNet"]


def test_history_finds_a_methods_rerunner_and_discovery_stays_light(tmp_path):
    out = _fresh_python("""
        from pipelines.core import runs
        fn = runs.rerunner("Metrics / A-B")
        assert fn is not None and runs.rerunner("Neural style") is not None
        print(sorted(m for m in ("torch", "numpy", "torchvision", "diffusers", "transformers") if m in sys.modules))
        try:
            fn({"set_a": "4 arrays", "set_b": "4 arrays"}, None)  # the metrics re-runner itself answers
        except ValueError as err:
            print("refused:", err)
        assert runs.rerunner("No such tab") is None
    """, tmp_path)
    lines = out.splitlines()
    assert lines[0] == "[]"  # importing every method package loaded none of the heavy libraries
    assert lines[1].startswith("refused:") and "cannot be re-run from History" in lines[1]


def test_unknown_names_are_still_clear_errors_after_discovery(tmp_path):
    store = records.RunStore(tmp_path / "runs.sqlite")
    record = records.RunRecord(tab="No such tab", params={})
    with store.run(record):
        pass
    from pipelines.core import runs, tiny_models

    with pytest.raises(ValueError, match="'No such tab' tab cannot be re-run"):
        runs.rerun(record.id, store)
    with pytest.raises(ValueError, match="Unknown tiny model 'nope'; known tiny models: ") as caught:
        tiny_models.spec_for("nope")
    assert all(name in str(caught.value) for name in ("sd15", "inception", "style", "lpips", "nima"))
    assert loader.architecture("no_such_architecture") is None


FAKE_METHOD = """
import time
from pipelines.core import loader, runs, tiny_models
from pipelines.core.methods import lazy

time.sleep(0.3)  # threads that miss meanwhile must wait for this import, not miss
try:
    tiny_models.spec_for("not_registered_anywhere")  # a lookup during discovery: no recursion, a plain miss
except ValueError:
    NESTED_MISS = True
tiny_models.register_tiny(tiny_models.TinySpec("fake", "torch_module", "fake method model", 1,
                                               lazy(__name__ + ".heavy", "build")))
runs.register_rerunner("Fake tab", lambda params, store: "rerun " + params["x"])
"""


def test_discovery_finds_new_packages_once_without_recursion_and_survives_a_broken_one(tmp_path):
    extra = tmp_path / "more_methods"
    (extra / "zz_fake").mkdir(parents=True)
    (extra / "zz_fake" / "__init__.py").write_text(FAKE_METHOD)
    (extra / "zz_broken").mkdir()
    (extra / "zz_broken" / "__init__.py").write_text("raise ImportError('needs a library that is not installed')\n")
    out = _fresh_python("""
        import threading
        from pipelines.core import methods, runs, tiny_models

        names = methods.method_packages()
        assert "pipelines.core" not in names and {"pipelines.zz_fake", "pipelines.zz_broken"} <= set(names)
        found = []
        threads = [threading.Thread(target=lambda: found.append(tiny_models.spec_for("fake").label))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        print(found)
        print(sys.modules["pipelines.zz_fake"].NESTED_MISS, runs.rerunner("Fake tab")({"x": "ok"}, None))
        print("zz_broken" in " ".join(methods.DISCOVERY_PROBLEMS))
        calls = []
        original = methods.importlib.import_module
        methods.importlib.import_module = lambda name: calls.append(name) or original(name)
        try:
            tiny_models.spec_for("nope")
        except ValueError as err:
            print("needs a library that is not installed" in str(err))
        print(calls)  # discovery ran once: later misses import nothing
    """, tmp_path, extra_path=extra)
    lines = out.splitlines()
    assert lines[0] == str(["fake method model"] * 4)
    assert lines[1] == "True rerun ok"
    assert lines[2:] == ["True", "True", "[]"]


def test_a_fresh_start_discards_another_runs_checkpoints_and_names_cannot_leave_their_folder(tmp_path):
    from pipelines.core.errors import UserError, checked_name
    from pipelines.core.jobs import discard_checkpoints

    root = tmp_path / "checkpoints"
    for step in ("step-0000500", "step-0001000"):
        (root / step).mkdir(parents=True)
        (root / step / "model.safetensors").write_bytes(b"old run")
    (root / "state.json").write_text('{"folder": "step-0001000"}')
    (root / "notes.txt").write_text("kept")
    discard_checkpoints(root)
    assert sorted(path.name for path in root.iterdir()) == ["notes.txt"]
    discard_checkpoints(tmp_path / "missing")  # nothing to discard is not an error
    assert checked_name("my_style-2") == "my_style-2"
    for bad in ("../../etc", "a/b", "", "x" * 61, "name with spaces"):
        with pytest.raises(UserError, match="letters, digits"):
            checked_name(bad)
