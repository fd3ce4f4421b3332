"""The step hook: the one place where progress, cancelling, previews and per-step state meet.

Pass `hook(...)` as diffusers' `callback_on_step_end`. It raises `JobCancelled` when the user cancels (diffusers'
`interrupt` would return half-denoised images silently), reports progress, moves a per-call state object's
`step` (sampler steps) and `unet_pass` (UNet passes) on (e.g. storyboard's FrameMemory), and every
`preview_every` steps hands cheap RGB previews of the latents to `on_preview`. It returns `{}` because diffusers
expects a dict of tensors to replace.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipelines.core.jobs import CancelToken, ProgressCallback

if TYPE_CHECKING:
    import torch
    from PIL import Image

PreviewCallback = Callable[[int, list["Image.Image"]], None]
LatentsCallback = Callable[[int, "torch.Tensor"], None]  # (steps done, the batch's latents after that step)

# Latent channels -> RGB, least-squares fits published with ComfyUI's latent previews (latent_formats.py); a
# fraction of a millisecond instead of a VAE decode. Rough colours and shapes, which is all a preview needs.
SD15_LATENT_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                   (-0.2120, -0.2616, -0.7177))
SDXL_LATENT_RGB = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                   (-0.3165, -0.2492, -0.2188))
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)


def latents_to_rgb(latents: torch.Tensor, sdxl: bool = False, size: int | None = None) -> list[Image.Image]:
    """Preview images from a [B, 4, h, w] latent batch (upscaled to `size` px on the long side if given)."""
    import torch
    from PIL import Image

    factors = torch.tensor(SDXL_LATENT_RGB if sdxl else SD15_LATENT_RGB, dtype=torch.float32)
    bias = torch.tensor(SDXL_LATENT_RGB_BIAS if sdxl else (0.0, 0.0, 0.0), dtype=torch.float32)
    rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu(), factors) + bias
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    images = [Image.fromarray(array) for array in pixels]
    if size:
        scale = size / max(images[0].size)
        images = [image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
                  for image in images]
    return images


def hook(callback: ProgressCallback | None = None, cancel: CancelToken | None = None, state: Any = None, *,
         total: int | None = None, preview_every: int = 0, on_preview: PreviewCallback | None = None,
         sdxl: bool = False, message: str = "Denoising",
         on_latents: LatentsCallback | None = None) -> Callable[..., dict]:
    """A `callback_on_step_end` for one call (diffusers calls it after every UNet pass). `state.step`, when present,
    is set to the sampler steps done and `state.unet_pass` to the UNet passes done: second-order samplers (Heun,
    DPM2, DPM++ SDE) make two passes a step, and a step is done when their scheduler is back in its first order.
    `on_latents` sees the latents after every pass (for methods that compare runs step by step)."""
    sampler_steps = 0  # this call's; the hook is made per call

    def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict:
        nonlocal sampler_steps
        if cancel is not None:
            cancel.raise_if_cancelled()
        done = step + 1
        if getattr(getattr(pipe, "scheduler", None), "state_in_first_order", True):
            sampler_steps += 1
        if state is not None and hasattr(state, "step"):
            state.step = sampler_steps
        if state is not None and hasattr(state, "unet_pass"):
            state.unet_pass = done
        steps = total or getattr(pipe, "num_timesteps", None) or done
        if callback is not None:
            callback(done, steps, f"{message}: step {done}/{steps}")
        if on_latents is not None and "latents" in tensors:
            on_latents(done, tensors["latents"].detach().clone())
        if on_preview is not None and preview_every > 0 and done % preview_every == 0 and "latents" in tensors:
            on_preview(done, latents_to_rgb(tensors["latents"], sdxl=sdxl, size=256))
        return {}

    return on_step_end
