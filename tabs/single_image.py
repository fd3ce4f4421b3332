"""Single-image variation tab (seed 004): upload one image, train a multi-scale diffusion model on it in the
background (progress, live preview, cancel, resume), then make variations, text edits and the ablation.

On first open the model the project trained on scikit-image's `coffee` photo is loaded, so variations work at once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task
from pipelines.single_image.request import (
    DETAIL_GPNN,
    DETAIL_MODEL,
    MAX_COUNT,
    MAX_SIZE_MULTIPLIER,
    MAX_START_SCALES,
    model_header,
)
from pipelines.single_image.runs import ABLATION_CHOICES, GPNN_VARIANT, shipped_card, shipped_model

from .common import (
    MODEL_WORK,
    SEED_INFO,
    friendly_errors,
    image_editor_input,
    image_input,
    keeps_results,
    progress_callback,
    worker_stream,
)

BLIP_CHOICES = [("BLIP base (Salesforce/blip-image-captioning-base)", "Salesforce/blip-image-captioning-base"),
                ("BLIP — tiny test model, random weights: captions are noise", "tiny:blip")]
CLIP_CHOICES = [("CLIP ViT-B/32 (openai/clip-vit-base-patch32)", "openai/clip-vit-base-patch32"),
                ("CLIP — tiny test model, random weights: scores are noise", "tiny:clip")]
BACKBONE_CHOICES = [("SinDDM fully convolutional (baseline, no text)", "fcn"),
                    ("Paper 004's U-Net, which also reads a prompt", "unet")]
TEXT_CHOICES = [("no text", "none"), ("my prompt (arbitrary)", "arbitrary"),
                ("BLIP captions, CLIP's pick (P*)", "blip")]
DETAIL_CHOICES = [("the model, at every scale", DETAIL_MODEL),
                  ("the photo's own patches (GPNN draws the model's layout)", DETAIL_GPNN)]


def _job_id(kind: str, request: gr.Request | None) -> str:
    return f"single_image_{kind}:{getattr(request, 'session_hash', None) or 'no-session'}"


def _default_model() -> str:
    path = shipped_model()
    return str(path) if path else ""


def model_size(model_path: str) -> tuple[int, int]:
    """(width, height) the model was trained at (its finest scale), from the file's header (no torch)."""
    height, width = model_header(model_path)["config"]["sizes"][-1]
    return int(width), int(height)


def model_label(model_path: str) -> str:
    if not model_path:
        return "**No model yet.** Upload an image and press Train."
    path = Path(model_path)
    if shipped_model() is not None and path == shipped_model():
        card = shipped_card()
        size = model_size(model_path)
        return (f"**Model:** the project's own model, trained on scikit-image's *coffee* photo "
                f"(at {size[0]}×{size[1]}, {card.get('steps', '?')} steps, seed "
                f"{card.get('config', {}).get('seed', 0)}; command and figures in assets/single_image/). "
                "Upload your own image to train on it.")
    from pipelines.single_image.runs import model_name

    metadata = model_header(str(path))
    text = metadata.get("prompt")
    name = model_name(path)
    note = ""
    if metadata.get("text_encoder_test_model") == "true":
        note = " ⚠️ Its text came from a test CLIP with random weights."
    return ((f"**Model “{name}”:**" if name else "**Model:**")
            + f" trained on your {metadata.get('trained_on', 'image')}, {metadata.get('steps', '?')} steps"
            + (f", conditioned on “{text}”" if text else "") + "." + note)


def _config(backbone: str, text_mode: str, prompt: str, contrastive: bool, steps: int, width: int, seed: int,
            blip: str, clip: str) -> Any:
    from pipelines.single_image.train import TrainConfig

    return TrainConfig(backbone=backbone, text=text_mode, prompt=prompt or "", contrastive=bool(contrastive),
                       steps=int(steps), width=int(width), seed=int(seed), blip_model=blip, clip_model=clip)


# Seconds per training step by (size, backbone, width, batch, precision): probing takes seconds, so a slider
# change that alters none of these (steps, seed, prompt) reuses the last probe. Timings only, no user data.
_PROBED: dict[tuple, float] = {}


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"


def estimate(image: str | None, backbone: str, text_mode: str, prompt: str, contrastive: bool, steps: int,
             width: int, seed: int, blip: str, clip: str) -> str:
    """The time estimate shown before training (and what the upload will be trained at): a few real training
    steps are timed on this machine as it is now, then scaled to the step count."""
    if not image:
        return "Upload an image to see how long training will take."
    from pipelines.single_image.train import measure_seconds_per_step, prepare_image

    try:
        prepared, notes = prepare_image(image)
        config = _config(backbone, "none", "", False, steps, width, seed, blip, clip)
        key = (prepared.size, config.backbone, config.width, config.batch_size, config.precision)
        if key not in _PROBED:
            _PROBED[key] = measure_seconds_per_step(prepared, config, probe_steps=20)
    except Exception as err:  # noqa: BLE001 - shown as text; the Train button reports it properly
        return f"⚠️ {err}"
    seconds = _PROBED[key] * int(steps)
    extra = " plus loading BLIP and CLIP" if text_mode == "blip" else ""
    return (f"Trains at {prepared.width}×{prepared.height}: about **{duration(seconds)}**{extra} on this machine "
            f"now ({int(steps)} steps at {_PROBED[key]:.3f} s each, timed on a short trial run). " + " ".join(notes))


@gpu_task(duration=600)
def train_model(image: str | None, backbone: str, text_mode: str, prompt: str, contrastive: bool, steps: int,
                width: int, seed: int, blip: str, clip: str, name: str = "", request: gr.Request = None,
                progress=gr.Progress()):
    """Train in a worker thread; yield (status, preview, model path, label, captions) as it goes."""
    from pipelines.core.errors import UserError
    from pipelines.core.jobs import JOBS
    from pipelines.single_image.runs import run_train

    if not image:
        raise UserError("Upload an image first.")
    config = _config(backbone, text_mode, prompt, contrastive, steps, width, seed, blip, clip)
    config.check()
    job_id, token = JOBS.start(_job_id("train", request))
    report = progress_callback(progress)
    started = time.perf_counter()  # one clock for the whole run: the status shows it at every update

    def work(put: Any) -> Any:
        return run_train(config, image, callback=report, cancel=token, preview=lambda *update: put(update),
                         name=name or default_name(image))

    def present(update: tuple[int, Any]) -> tuple[Any, ...]:
        index, picture = update
        return (f"Training… milestone {index}/10 reached, {duration(time.perf_counter() - started)} elapsed "
                "(preview: reconstruction from the coarsest scale).", picture, gr.update(), gr.update(), gr.update())

    record, result = yield from worker_stream(work, present, job_id=job_id, token=token, name="single-image-train")
    captions = result.prompts.table() if result.prompts is not None else []
    path = str(result.model_path)
    yield (result.summary + f" (run {record.id})", gr.update(), path, model_label(path),
           gr.update(value=captions, visible=bool(captions)))


def default_name(image: str | None) -> str:
    """A model's default name: the uploaded file's name without its extension."""
    return Path(image).stem if image else ""


def cancel_training(request: gr.Request = None) -> str:
    from pipelines.core.jobs import JOBS

    if JOBS.cancel(_job_id("train", request)):
        return "Cancelling after the current step; the checkpoint is kept: press Train again to resume."
    return "Nothing is training."


def _require_model(model_path: str) -> str:
    from pipelines.core.errors import UserError

    if not model_path or not Path(model_path).exists():
        raise UserError("There is no model yet: train one on your image first.")
    return model_path


@gpu_task
def make_variations(model_path: str, count: int, seed: int, start_scale: int, width_scale: float,
                    height_scale: float, milestone: int, detail: str = DETAIL_MODEL,
                    progress=gr.Progress()) -> tuple[list, list, str]:
    from pipelines.single_image.runs import run_variations
    from pipelines.single_image.sample import VariationRequest

    request = VariationRequest(count=int(count), seed=int(seed), start_scale=int(start_scale),
                               width_scale=float(width_scale), height_scale=float(height_scale),
                               milestone=int(milestone), detail=detail or DETAIL_MODEL)
    record, output = run_variations(_require_model(model_path), request, callback=progress_callback(progress))
    per_scale = [(image, f"scale {index}") for index, image in enumerate(output.per_scale[0])]
    seeds = ", ".join(str(seed) for seed in output.seeds)
    return (list(zip(output.images, [f"seed {seed}" for seed in output.seeds], strict=True)), per_scale,
            f"{len(output.images)} variations in {output.seconds:.1f} s (seeds {seeds}; run {record.id}). "
            + " ".join(output.notes))


def model_source(model_path: str) -> Any:
    """The image the model was trained on, shown beside its variations (None when there is no model)."""
    if not model_path or not Path(model_path).exists():
        return None
    from pipelines.single_image.sample import load
    from pipelines.single_image.train import tensor_image

    return tensor_image(load(model_path).source_image())


@gpu_task
def make_gpnn_variations(image: str | None, model_path: str, count: int, seed: int, iterations: int,
                         progress=gr.Progress()) -> tuple[list, list, str, Any]:
    """GPNN (no training) on the uploaded image, or on the current model's training image when none is uploaded."""
    from pipelines.core.errors import UserError
    from pipelines.single_image.gpnn import GPNNSettings
    from pipelines.single_image.runs import run_gpnn
    from pipelines.single_image.train import prepare_image

    source = image or model_source(model_path)
    if source is None:
        raise UserError("Upload an image first: GPNN makes variations of it with no training.")
    record, output = run_gpnn(source, int(count), int(seed), GPNNSettings(iterations=int(iterations)),
                              callback=progress_callback(progress))
    per_scale = [(picture, f"scale {index}") for index, picture in enumerate(output.per_scale[0])]
    seeds = ", ".join(str(value) for value in output.seeds)
    return (list(zip(output.images, [f"GPNN seed {value}" for value in output.seeds], strict=True)), per_scale,
            f"{len(output.images)} GPNN variations in {output.seconds:.1f} s, no training (seeds {seeds}; "
            f"run {record.id}). " + " ".join(output.notes), prepare_image(source)[0])


def show_augmentations(prompt: str) -> str:
    from pipelines.single_image.text import augment_prompt

    variants = augment_prompt(prompt or "", 4)
    return "\n".join(variants) if variants else ""


def _region(editor_value: Any) -> Any:
    """The drawn region of the editor (alpha of its strokes layer), or None when nothing is drawn."""
    import numpy as np

    if not isinstance(editor_value, dict) or not editor_value.get("layers"):
        return None
    layers = [np.asarray(layer) for layer in editor_value["layers"] if layer is not None]
    if not layers:
        return None
    alpha = np.max([layer[..., 3] if layer.ndim == 3 and layer.shape[-1] == 4 else layer.max(-1) if layer.ndim == 3
                    else layer for layer in layers], axis=0)
    return alpha if alpha.any() else None


def source_for_editor(model_path: str) -> Any:
    """The model's training image, at its exact size, as the region editor's background."""
    from pipelines.single_image.sample import load
    from pipelines.single_image.train import tensor_image

    net = load(_require_model(model_path))
    return {"background": tensor_image(net.source_image()), "layers": [], "composite": None}


def _clip_problem(clip: str, model_path: str) -> str | None:
    """Why the edit's CLIP cannot load here, with what to do instead (None when it loads)."""
    from pipelines.core.loader import ModelLoadError
    from pipelines.single_image.request import model_header
    from pipelines.single_image.text import DEFAULT_CLIP, ClipModel

    name = clip or model_header(model_path).get("text_encoder") or DEFAULT_CLIP
    try:
        ClipModel(name)
    except (ModelLoadError, OSError) as err:
        others = [label for label, value in CLIP_CHOICES if value != name]
        return (f"⚠️ The text edit needs CLIP, and **{name}** cannot be loaded here: {err} "
                f"Choose another CLIP model ({'; '.join(others)}), or download {name} where the host allows it "
                "(huggingface-cli download " + name + "). Nothing else on the page was changed.")
    return None


@gpu_task
def make_edit(model_path: str, prompt: str, guidance: float, fill: float, seed: int, milestone: int,
              region: Any, clip: str, progress=gr.Progress()) -> tuple[Any, Any, str]:
    """The edit beside the image it started from (before / after); an absent CLIP is answered in the status line,
    leaving the gallery and the prompts box as they were."""
    from pipelines.single_image.runs import run_edit
    from pipelines.single_image.sample import EditRequest

    problem = _clip_problem(clip, _require_model(model_path))
    if problem:
        return gr.update(), gr.update(), problem
    request = EditRequest(prompt=prompt or "", seed=int(seed), guidance=float(guidance), fill=float(fill),
                          milestone=int(milestone), mask=_region(region), clip_model=clip)
    record, output = run_edit(model_path, request, callback=progress_callback(progress))
    notes = " ".join(output.notes)
    before = [(model_source(model_path), "before")]
    after = [(image, f"after (seed {seed_})") for image, seed_ in zip(output.images, output.seeds, strict=True)]
    return (before + after, "\n".join(output.prompts),
            f"Edit in {output.seconds:.1f} s (run {record.id}). {notes}".strip())


@gpu_task(duration=600)
def _readable(value: Any) -> Any:
    """Numbers as the Metrics tables show them (pipelines.metrics.stats.readable_number); text stays."""
    from pipelines.metrics.stats import readable_number

    return readable_number(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def run_ablation_table(image: str | None, variants: list[str], steps: int, count: int, seed: int, prompt: str,
                       blip: str, clip: str, progress=gr.Progress()) -> tuple[list, list, str]:
    from pipelines.core.errors import UserError
    from pipelines.single_image.runs import run_ablation

    if not image:
        raise UserError("Upload an image first: the ablation trains every variant on it.")
    result = run_ablation(image, list(variants or []), steps=int(steps), count=int(count), seed=int(seed),
                          prompt=prompt or "a photo", blip_model=blip, clip_model=clip,
                          callback=progress_callback(progress))
    columns = ["variant", "patch_nn", "diversity", "train_seconds", "seconds_per_variation", "clip_i", "ssim", "psnr",
               "lpips", "nima", "lpips_diversity"]
    rows = [[_readable(row.get(column)) for column in columns] for row in result.rows]
    if result.test_models:  # a random-weight network's score is never shown as a real one
        clip_column = columns.index("clip_i")
        for row in rows:
            row[clip_column] = None if row[clip_column] is None else f"{row[clip_column]} (test CLIP: not a real score)"
    gallery = [(images[0], name) for name, images in result.images.items()]
    notes = [*result.warnings, *(f"{key}: {why}" for key, why in result.skipped.items())]
    return rows, gallery, "\n\n".join(notes) or "All metrics computed."


def build(tab: gr.Tab | None = None) -> None:
    gr.Markdown("Train a diffusion model on **one image** (a few minutes on a CPU), then make **variations** of it "
                "and **text edits**. Paper 004, building on SinDDM; see About.")
    model_path = gr.State(_default_model())
    label = gr.Markdown(model_label(_default_model()))
    with gr.Row():
        with gr.Column():
            image = image_input("Your image", elem_id="si-image")
            estimate_text = gr.Markdown("Upload an image to see how long training will take.")
            with gr.Accordion("Training settings", open=False, elem_id="si-settings"):
                backbone = gr.Radio(BACKBONE_CHOICES, value="fcn", label="Backbone",
                                    info="The kind of network trained on your image: SinDDM's (no text) or paper "
                                         "004's, which can read a prompt")
                text_mode = gr.Radio(TEXT_CHOICES, value="none", label="Text conditioning (U-Net only)",
                                     info="Which words the network learns your image with")
                prompt = gr.Textbox(label="Arbitrary prompt",
                                    info="Your own description of the image, e.g. coffee beans in a cup",
                                    placeholder="e.g. coffee beans in a cup")
                contrastive = gr.Checkbox(label="Contrastive prompt loss (needs BLIP captions)",
                                          info="Also push the image toward the best caption and away from the worst "
                                               "(paper 004)")
                steps = gr.Slider(50, 20000, value=1500, step=50, label="Training steps",
                                  info="Training rounds; more learns the image better but takes longer",
                                  elem_id="si-steps")
                width = gr.Slider(16, 128, value=32, step=16, label="Network width",
                                  info="How big the network is; smaller trains faster",
                                  elem_id="si-width")
                seed = gr.Number(0, precision=0, label="Seed",
                                 info=SEED_INFO)
                blip = gr.Dropdown(BLIP_CHOICES, value=BLIP_CHOICES[0][1], label="BLIP captioner",
                                   info="The model that writes captions for your image")
                clip = gr.Dropdown(CLIP_CHOICES, value=CLIP_CHOICES[0][1], label="CLIP model",
                                   info="The model that scores how well a caption fits a picture")
            model_name_box = gr.Textbox(label="Model name (default: the file's name)",
                                        info="Your name for the trained model",
                                        elem_id="si-name")
            with gr.Row():
                train = gr.Button("Train", variant="primary", elem_id="si-train")
                stop = gr.Button("Cancel", variant="stop", elem_id="si-cancel")
            status = gr.Markdown(elem_id="si-status")
            captions = gr.Dataframe(headers=["caption", "CLIP score", "role"], label="BLIP captions (P*, P+, P−)",
                                    visible=False, interactive=False)
        with gr.Column():
            preview = gr.Image(label="Live preview (reconstruction at each milestone)", interactive=False)
    with gr.Tab("Variations"):
        with gr.Row():
            count = gr.Slider(1, MAX_COUNT, value=4, step=1, label="Number",
                              info="How many variations to make",
                              elem_id="si-count")
            var_seed = gr.Number(0, precision=0, label="Seed",
                                 info=SEED_INFO)
            start_scale = gr.Slider(0, MAX_START_SCALES, value=1, step=1,
                                    label="Start scale (0 = from noise; higher keeps more of the layout)",
                                    info="0 invents a new layout; higher keeps more of the original arrangement")
            milestone = gr.Slider(1, 10, value=10, step=1, label="Training stage to use (1–10): lower = more varied",
                                  info="Which saved stage of training to use (1–10): earlier stages give looser, more"
                                       " varied copies")
        with gr.Row():
            width_scale = gr.Slider(0.5, MAX_SIZE_MULTIPLIER, value=1.0, step=0.25, label="Width ×",
                                    info="Output width as a multiple of the original")
            height_scale = gr.Slider(0.5, MAX_SIZE_MULTIPLIER, value=1.0, step=0.25, label="Height ×",
                                     info="Output height as a multiple of the original")
            detail = gr.Radio(DETAIL_CHOICES, value=DETAIL_MODEL, label="Finer detail from",
                              info="A model trained for minutes on a CPU draws soft detail; GPNN redraws its layout "
                                   "from the start scale up with the photo's sharp patches (slower: about half a "
                                   "minute per variation on a CPU)", elem_id="si-detail")
        with gr.Row():
            generate = gr.Button("Make variations", variant="primary", elem_id="si-generate")
            gpnn_button = gr.Button("GPNN variations (no training)", elem_id="si-gpnn")
            gpnn_iterations = gr.Slider(1, 10, value=10, step=1, label="GPNN iterations per scale (the paper: 10; "
                                        "fewer is faster on a CPU)",
                                        info="How many times GPNN refines its patch matches at each size")
        gr.Markdown("**GPNN** (Granot et al., CVPR 2022) rearranges the image's own 7×7 patches by nearest-neighbour "
                    "search, scale by scale, from a noisy coarsest scale: no training, the bar the trained model has "
                    "to reach. It uses the uploaded image (else the model's) and the Number and Seed above.")
        with gr.Row():
            source_view = gr.Image(label="Source", interactive=False, scale=1, elem_id="si-source")
            gallery = gr.Gallery(label="Variations", columns=4, elem_id="si-gallery", scale=3)
        scales = gr.Gallery(label="The first variation at each scale", columns=6)
        var_status = gr.Markdown(elem_id="si-var-status")
    with gr.Tab("Text edit"):
        gr.Markdown("CLIP guides the edit toward the prompt and its variants (synonyms from a small offline table). "
                    "Draw on the image to edit only there; everything outside stays exactly as it is.")
        with gr.Row():
            with gr.Column():
                edit_prompt = gr.Textbox(label="Edit prompt",
                                         info="What to change the image toward, in words",
                                         placeholder="e.g. red flowers")
                augmentations = gr.Textbox(label="Prompts used (augmented)", interactive=False, lines=4)
                guidance = gr.Slider(0, 200, value=20, step=5, label="CLIP guidance strength",
                                     info="How hard the edit pushes toward the prompt; too high can spoil the picture")
                fill = gr.Slider(0.1, 1.0, value=1.0, step=0.05, label="How much of the region to fill",
                                 info="1 repaints the whole marked region; lower keeps more of it")
                edit_seed = gr.Number(0, precision=0, label="Seed",
                                      info=SEED_INFO)
                edit_clip = gr.Dropdown(CLIP_CHOICES, value=CLIP_CHOICES[0][1], label="CLIP model",
                                        info="The model that scores how well a caption fits a picture")
                load_region = gr.Button("Put the model's image in the region editor")
            region = image_editor_input("Region to edit (optional)", type="numpy", layers=False)
        edit_button = gr.Button("Edit", variant="primary")
        edit_gallery = gr.Gallery(label="Before and after", columns=4)
        edit_status = gr.Markdown()
    with gr.Tab("Ablation"):
        gr.Markdown("The paper's ablation (its Tables 2 and 3): each variant is trained on your image (cached), the "
                    "same seeds are sampled, and every variation is scored against the source by the Metrics "
                    "pipeline. **GPNN** (no training) stands beside them as the bar. Patch-NN: the mean distance of "
                    "each 7×7 patch of a variation to its nearest source patch (lower keeps the source's patches; "
                    "the control row is the source cut into 7×7 tiles and shuffled). Diversity is SinGAN's: "
                    "per-pixel std across variations over the source's std (0 = copies).")
        variants = gr.CheckboxGroup(ABLATION_CHOICES, value=["baseline", "+U-Net", GPNN_VARIANT], label="Variants",
                                    info="Which versions of the method to train and compare")
        with gr.Row():
            ablation_steps = gr.Slider(50, 5000, value=400, step=50, label="Training steps per variant",
                                       info="Training rounds for each version")
            ablation_count = gr.Slider(2, 8, value=4, step=1, label="Variations per variant",
                                       info="Pictures each version makes for the scores")
            ablation_prompt = gr.Textbox(label="Arbitrary prompt",
                                         info="Your own description of the image, e.g. coffee beans in a cup",
                                         value="a photo")
        ablation_button = gr.Button("Run the ablation", variant="primary")
        ablation_table = gr.Dataframe(headers=["variant", "patch-NN distance", "diversity (pixel std, SinGAN)",
                                               "training s", "s/variation", "CLIP-I", "SSIM", "PSNR", "LPIPS", "NIMA",
                                               "diversity (LPIPS)"], interactive=False)
        ablation_gallery = gr.Gallery(label="One variation per variant", columns=5)
        ablation_notes = gr.Markdown()

    settings = [backbone, text_mode, prompt, contrastive, steps, width, seed, blip, clip]
    for component in [image, *settings]:
        component.change(estimate, inputs=[image, *settings], outputs=estimate_text, api_visibility="private")
    image.upload(default_name, inputs=image, outputs=model_name_box, api_visibility="private")
    train.click(friendly_errors(train_model), inputs=[image, *settings, model_name_box],
                outputs=[status, preview, model_path, label, captions], api_name="single_image_train",
                **keeps_results(status), **MODEL_WORK)
    stop.click(cancel_training, outputs=status, concurrency_limit=None, api_name="single_image_cancel")
    generate.click(friendly_errors(make_variations),
                   inputs=[model_path, count, var_seed, start_scale, width_scale, height_scale, milestone, detail],
                   outputs=[gallery, scales, var_status], api_name="single_image_variations",
                   **keeps_results(var_status), **MODEL_WORK
                   ).then(model_source, inputs=model_path, outputs=source_view, api_visibility="private")
    gpnn_button.click(friendly_errors(make_gpnn_variations),
                      inputs=[image, model_path, count, var_seed, gpnn_iterations],
                      outputs=[gallery, scales, var_status, source_view], api_name="single_image_gpnn",
                      **keeps_results(var_status), **MODEL_WORK)
    edit_prompt.change(show_augmentations, inputs=edit_prompt, outputs=augmentations, api_visibility="private")
    load_region.click(friendly_errors(source_for_editor), inputs=model_path, outputs=region,
                      api_visibility="private")
    edit_button.click(friendly_errors(make_edit),
                      inputs=[model_path, edit_prompt, guidance, fill, edit_seed, milestone, region, edit_clip],
                      outputs=[edit_gallery, augmentations, edit_status], api_name="single_image_edit",
                      **keeps_results(edit_status), **MODEL_WORK)
    ablation_button.click(friendly_errors(run_ablation_table),
                          inputs=[image, variants, ablation_steps, ablation_count, var_seed, ablation_prompt, blip,
                                  clip],
                          outputs=[ablation_table, ablation_gallery, ablation_notes], api_name="single_image_ablation",
                          **keeps_results(ablation_notes), **MODEL_WORK)
    from .start import offer_example  # the Start page's example fills these in and presses Make variations

    offer_example(tab, "si-generate", model_path=model_path, model_label=label, count=count, seed=var_seed,
                  start_scale=start_scale, width_scale=width_scale, height_scale=height_scale, milestone=milestone)
