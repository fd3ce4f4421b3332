"""Every Python and command-line example in README.md and in the packages' docstrings runs.

An example is taken as written, then made small and offline by the SUBSTITUTIONS below (real checkpoints → the
tiny test models, 512 px → 64 px, thousands of steps → 2, image files → small files made here). Nothing else is
changed, so an example that stops matching the code fails here. Python examples run in one namespace per source
(README blocks in order, so a block may use an earlier block's names, as a reader would); `python -m pipelines.X`
lines run in this process through runpy with that argv. What cannot run here is in NOT_RUN with the reason.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (pattern, replacement) regexes applied to every example, in order.
SUBSTITUTIONS = [
    (r"models/anything-v5(\.safetensors)?|models/anime\.safetensors", "tiny:sd15"),
    (r"models/my_folder", "tiny:sd15"),
    (r"rain_princess", "tiny:style"),
    (r',\s*control="anime line art"', ""),
    (r"StoryboardRequest\(", 'StoryboardRequest(control="tiny:controlnet", steps=2, width=64, height=64, '),
    (r"prompts=\(\.\.\.\)", 'prompts=("1boy, outdoors", "1boy, outdoors, on a bench")'),
    (r"(--steps |steps=)\d+", r"\g<1>2"),
    (r"(--count |count=)\d+", r"\g<1>2"),
    (r'(TrainConfig\(backbone="fcn", steps=)2\b', r"\g<1>10"),  # single_image trains at least 10 steps
    (r"(single_image train \S+ --steps )2\b", r"\g<1>10"),
    (r"(single_image train \S+ )--minutes \d+", r"\g<1>--steps 10"),  # a timed training: ten steps instead
    (r'(--sampler "Euler a")(\s+#)', r"\g<1> --steps 2 --size 64x64\g<2>"),
    (r"(--resolution |resolution=)512", r"\g<1>64"),
    (r"--size 512x768", "--size 64x64"),
    (r"width=512, height=768", "width=64, height=64"),
    (r"--image-size 32", "--image-size 16"),
    (r'TrainConfig\(name="ark"', 'TrainConfig(name="ark", steps=2, validation_steps=1, validation_seeds=(1,)'),
    (r"style_finetune train --name ark", "style_finetune train --name ark --steps 2 --validation-steps 1"),
    (r'(CompareRequest\(tuned="ark")', r"\g<1>, steps=2, size=64"),
    (r"(style_finetune compare --tuned ark)", r"\g<1> --steps 2 --size 64"),
    (r"(--content photos/ --name my_style)$", r"\g<1> --steps 2 --vgg-weights random"),
    (r"(--content photos/ --name my_style --steps 2)$", r"\g<1> --vgg-weights random"),  # no ImageNet VGG here
    (r"SketchRequest\(", "SketchRequest(steps=2, width=64, height=64, "),
    (r"(--max-size |max_size=)1024", r"\g<1>64"),
    (r'metrics=\["fid", "kid", "ssim"(, "lpips")?\]', 'metrics=["ssim", "psnr"]'),
    (r"--metrics fid,kid,ssim,psnr", "--metrics ssim,psnr"),
    (r"guidance=2\.0, seed=1, count=\d+", "guidance=2.0, seed=1, count=1"),
]

# Commands and lines not run, with the reason.
NOT_RUN = {
    "python3.11 -m venv": "installs the environment (the test runs inside it)",
    "bash tests/run_all.sh": "runs this test suite",
    "accelerate launch": "needs several GPUs",
    ".venv/bin/python bench/": "benchmarks take minutes; they are run by hand",
    "python -m pipelines.landmark_faces evaluate": "samples hundreds of held-out faces (minutes)",
    "python -m pipelines.style_finetune evaluate": "computes the seed's metric suite with real feature networks",
    "python -m pipelines.single_image edit": "needs the edit's CLIP model (real weights)",
    "--data my_faces/": "needs a folder of faces with landmark JSONs (`python -m pipelines.landmark_faces synth`)",
}


def substituted(text: str) -> str:
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text, flags=re.M)
    return text


# ---------------------------------------------------------------------------------------------- collecting
def readme_blocks() -> list[tuple[str, str]]:
    """("python" | "bash", code) for each fenced block of the README, in order."""
    return [(lang, code) for lang, code in re.findall(r"```(python|bash)\n(.*?)```", README.read_text(), re.S)]


def docstring_examples(path: Path) -> list[tuple[str, str]]:
    """The indented example lines of a module docstring: one Python block (lines from `from pipelines` on) and
    the `python -m` command lines (a trailing backslash continues a line)."""
    doc = ast.get_docstring(ast.parse(path.read_text()), clean=False) or ""
    lines = [line[4:] for line in doc.splitlines() if line.startswith("    ") and line.strip()]
    python, commands, pending = [], [], ""
    for line in lines:
        if pending or line.startswith("python -m "):
            pending += line.strip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                commands.append(pending.strip())
                pending = ""
        elif line.startswith("from pipelines") or (python and not line.startswith(("train ", "generate "))):
            python.append(line)
    examples = [("python", "\n".join(python) + "\n")] if python else []
    return examples + [("bash", command + "\n") for command in commands]


def commands_of(code: str) -> list[str]:
    lines, pending = [], ""
    for line in code.splitlines():
        pending += line.rstrip().removesuffix("\\")
        if not line.rstrip().endswith("\\"):
            if pending.strip():
                lines.append(pending.strip())
            pending = ""
    return lines


SOURCES = [README] + sorted(ROOT.glob("pipelines/*/__init__.py")) + sorted(ROOT.glob("pipelines/*/__main__.py"))


def examples_of(source: Path) -> list[tuple[str, str]]:
    return readme_blocks() if source == README else docstring_examples(source)


def test_every_source_with_examples_is_collected():
    found = {source.relative_to(ROOT).as_posix() for source in SOURCES if examples_of(source)}
    assert "README.md" in found and "pipelines/diffusion/__init__.py" in found
    assert sum(lang == "python" for lang, _ in readme_blocks()) >= 8


# ---------------------------------------------------------------------------------------------- the world
@pytest.fixture
def example_world(tmp_path, monkeypatch):
    """A working folder with the files the examples name, a LoRA `my_style` and an embedding `easynegative`."""
    import torch

    from pipelines.core.safeweights import save_safetensors
    from pipelines.diffusion.models import load_pipeline
    from tests.test_diffusion_lora import save_diffusers_lora

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASL_ALLOW_FOLDER_INPUTS", "1")  # the README's settings table: folders for Metrics
    rng = np.random.default_rng(0)

    def picture(path: str, size: int = 64) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)

    for name in ("photo.jpg", "photo.png", "other.png", "style.png", "region.png", "face.png"):
        picture(name)
    for index in range(3):
        for folder in ("imgs", "photos", "real", "a", "b", "A_DIR", "B_DIR", "REAL_DIR", "my_images"):
            picture(f"{folder}/{index}.png", 256 if folder == "imgs" else 64)  # imgs: enough for 512 px training
    import shutil

    for name in ("a", "b", "my_images", "more"):
        shutil.make_archive(name, "zip", "imgs" if name == "more" else name)
    for name in ("some_image.png", "image.png"):  # PNGs as A1111 writes them, for `read`
        Image.open("imgs/0.png").save(name, pnginfo=_parameters("1girl\nSteps: 20, Sampler: Euler a, CFG scale: 7, "
                                                                "Seed: 1, Size: 64x64"))
    pipe = load_pipeline("tiny:sd15")
    save_diffusers_lora(pipe, tmp_path / "loras", "my_style", seed=3)
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    save_safetensors({"emb_params": torch.randn(1, width, generator=torch.Generator().manual_seed(5))},
                     tmp_path / "embeddings" / "easynegative.safetensors")
    monkeypatch.setenv("ASL_LORA_DIRS", str(tmp_path / "loras"))
    monkeypatch.setenv("ASL_EMBEDDING_DIRS", str(tmp_path / "embeddings"))
    return {"image": Image.open("photo.png").convert("RGB")}


def _parameters(text: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", text)
    return info


def run_command(command: str) -> None:
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "-m"], command
    module, argv = words[2], []
    for word in words[3:]:
        argv += sorted(glob.glob(word)) if "*" in word else [word]
    saved = sys.argv
    sys.argv = [module, *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    except SystemExit as stop:
        assert stop.code in (0, None), f"{command!r} exited with {stop.code}"
    finally:
        sys.argv = saved


def run_examples(examples: list[tuple[str, str]], namespace: dict) -> None:
    for lang, code in examples:
        code = substituted(code)
        if lang == "python":
            with contextlib.redirect_stdout(None):
                exec(compile(code, "<example>", "exec"), namespace)  # noqa: S102 - the README's own examples
            continue
        for command in commands_of(code):
            if any(command.startswith(prefix) or prefix in command for prefix in NOT_RUN):
                continue
            run_command(command)


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_the_examples_run(source, example_world):
    examples = examples_of(source)
    if not examples:
        pytest.skip("no examples")
    run_examples(examples, dict(example_world))
