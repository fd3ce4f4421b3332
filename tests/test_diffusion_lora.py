"""LoRA files through the diffusion core: layouts, A1111 hash, kohya export, applying and taking off (issue #7).

Test LoRAs are made with peft on copies of the tiny SD-1.5 pipeline's UNet and text encoder and saved the way
diffusers' DreamBooth-LoRA example saves them (`get_peft_model_state_dict` → `convert_state_dict_to_diffusers` →
`StableDiffusionPipeline.save_lora_weights`). The independent checks are diffusers' own loaders (its path loader
reads the file's alpha metadata; its kohya converter reads our export) and A1111's key patterns and hash rule.
"""

from __future__ import annotations

import copy
import hashlib
import re

import numpy as np
import pytest
import torch

from pipelines.core.errors import UserError
from pipelines.diffusion import lora as lora_mod

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
RANK, ALPHA = 4, 8  # alpha != rank, so the file's scale (2) matters

# A1111 extensions-builtin/Lora/networks.py convert_diffusers_name_to_compvis: the SD-1 names it maps.
A1111_SD1_KEY = re.compile(
    r"lora_(unet_(down_blocks_\d+_attentions_\d+|mid_block_attentions_\d+|up_blocks_\d+_attentions_\d+)_.+"
    r"|te_text_model_encoder_layers_\d+_.+)\.(lora_down\.weight|lora_up\.weight|alpha)"
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine threads make them 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pipe():
    from pipelines.core.loader import load_model

    return load_model("diffusers_pipeline", "tiny:sd15")


def generate(pipe) -> np.ndarray:
    result = pipe(
        "a girl with silver hair",
        negative_prompt="blurry",
        num_inference_steps=2,
        height=32,
        width=32,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(1234),
        output_type="np",
    )
    return result.images[0]


def peft_lora(pipe, *, zero_up: bool = False, seed: int = 0) -> tuple[dict, dict, dict, dict]:
    """peft LoRA state dicts (and their configs) for copies of the pipe's UNet and text encoder."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    unet, text_encoder = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
    init = bool(zero_up)  # True is peft's default init: A random, B (up) zero
    unet_config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=UNET_TARGETS, init_lora_weights=init)
    text_config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TEXT_TARGETS, init_lora_weights=init)
    torch.manual_seed(seed)
    inject_adapter_in_model(unet_config, unet)
    inject_adapter_in_model(text_config, text_encoder)
    return (
        get_peft_model_state_dict(unet),
        get_peft_model_state_dict(text_encoder),
        unet_config.to_dict(),
        text_config.to_dict(),
    )


def save_diffusers_lora(pipe, folder, name, **kwargs):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    unet_sd, text_sd, unet_config, text_config = peft_lora(pipe, **kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=convert_state_dict_to_diffusers(unet_sd),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(text_sd),
        unet_lora_adapter_metadata=unet_config,
        text_encoder_lora_adapter_metadata=text_config,
        weight_name=f"{name}.safetensors",
    )
    return folder / f"{name}.safetensors"


def save_kohya_copy(diffusers_path, alpha):
    from safetensors.torch import load_file, save_file

    kohya = lora_mod.diffusers_to_kohya(load_file(str(diffusers_path)), alpha=alpha)
    path = diffusers_path.with_name(diffusers_path.stem + f"_kohya_{alpha}.safetensors")
    save_file(kohya, str(path))
    return path, kohya


def with_loras(pipe, *entries) -> np.ndarray:
    """Generate with (path, weight) LoRAs applied through the module."""
    loaded = [(*lora_mod.read_lora(path), weight) for path, weight in entries]
    with lora_mod.applied_loras(pipe, loaded):
        return generate(pipe)


def model_snapshot(pipe) -> dict:
    snapshot = {}
    for part in ("unet", "text_encoder"):
        model = getattr(pipe, part)
        snapshot[part + ".types"] = {name: type(module) for name, module in model.named_modules()}
        snapshot[part + ".params"] = {name: t.detach().clone() for name, t in model.state_dict().items()}
    return snapshot


def assert_same_model(pipe, before: dict) -> None:
    after = model_snapshot(pipe)
    for key in before:
        if key.endswith(".types"):
            assert after[key] == before[key], f"{key}: module types changed (a LoRA wrapper was left behind)"
        else:
            assert after[key].keys() == before[key].keys()
            for name, tensor in before[key].items():
                assert torch.equal(after[key][name], tensor), f"{key} {name} changed"
    assert not any(pipe.get_list_adapters().values())


def test_zero_up_lora_leaves_output_unchanged(pipe, tmp_path):
    base = generate(pipe)
    path = save_diffusers_lora(pipe, tmp_path, "zero", zero_up=True)
    lora, state_dict = lora_mod.read_lora(path)
    ups = [t for k, t in state_dict.items() if ".up." in k]
    assert ups and all(torch.count_nonzero(t) == 0 for t in ups)
    np.testing.assert_allclose(with_loras(pipe, (path, 1.0)), base, rtol=0, atol=1e-6)


def test_lora_changes_output_and_weight_zero_removes_it(pipe, tmp_path):
    base = generate(pipe)
    path = save_diffusers_lora(pipe, tmp_path, "style")
    changed = with_loras(pipe, (path, 1.0))
    assert np.abs(changed - base).max() > 1e-3
    np.testing.assert_allclose(with_loras(pipe, (path, 0.0)), base, rtol=0, atol=1e-6)
    # The weight reaches the text encoder as well as the UNet (A1111's weight applies to both).
    from safetensors.torch import load_file, save_file

    text_only = {k: v for k, v in load_file(str(path)).items() if k.startswith("text_encoder.")}
    text_path = tmp_path / "text_only.safetensors"
    save_file(text_only, str(text_path))
    assert np.abs(with_loras(pipe, (text_path, 1.0)) - base).max() > 1e-4
    np.testing.assert_allclose(with_loras(pipe, (text_path, 0.0)), base, rtol=0, atol=1e-6)


def test_kohya_and_diffusers_files_give_same_output(pipe, tmp_path):
    diffusers_path = save_diffusers_lora(pipe, tmp_path, "style", seed=3)
    kohya_path, kohya = save_kohya_copy(diffusers_path, alpha=ALPHA)

    # A1111's SD-1 key names; transformers 5's flattened CLIP still exported as text_model_…
    assert all(A1111_SD1_KEY.fullmatch(k) for k in kohya), [k for k in kohya if not A1111_SD1_KEY.fullmatch(k)][:3]
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in kohya)
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {float(ALPHA)}

    diffusers_lora, _ = lora_mod.read_lora(diffusers_path)
    kohya_lora, _ = lora_mod.read_lora(kohya_path)
    assert (diffusers_lora.layout, kohya_lora.layout) == ("diffusers", "kohya")
    assert diffusers_lora.name == "style" and diffusers_lora.base == kohya_lora.base == "unknown"  # 32-wide tiny

    # Reference: diffusers loading the file by path (it reads lora_alpha from the file's metadata).
    try:
        pipe.load_lora_weights(str(diffusers_path), adapter_name="reference")
        reference = generate(pipe)
    finally:
        pipe.delete_adapters(["reference"])
        pipe.unload_lora_weights()

    through_diffusers_file = with_loras(pipe, (diffusers_path, 1.0))
    through_kohya_file = with_loras(pipe, (kohya_path, 1.0))
    np.testing.assert_allclose(through_diffusers_file, reference, rtol=0, atol=1e-5)
    np.testing.assert_allclose(through_kohya_file, reference, rtol=0, atol=1e-5)
    # The alpha is not decoration: the same weights exported with alpha = rank give another image.
    unscaled_path, _ = save_kohya_copy(diffusers_path, alpha=None)
    assert np.abs(with_loras(pipe, (unscaled_path, 1.0)) - reference).max() > 1e-4


def test_kohya_export_is_the_same_from_peft_or_diffusers_keys(pipe, tmp_path):
    """Fine-tuning exports straight from get_peft_model_state_dict (no prefixes, transformers 5 CLIP names)."""
    unet_sd, text_sd, _, _ = peft_lora(pipe, seed=7)
    from_peft = lora_mod.diffusers_to_kohya({**unet_sd, **text_sd}, alpha=ALPHA)
    _, from_file = save_kohya_copy(save_diffusers_lora(pipe, tmp_path, "same", seed=7), alpha=ALPHA)
    assert from_peft.keys() == from_file.keys()
    assert all(torch.equal(from_peft[k], from_file[k]) for k in from_peft)
    assert len([k for k in from_peft if k.endswith(".alpha")]) == len(unet_sd) // 2 + len(text_sd) // 2
    assert lora_mod.diffusers_to_kohya(from_peft).keys() == from_peft.keys()  # kohya in, kohya out


def test_peft_file_with_adapter_config_matches_diffusers(pipe, tmp_path):
    """The layout a training checkpoint has: get_peft_model_state_dict(unet) as is, alpha in adapter_config.json."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from safetensors.torch import save_file

    unet_sd, _, unet_config, _ = peft_lora(pipe, seed=5)
    save_file(unet_sd, str(tmp_path / "adapter_model.safetensors"))
    LoraConfig(**{k: v for k, v in unet_config.items() if k != "peft_type"}).save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file()
    lora, state_dict = lora_mod.read_lora(tmp_path / "adapter_model.safetensors")
    assert lora.layout == "peft" and all(k.startswith("unet.") for k in state_dict)

    reference_dir = tmp_path / "reference"
    StableDiffusionPipeline.save_lora_weights(
        reference_dir, unet_lora_layers=convert_state_dict_to_diffusers(unet_sd), unet_lora_adapter_metadata=unet_config
    )
    try:
        pipe.load_lora_weights(str(reference_dir / "pytorch_lora_weights.safetensors"), adapter_name="reference")
        reference = generate(pipe)
    finally:
        pipe.delete_adapters(["reference"])
        pipe.unload_lora_weights()
    np.testing.assert_allclose(with_loras(pipe, (tmp_path / "adapter_model.safetensors", 1.0)), reference, atol=1e-5)


def test_base_model_is_read_from_metadata_names_and_widths():
    sd1 = _kohya_pair("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 4, 768, 320)
    assert lora_mod.detect_base(sd1) == "sd15"
    assert lora_mod.detect_base(sd1, {"ss_base_model_version": "sdxl_base_v1-0"}) == "sdxl"
    assert lora_mod.detect_base(sd1, {"ss_v2": "True"}) == "unknown"
    xl = {"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v.lora.down.weight": torch.zeros(4, 2048)}
    assert lora_mod.detect_base(xl) == "sdxl"
    te2 = {"text_encoder_2.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight": torch.zeros(4, 1280)}
    assert lora_mod.detect_base(te2) == "sdxl"
    te1 = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 768)}
    assert lora_mod.detect_base(te1) == "sd15"


def test_pipe_is_restored_after_the_block(pipe, tmp_path):
    before_output = generate(pipe)
    before = model_snapshot(pipe)
    path = save_diffusers_lora(pipe, tmp_path, "style")
    kohya_path, _ = save_kohya_copy(path, alpha=ALPHA)
    entries = [(*lora_mod.read_lora(path), 0.7), (*lora_mod.read_lora(kohya_path), 0.4)]
    with lora_mod.applied_loras(pipe, entries):
        assert len(pipe.get_list_adapters()["unet"]) == 2
        assert np.abs(generate(pipe) - before_output).max() > 1e-3
    assert_same_model(pipe, before)
    with pytest.raises(KeyError), lora_mod.applied_loras(pipe, entries[:1]):
        raise KeyError("the caller failed inside the block")
    assert_same_model(pipe, before)
    np.testing.assert_array_equal(generate(pipe), before_output)


def _kohya_pair(module: str, rank: int, width_in: int, width_out: int) -> dict:
    return {
        f"{module}.lora_down.weight": torch.randn(rank, width_in),
        f"{module}.lora_up.weight": torch.randn(width_out, rank),
        f"{module}.alpha": torch.tensor(float(rank)),
    }


def test_lora_for_another_base_is_a_user_error(pipe, tmp_path):
    from safetensors.torch import save_file

    before_output = generate(pipe)
    before = model_snapshot(pipe)
    sdxl = {
        **_kohya_pair("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 4, 2048, 640),
        **_kohya_pair("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", 4, 768, 768),
        **_kohya_pair("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 4, 1280, 1280),
    }
    save_file(sdxl, str(tmp_path / "xl_style.safetensors"))
    lora, state_dict = lora_mod.read_lora(tmp_path / "xl_style.safetensors")
    assert (lora.layout, lora.base) == ("kohya", "sdxl")
    with (
        pytest.raises(UserError, match=r"xl_style\.safetensors.*different base model \(SDXL\)"),
        lora_mod.applied_loras(pipe, [(lora, state_dict, 1.0)]),
    ):
        pass
    assert_same_model(pipe, before)

    # Names that exist here but widths that do not (an SD-2-sized cross-attention): diffusers' size mismatch.
    odd = _kohya_pair("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 4, 1024, 32)
    save_file(odd, str(tmp_path / "wide.safetensors"))
    lora, state_dict = lora_mod.read_lora(tmp_path / "wide.safetensors")
    assert lora.base == "unknown"
    with (
        pytest.raises(UserError, match=r"wide\.safetensors.*different base model"),
        lora_mod.applied_loras(pipe, [(lora, state_dict, 1.0)]),
    ):
        pass
    assert_same_model(pipe, before)
    np.testing.assert_array_equal(generate(pipe), before_output)


def test_files_that_are_not_safe_loras_are_refused(tmp_path):
    from safetensors.torch import save_file

    renamed = tmp_path / "evil.safetensors"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, renamed)
    with pytest.raises(UserError, match="not a safetensors file"):
        lora_mod.read_lora(renamed)
    with pytest.raises(UserError, match="pickle"):
        lora_mod.read_lora(tmp_path / "old.ckpt")
    save_file({"emb_params": torch.zeros(2, 768)}, str(tmp_path / "emb.safetensors"))
    with pytest.raises(UserError, match="not a LoRA.*embedding"):
        lora_mod.read_lora(tmp_path / "emb.safetensors")
    checkpoint = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1), "cond_stage_model.x": torch.zeros(1)}
    save_file(checkpoint, str(tmp_path / "model.safetensors"))
    with pytest.raises(UserError, match="not a LoRA.*full Stable Diffusion checkpoint"):
        lora_mod.read_lora(tmp_path / "model.safetensors")
    save_file({"lora_unet_a.hada_w1_a": torch.zeros(2, 2)}, str(tmp_path / "loha.safetensors"))
    with pytest.raises(UserError, match="LyCORIS"):
        lora_mod.read_lora(tmp_path / "loha.safetensors")


def test_short_hash_is_a1111_addnet_hash(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "a.safetensors"
    save_file({"x.lora_down.weight": torch.arange(12.0).reshape(3, 4)}, str(path), metadata={"note": "hi"})
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    expected = hashlib.sha256(data[8 + header_len :]).hexdigest()[:12]
    assert lora_mod.lora_short_hash(path) == expected
    # Tensor bytes only: other metadata gives another file but the same hash.
    save_file({"x.lora_down.weight": torch.arange(12.0).reshape(3, 4)}, str(path), metadata={"note": "changed"})
    assert path.read_bytes() != data and lora_mod.lora_short_hash(path) == expected
    # kohya's trainer stores the hash; A1111 (network.py set_hash) takes it first.
    stored = hashlib.sha256(b"stored").hexdigest()
    save_file({"x.lora_down.weight": torch.zeros(1, 1)}, str(path), metadata={"sshs_model_hash": stored})
    assert lora_mod.lora_short_hash(path) == stored[:12]


def test_installed_loras_lists_safetensors_by_stem(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.safetensors", "sub/b.safetensors", "c.ckpt", "sub/a.safetensors"):
        (tmp_path / name).write_bytes(b"")
    assert lora_mod.installed_loras(tmp_path) == {"a": tmp_path / "a.safetensors", "b": tmp_path / "sub/b.safetensors"}
    assert lora_mod.installed_loras(tmp_path / "missing") == {}
