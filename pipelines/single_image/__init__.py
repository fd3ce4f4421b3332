"""Single-image variation (seed 004): a multi-scale diffusion model trained on one image (building on SinDDM), with
BLIP prompts chosen by CLIP, a prompt contrastive loss and text edits.

    from pipelines.single_image import TrainConfig, train, VariationRequest, variations
    result = train(TrainConfig(backbone="fcn", steps=2000), "photo.png")   # cached by the image's hash
    output = variations(result.model_path, VariationRequest(count=4, seed=1))
    output.images[0].save("variation.png")

Modules: `model.py` (scales, forward process, the FCN and U-Net backbones), `train.py` (the resumable job, LM
milestones), `sample.py` (variations, per-scale images, text edits in a region), `gpnn.py` (GPNN: patch
nearest-neighbour variations with no training, the bar to beat), `text.py` (BLIP captions, CLIP
scores, P*/P+/P−, contrastive loss, prompt augmentation), `runs.py` (recorded runs, ablation), `__main__.py` (CLI).
Importing this package is cheap: torch loads on first use.
"""

from __future__ import annotations

from pipelines.core.loader import register_architecture
from pipelines.core.methods import MethodCard, Reference, lazy, lazy_exports
from pipelines.core.runs import register_rerunner

TAB = "Single-image variation"
ARCHITECTURE = "single_image_multiscale_diffusion"  # = model.ARCHITECTURE, named here so registering needs no torch

_EXPORTS = {
    "ModelConfig": "model", "MultiScaleDenoiser": "model", "scale_sizes": "model", "load_model_file": "model",
    "TrainConfig": "train", "TrainResult": "train", "train": "train", "estimate_seconds": "train",
    "prepare_image": "train",
    "VariationRequest": "sample", "EditRequest": "sample", "SampleOutput": "sample", "variations": "sample",
    "edit": "sample", "reconstruct": "sample",
    "caption_prompts": "text", "PromptSet": "text", "augment_prompt": "text", "contrastive_loss": "text",
    "run_variations": "runs", "run_edit": "runs", "run_ablation": "runs", "shipped_model": "runs",
    "GPNNSettings": "gpnn", "gpnn_variations": "gpnn",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)


METHOD_CARD = MethodCard(
    name="Single-image variation: a multi-scale diffusion model trained on one image, with prompt learning",
    tab=TAB,
    summary=(
        "Seed 004 (Park et al., IEEE Access 2024) trains a diffusion model on ONE image, at several scales from "
        "about 25 px up, as SinDDM does: at each scale the network learns to restore the image from a blurred, "
        "noisy version of it, so it learns the image's patches rather than the image. Sampling from pure noise at "
        "the coarsest scale and refining scale by scale gives new images with the same textures and objects in "
        "other arrangements. The seed adds a U-Net with cross-attention to a caption (BLIP writes several, CLIP "
        "picks the closest), a contrastive loss that pulls the image toward the better captions and away from the "
        "worse ones, and text edits guided by CLIP. The model is trained here, from scratch, in minutes on a CPU."
    ),
    inputs="one image (any size: trained at up to 128×128-equivalent on a CPU), optionally an edit prompt and region",
    model="a small denoiser shared by all scales, trained on random windows of each (so it composes new layouts "
          "instead of memorising the photo's): SinDDM's fully convolutional net (53 px receptive field; "
          "SinDDM's is 35) or the seed's shallow U-Net with cross-attention to the prompt's CLIP tokens; "
          "100-step cosine diffusion",
    output="variations (any count, seed, start scale, output size), the image at each scale, text edits, metrics",
    good_at=("textures, landscapes and scenes made of repeated parts (rocks, trees, buildings, coffee beans)",
             "controlling how far variations stray: the load milestone (earlier weights = more varied) and the "
             "start scale (start finer = keep the layout)",
             "needing no pretrained generator: it trains on your image, on a CPU, in minutes",
             "sharp variations on a CPU budget: with 'Finer detail from: the photo's own patches', the model only "
             "invents the layout and GPNN draws it with the photo's full-resolution patches"),
    bad_at=("a single object with a precise shape (faces, characters): patches get rearranged",
            "fine detail from the model alone: in minutes on a CPU its finest scale learns little of the photo's "
            "texture (the shipped model, 24,000 steps in 6 min: patch distance 3.5× GPNN's; even ten minutes on "
            "that scale alone stay above 1.3× on GPNN's own layouts), so its variations are softer than the photo",
            "text edits need a real CLIP model; with this offline build's random-weight CLIP they are not edits",
            "resolution: trained at about 128×128 on a CPU; larger outputs are the same patches at a larger canvas"),
    references=(
        Reference("Park et al., Prompt-Based Learning for Image Variation Using Single Image Multi-Scale Diffusion "
                  "Models, IEEE Access 2024", "https://ieeexplore.ieee.org/search/searchresult.jsp?queryText="
                  "Prompt-Based%20Learning%20for%20Image%20Variation%20Using%20Single%20Image%20Multi-Scale"),
        Reference("Kulikov et al., SinDDM: A Single Image Denoising Diffusion Model, ICML 2023",
                  "https://arxiv.org/abs/2211.16582"),
        Reference("Granot et al., Drop the GAN: In Defense of Patches Nearest Neighbors as Single Image Generative "
                  "Models, CVPR 2022 (GPNN, the no-training bar)", "https://arxiv.org/abs/2103.15545"),
        Reference("Li et al., BLIP, ICML 2022", "https://arxiv.org/abs/2201.12086"),
        Reference("Radford et al., CLIP, ICML 2021", "https://arxiv.org/abs/2103.00020"),
    ),
    seed_document="004",
)

register_architecture(ARCHITECTURE, lazy(f"{__name__}.model", "build"))
register_rerunner(TAB, lazy(f"{__name__}.runs", "rerun"))


def unavailable_models() -> list[tuple[str, str]]:
    """For the app's status banner: the real BLIP/CLIP when offline and not cached (no network call). Variations
    need neither: only BLIP prompts, the contrastive loss, text edits and CLIP-I do."""
    from pipelines.core.network import known_offline

    status = known_offline()
    if status is None or not status.offline:
        return []
    from huggingface_hub import try_to_load_from_cache

    from .text import DEFAULT_BLIP, DEFAULT_CLIP

    missing = [name for name in (DEFAULT_BLIP, DEFAULT_CLIP)
               if not isinstance(try_to_load_from_cache(name, "config.json"), str)]
    if not missing:
        return []
    return [(f"Single-image variation's {' and '.join(missing)}",
             f"not downloaded yet, and {status.reason}; variations work, BLIP prompts and text edits need them "
             "(or the tiny test models, whose output is noise)")]
