"""A1111's "TI hashes": every textual-inversion embedding a prompt (or negative prompt) uses is listed as
`name: <first 12 hex digits of the sha256 of the embedding file>` (A1111 ≥ 1.6, textual_inversion.py
`Embedding.set_hash`, sd_hijack_clip.py), after "Lora hashes" and before "Version" as in A1111's own PNGs, e.g.
`Lora hashes: "a: 1d5a77d6b141", TI hashes: "AS-YoungestV2: c71427a287b5, AS-YoungV2: 714bba6525de", Version: 1.7.3`."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from pipelines.core.pngmeta import format_a1111, parse_a1111
from pipelines.core.safeweights import save_safetensors
from pipelines.diffusion.generate import GenerateRequest, generate
from pipelines.diffusion.output import infotext_settings

FAST = GenerateRequest(prompt="1girl", negative_prompt="lowres", width=64, height=64, steps=1, sampler="Euler",
                       schedule="Automatic", seed=1, model="tiny:sd15")


def test_ti_hashes_sit_between_lora_hashes_and_version_and_are_quoted_as_a1111_writes_them():
    settings = infotext_settings(steps=20, sampler="Euler a", schedule="Automatic", cfg_scale=7, seed=1, width=512,
                                 height=512, model_name="m.safetensors", loras=[("a", "1d5a77d6b141")],
                                 embeddings=[("AS-YoungestV2", "c71427a287b5"), ("AS-YoungV2", "714bba6525de")])
    keys = list(settings)
    assert keys.index("Lora hashes") + 1 == keys.index("TI hashes") == keys.index("Version") - 1
    text = format_a1111("1girl", "", settings)
    assert 'TI hashes: "AS-YoungestV2: c71427a287b5, AS-YoungV2: 714bba6525de", Version: ' in text
    assert parse_a1111(text)["settings"]["TI hashes"] == "AS-YoungestV2: c71427a287b5, AS-YoungV2: 714bba6525de"
    without = infotext_settings(steps=20, sampler="Euler a", schedule="Automatic", cfg_scale=7, seed=1, width=512,
                                height=512, model_name="m")
    assert "TI hashes" not in without


@pytest.mark.slow
def test_a_generation_lists_the_embeddings_its_prompts_used_with_the_file_sha256(tmp_path: Path, monkeypatch):
    from pipelines.diffusion.models import load_pipeline

    width = load_pipeline("tiny:sd15").text_encoder.get_input_embeddings().embedding_dim
    folder = tmp_path / "embeddings"
    for index, name in enumerate(("easynegative", "zqstyle", "unused")):
        save_safetensors({"emb_params": torch.randn(1, width, generator=torch.Generator().manual_seed(index))},
                         folder / f"{name}.safetensors")
    monkeypatch.setenv("ASL_EMBEDDING_DIRS", str(folder))

    def short(name: str) -> str:
        return hashlib.sha256((folder / f"{name}.safetensors").read_bytes()).hexdigest()[:12]

    output = generate(dataclasses.replace(FAST, prompt="zqstyle, 1girl", negative_prompt="easynegative, lowres"))
    listed = dict(item.split(": ") for item in output.infotexts[0]["TI hashes"].split(", "))
    assert listed == {"zqstyle": short("zqstyle"), "easynegative": short("easynegative")}
    assert "TI hashes" not in generate(FAST).infotexts[0]
