"""Diffusion core: Stable Diffusion generation the way A1111/ComfyUI users run it, shared by the generating tabs.

    from pipelines.diffusion import GenerateRequest, generate
    request = GenerateRequest(prompt="1girl, (silver hair:1.2) <lora:my_style:0.8>", model="models/anime.safetensors",
                              sampler="DPM++ 2M", schedule="Karras", steps=25, cfg_scale=7, seed=42, clip_skip=2)
    output = generate(request)
    output.images[0].save("out.png"); print(output.infotexts[0])

Modules: `models` (pipelines and ControlNets through the core loader, single files, memory presets), `prompts`
(A1111 prompt syntax, long prompts, clip skip, embeddings), `samplers` (A1111 names), `lora`, `embeddings`,
`library` (where LoRAs/embeddings are found by name), `steps` (progress, cancel, previews), `output` (A1111
infotext, hashes), `checkpoint` (writing single files), `generate`, `runs` (recorded runs and re-runs).
Also `python -m pipelines.diffusion generate "prompt" --model tiny:sd15 --out out/`.
Importing this package is cheap: torch and diffusers load on first use.
"""

from __future__ import annotations

from pipelines.core.methods import lazy, lazy_exports
from pipelines.core.runs import register_rerunner

TAB = "Generate"  # the run records of generations made through this package directly (API, CLI, History)

_EXPORTS = {
    "GenerateRequest": "generate", "GenerateOutput": "generate", "ControlUnit": "generate", "generate": "generate",
    "check": "generate", "run_generate": "runs", "encode_prompts": "prompts", "parse_weights": "prompts",
    "make_scheduler": "samplers", "SAMPLERS": "samplers", "SCHEDULE_TYPES": "samplers",
    "load_pipeline": "models", "load_controlnet": "models", "save_single_file": "checkpoint",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


register_rerunner(TAB, lazy(f"{__name__}.runs", "rerun_generate"))
