"""What the diffusion core writes and reads beside its images (issue #7, "Outputs" and "Read and re-run").

Checked against things this code did not produce: an independent A1111-format parser (sd_parsers), A1111's own
infotexts (its parse_generation_parameters docstring and real A1111 outputs users posted), sd-webui-controlnet's
unit parsing rule, a hand-written ComfyUI API graph, and hashlib.
"""

from __future__ import annotations

import hashlib
import json

import gradio as gr
import pytest
from PIL import Image, PngImagePlugin

from pipelines.core import pngmeta
from pipelines.diffusion import output
from tabs import history
from tabs.common import friendly_errors

# ------------------------------------------------------------------------------------------ A1111 infotexts
# The example in A1111's modules/infotext_utils.py (parse_generation_parameters docstring); an old 8-digit hash.
A1111_DOCSTRING = (
    "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse "
    "Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
    "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, "
    "mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"
)
# A1111 v1.6.0 output posted by a user (Clip skip, Denoising strength, VAE, a quoted Lora hashes field).
A1111_V16 = (
    "snowy,winter,(snowfall in background:1.2),(heavyfall:1.15),snow,very snowy,photorealistic,<lora:snowfall:0.8>,\n"
    "Negative prompt: Unrealistic,\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 712934690, Size: 500x375, Model hash: fe7578cb5e, "
    "Model: realisticVisionV60B1_v60B1VAE, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, "
    'Denoising strength: 0.34, Clip skip: 2, Lora hashes: "snowfall: f8324b7af7d9", Version: v1.6.0-2-g4afaaf8a'
)
# A1111 v1.9.4 output (Schedule type as its own field, three LoRAs in one quoted field, SDXL VAE).
A1111_V194 = (
    "magical fantasy forest, epic oak trees, beautiful detailed face, beautiful detailed eyes,  CosmicStyle "
    "<lora:CosmicStyleSDXL:1.2> <lora:TrendCraft_The_Peoples_Style_Detailer-v2.3I-4_15_2025-SDXL:0.88> "
    "<lora:add-detail-xl:0.8>\n"
    "Negative prompt: ugly, bad anatomy, watermark, user name, poorly drawn, simple background\n"
    "Steps: 30, Sampler: DPM++ 3M, Schedule type: Karras, CFG scale: 6.5, Seed: 2921279476, Size: 888x1184, "
    "Model hash: 501235c0cd, Model: jibMixRealisticXL_v180SkinSupreme, VAE hash: f03e48fe77, "
    'VAE: sdxl-vae-fp16-fix.safetensors, Lora hashes: "CosmicStyleSDXL: ccfe5cfff7, '
    'TrendCraft_The_Peoples_Style_Detailer-v2.3I-4_15_2025-SDXL: cb53ea89e2, add-detail-xl: 0d9bd1b873", '
    "Version: v1.9.4"
)
# The settings line of an A1111 v1.10.1 output with two sd-webui-controlnet units (its long prompt shortened).
A1111_CONTROLNET = (
    "a wooden pallet on a warehouse floor\nNegative prompt: lowres, bad anatomy\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1944526060, Size: 512x512, "
    'Model hash: 6d82a674e1, Model: helloobjects_V15evae, ControlNet 0: "Module: canny, Model: '
    "control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: "
    "192.0, Threshold B: 255.0, Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: "
    'ControlNet is more important", ControlNet 1: "Module: softedge_pidinet, Model: control_v11p_sd15_softedge '
    "[a8575a2a], Weight: 1.0, Resize Mode: Crop and Resize, Processor Res: 512, Threshold A: 0.5, Threshold B: 0.5, "
    'Guidance Start: 0.0, Guidance End: 1.0, Pixel Perfect: False, Control Mode: Balanced", Version: v1.10.1'
)


def _png_with_text(path, **chunks: str):
    info = PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (16, 16), (200, 120, 40)).save(path, pnginfo=info)
    return path


def _our_png(path, **overrides):
    settings = output.infotext_settings(**{
        "steps": 28, "sampler": "DPM++ 2M", "schedule": "Karras", "cfg_scale": 7.5, "seed": 3632131843,
        "width": 512, "height": 768, "model_name": "models/anything-v5.safetensors", "model_hash": "6ce0161689ab",
        "clip_skip": 2, "loras": [("flat color", "0123456789ab"), ("detail", "ba9876543210")], **overrides})
    prompt = "masterpiece, 1girl, (silver hair:1.2), <lora:flat color:0.8>\nBREAK night city, neon"
    return pngmeta.save_png(Image.new("RGB", (32, 48), "red"), path, settings, prompt=prompt,
                            negative_prompt="lowres, bad hands"), settings, prompt


# ------------------------------------------------------------------------------------------ writing
def test_infotext_fields_come_in_a1111_order_with_a1111_rules():
    settings = output.infotext_settings(
        steps=20, sampler="Euler a", schedule="Automatic", cfg_scale=7.0, seed=42, width=512, height=768,
        model_name=r"C:\models\anything-v5.safetensors", model_hash="6ce0161689" + "f" * 54, clip_skip=1,
        loras=[("a:b,c", "abcdef012345")], denoising=0.5,
        controlnets=[output.ControlNetInfo("control_v11p_sd15_canny", weight=0.8, guidance_end=0.9, module="canny",
                                           model_hash="d14c016b" + "0" * 56)])
    assert list(settings) == ["Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
                              "Denoising strength", "ControlNet 0", "Lora hashes", "Version"]
    assert "Clip skip" not in settings  # A1111 writes it only when > 1
    assert settings["CFG scale"] == 7 and settings["Size"] == "512x768" and settings["Model"] == "anything-v5"
    assert settings["Model hash"] == "6ce0161689"
    assert settings["Lora hashes"] == "abc: abcdef012345"  # ':' and ',' removed from the name, as A1111 does
    assert settings["ControlNet 0"] == ("Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8, "
                                        "Guidance Start: 0, Guidance End: 0.9")
    text = pngmeta.format_a1111("a cat", "", settings)
    assert 'Lora hashes: "abc: abcdef012345"' in text and 'ControlNet 0: "Module: canny,' in text


def test_png_we_write_parses_with_an_independent_a1111_parser(tmp_path):
    from sd_parsers import ParserManager

    path, settings, prompt = _our_png(tmp_path / "ours.png")
    info = ParserManager().parse(str(path))
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    sampler = info.samplers[0]
    assert info.full_prompt == prompt and info.full_negative_prompt == "lowres, bad hands"
    assert sampler.name == "DPM++ 2M" and sampler.parameters["scheduler"] == "Karras"
    assert sampler.parameters["seed"] == "3632131843" and sampler.parameters["steps"] == "28"
    assert sampler.parameters["cfg_scale"] == "7.5"
    assert sampler.model.name == "anything-v5" and sampler.model.hash == "6ce0161689"
    assert info.metadata["Size"] == "512x768" and info.metadata["Clip skip"] == "2"


def test_png_we_write_reads_back_the_same_through_the_text_alone(tmp_path):
    path, settings, prompt = _our_png(tmp_path / "ours.png")
    with Image.open(path) as image:
        text = image.text["parameters"]
    _png_with_text(tmp_path / "text_only.png", parameters=text)
    read = pngmeta.read_generation_parameters(tmp_path / "text_only.png")
    assert read["source"] == "a1111" and read["prompt"] == prompt
    assert read["settings"] == {key: str(value) for key, value in settings.items()}
    assert output.parse_lora_hashes(read["settings"]["Lora hashes"]) == {"flat color": "0123456789ab",
                                                                         "detail": "ba9876543210"}
    ours = pngmeta.read_generation_parameters(path)  # the JSON chunk wins and keeps the types
    assert ours["source"] == "anime-style-lab" and ours["settings"] == settings


def test_controlnet_units_we_write_parse_by_sd_webui_controlnets_rule():
    unit = output.controlnet_unit_text({"model": "lllyasviel/control_v11p_sd15_lineart", "weight": 0.75,
                                        "guidance_start": 0.1, "guidance_end": 0.8})
    # scripts/infotext.py parse_unit: split on "," then on ": ", every item must give exactly two parts.
    parsed = dict(item.strip().split(": ") for item in unit.split(","))
    assert parsed == {"Module": "none", "Model": "lllyasviel/control_v11p_sd15_lineart", "Weight": "0.75",
                      "Guidance Start": "0.1", "Guidance End": "0.8"}
    assert output.parse_controlnet_unit(unit) == parsed
    short = output.controlnet_unit_text({"model": "c.safetensors", "scale": 1.0, "start": 0.0, "end": 0.5})
    assert short == "Module: none, Model: c, Weight: 1, Guidance Start: 0, Guidance End: 0.5"


# ------------------------------------------------------------------------------------------ hashes
def test_model_hash_is_a1111s_and_comes_from_the_disk_cache_the_second_time(tmp_path, monkeypatch):
    monkeypatch.setenv("ASL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.safetensors"
    model.write_bytes(bytes(range(256)) * 5000)
    reads = []
    real = output._sha256_of_file
    monkeypatch.setattr(output, "_sha256_of_file", lambda path: reads.append(path) or real(path))

    assert output.file_short_hash(model) == hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert output.file_short_hash(model) == hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    assert len(reads) == 1
    cached = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert cached[str(model.resolve())]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    model.write_bytes(b"a different checkpoint")  # new size and mtime: hashed again
    assert output.file_short_hash(model) == hashlib.sha256(b"a different checkpoint").hexdigest()[:10]
    assert len(reads) == 2
    with pytest.raises(output.UserError, match="no such model file"):
        output.file_short_hash(tmp_path)


# ------------------------------------------------------------------------------------------ reading A1111
@pytest.mark.parametrize("text, prompt_start, negative, expected", [
    (A1111_DOCSTRING, "girl with an artist's beret", "ugly, fat, obese",
     {"Steps": "20", "Sampler": "Euler a", "CFG scale": "7", "Seed": "965400086", "Size": "512x512",
      "Model hash": "45dee52b"}),
    (A1111_V16, "snowy,winter,(snowfall in background:1.2)", "Unrealistic,",
     {"Sampler": "DPM++ 2M Karras", "Seed": "712934690", "Size": "500x375", "Model hash": "fe7578cb5e",
      "Model": "realisticVisionV60B1_v60B1VAE", "Denoising strength": "0.34", "Clip skip": "2",
      "Lora hashes": "snowfall: f8324b7af7d9", "VAE": "vae-ft-mse-840000-ema-pruned.safetensors",
      "Version": "v1.6.0-2-g4afaaf8a"}),
    (A1111_V194, "magical fantasy forest", "ugly, bad anatomy",
     {"Steps": "30", "Sampler": "DPM++ 3M", "Schedule type": "Karras", "CFG scale": "6.5", "Size": "888x1184",
      "Model": "jibMixRealisticXL_v180SkinSupreme", "Version": "v1.9.4"}),
])
def test_a1111s_own_infotexts_read_to_the_right_fields(tmp_path, text, prompt_start, negative, expected):
    read = pngmeta.read_generation_parameters(_png_with_text(tmp_path / "a1111.png", parameters=text))
    assert read["source"] == "a1111"
    assert read["prompt"].startswith(prompt_start) and "Negative prompt" not in read["prompt"]
    assert read["negative_prompt"].startswith(negative) and "Steps:" not in read["negative_prompt"]
    assert {key: read["settings"].get(key) for key in expected} == expected


def test_a1111_quoted_lora_hashes_multiline_prompt_and_controlnet_units(tmp_path):
    read = pngmeta.read_generation_parameters(_png_with_text(tmp_path / "a.png", parameters=A1111_V194))
    assert output.parse_lora_hashes(read["settings"]["Lora hashes"]) == {
        "CosmicStyleSDXL": "ccfe5cfff7", "TrendCraft_The_Peoples_Style_Detailer-v2.3I-4_15_2025-SDXL": "cb53ea89e2",
        "add-detail-xl": "0d9bd1b873"}
    # A1111 keeps a multi-line prompt's lines (joined with newlines) until "Negative prompt:".
    lines = A1111_DOCSTRING.split("\n")
    multi = "\n".join([lines[0][:40], lines[0][40:], *lines[1:]])
    read = pngmeta.read_generation_parameters(_png_with_text(tmp_path / "m.png", parameters=multi))
    assert read["prompt"] == lines[0][:40].strip() + "\n" + lines[0][40:].strip()
    read = pngmeta.read_generation_parameters(_png_with_text(tmp_path / "c.png", parameters=A1111_CONTROLNET))
    unit = output.parse_controlnet_unit(read["settings"]["ControlNet 1"])
    assert unit["Module"] == "softedge_pidinet" and unit["Model"] == "control_v11p_sd15_softedge [a8575a2a]"
    assert unit["Guidance End"] == "1.0" and read["settings"]["Version"] == "v1.10.1"


def test_a1111_jpeg_exif_user_comment_is_read(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + A1111_V16.encode("utf-16-be")  # piexif's form, as A1111 writes
    Image.new("RGB", (16, 16)).save(tmp_path / "a.jpg", exif=exif)
    read = pngmeta.read_generation_parameters(tmp_path / "a.jpg")
    assert read["source"] == "a1111" and read["settings"]["Seed"] == "712934690"


# ------------------------------------------------------------------------------------------ reading ComfyUI
# API format as ComfyUI stores it in the `prompt` chunk: the default text-to-image graph plus a LoRA, clip skip 2,
# a ControlNet on the conditioning and a second (hires) KSampler.
COMFY_GRAPH = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 156680208700286, "steps": 20, "cfg": 8.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
        "denoise": 1.0, "model": ["10", 0], "positive": ["15", 0], "negative": ["15", 1], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anime\\anything-v5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "masterpiece, 1girl, silver hair", "clip": ["11", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres, bad hands", "clip": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "10": {"class_type": "LoraLoader", "inputs": {
        "lora_name": "style/flat_color.safetensors", "strength_model": 0.8, "strength_clip": 0.7,
        "model": ["4", 0], "clip": ["4", 1]}},
    "11": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}},
    "12": {"class_type": "LatentUpscaleBy", "inputs": {"upscale_method": "nearest-exact", "scale_by": 1.5,
                                                       "samples": ["3", 0]}},
    "13": {"class_type": "KSampler", "inputs": {
        "seed": 1, "steps": 12, "cfg": 8.0, "sampler_name": "euler_ancestral", "scheduler": "normal",
        "denoise": 0.5, "model": ["10", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["12", 0]}},
    "14": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "control_v11p_sd15_lineart.pth"}},
    "15": {"class_type": "ControlNetApplyAdvanced", "inputs": {
        "strength": 0.9, "start_percent": 0.0, "end_percent": 0.8, "positive": ["6", 0], "negative": ["7", 0],
        "control_net": ["14", 0], "image": ["16", 0]}},
    "16": {"class_type": "LoadImage", "inputs": {"image": "lineart.png"}},
}


def _comfy_png(path, graph=COMFY_GRAPH):
    return _png_with_text(path, prompt=json.dumps(graph), workflow=json.dumps({"nodes": [], "links": []}))


def test_comfyui_graph_is_read_to_a1111_fields(tmp_path):
    read = pngmeta.read_generation_parameters(_comfy_png(tmp_path / "comfy.png"))
    assert read["source"] == "comfyui"
    assert read["prompt"] == "masterpiece, 1girl, silver hair" and read["negative_prompt"] == "lowres, bad hands"
    settings = read["settings"]
    assert settings["Seed"] == 156680208700286 and settings["Steps"] == 20 and settings["CFG scale"] == 8.0
    assert settings["Sampler"] == "DPM++ 2M" and settings["Schedule type"] == "Karras"
    assert settings["ComfyUI sampler"] == "dpmpp_2m" and settings["ComfyUI scheduler"] == "karras"
    assert settings["Size"] == "512x768" and settings["Model"] == "anything-v5"
    assert settings["ComfyUI checkpoint"] == "anime\\anything-v5.safetensors"
    assert settings["Clip skip"] == 2 and "Denoising strength" not in settings  # first pass, full denoise
    assert read["loras"] == [{"name": "flat_color", "strength_model": 0.8, "strength_clip": 0.7}]
    assert output.parse_controlnet_unit(settings["ControlNet 0"]) == {
        "Module": "none", "Model": "control_v11p_sd15_lineart", "Weight": "0.9", "Guidance Start": "0.0",
        "Guidance End": "0.8"}


def test_comfyui_ksampler_advanced_and_euler_ancestral(tmp_path):
    graph = {
        "1": {"class_type": "KSamplerAdvanced", "inputs": {
            "noise_seed": 7, "steps": 25, "cfg": 6.5, "sampler_name": "euler_ancestral", "scheduler": "normal",
            "add_noise": "enable", "start_at_step": 0, "end_at_step": 10000, "model": ["2", 0],
            "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0]}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "counterfeit.safetensors"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 640, "batch_size": 2}},
    }
    read = pngmeta.read_generation_parameters(_comfy_png(tmp_path / "adv.png", graph))
    assert read["prompt"] == "a fox" and read["negative_prompt"] == ""
    assert read["settings"]["Seed"] == 7 and read["settings"]["Sampler"] == "Euler a"
    assert read["settings"]["Schedule type"] == "Normal" and read["settings"]["Size"] == "640x640"
    assert "Clip skip" not in read["settings"] and read["loras"] == []


# ------------------------------------------------------------------------------------------ bad files
def test_files_without_readable_parameters_get_plain_messages(tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    with pytest.raises(pngmeta.MetadataReadError, match="this PNG has no generation parameters we can read"):
        pngmeta.read_generation_parameters(plain)
    text_file = tmp_path / "notes.txt"
    text_file.write_text("Steps: 20, Sampler: Euler a, Seed: 1")
    with pytest.raises(pngmeta.MetadataReadError, match="notes.txt is not an image we can read"):
        pngmeta.read_generation_parameters(text_file)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.raises(pngmeta.MetadataReadError, match="broken.png"):
        pngmeta.read_generation_parameters(broken)
    cut = tmp_path / "cut.png"
    Image.effect_noise((64, 64), 50).save(cut)
    cut.write_bytes(cut.read_bytes()[:200])  # the pixel data stops short: PIL fails while looking for text after it
    with pytest.raises(pngmeta.MetadataReadError, match="cut.png is damaged or incomplete"):
        pngmeta.read_generation_parameters(cut)
    huge = _png_with_text(tmp_path / "huge.png", parameters="x" * (pngmeta.MAX_METADATA_CHARS + 1))
    with pytest.raises(pngmeta.MetadataReadError, match="too long"):
        pngmeta.read_generation_parameters(huge)
    bad_graph = _png_with_text(tmp_path / "g.png", prompt='{"1": {"class_type": "SaveImage", "inputs": {}}}')
    with pytest.raises(pngmeta.MetadataReadError, match="no KSampler"):
        pngmeta.read_generation_parameters(bad_graph)


# ------------------------------------------------------------------------------------------ History tab
def test_history_reads_ours_a1111_and_comfyui_pngs(tmp_path):
    path, settings, prompt = _our_png(tmp_path / "ours.png")
    rows, read_prompt, negative, raw, state = history.read_png(str(path))
    assert rows[0] == ["Made with", "Anime Style Lab"] and ["Seed", "3632131843"] in rows
    assert read_prompt == prompt and negative == "lowres, bad hands" and "asl_json" in raw
    assert state["settings"] == settings  # what "Open in a generating tab" will take

    rows, read_prompt, negative, raw, state = history.read_png(
        str(_png_with_text(tmp_path / "a.png", parameters=A1111_V16)))
    assert ["Clip skip", "2"] in rows and negative == "Unrealistic," and raw == {"parameters": A1111_V16}

    rows, read_prompt, negative, raw, state = history.read_png(str(_comfy_png(tmp_path / "c.png")))
    assert rows[0] == ["Made with", "ComfyUI graph"] and ["Seed", "156680208700286"] in rows
    assert read_prompt == "masterpiece, 1girl, silver hair" and state["source"] == "comfyui"
    assert history.read_png(None) == ([], "", "", {}, None)


def test_history_read_png_says_plainly_when_a_file_is_not_an_image(tmp_path, caplog):
    text_file = tmp_path / "prompt.txt"
    text_file.write_text("masterpiece, 1girl")
    with caplog.at_level("ERROR"), pytest.raises(gr.Error, match="prompt.txt is not an image we can read"):
        friendly_errors(history.read_png)(str(text_file))
    assert "Unexpected error" not in caplog.text  # a user mistake, not a bug in the log


def test_read_png_endpoint_is_outside_the_model_slot():
    with gr.Blocks() as demo:
        history.build()
    events = {fn.api_name: fn for fn in demo.fns.values()}
    assert "read_png" in events and events["read_png"].concurrency_id != "model"
