"""Landmark faces tab (seed 003): set 24 landmarks (sliders, table, JSON, photo) and draw a face with the seed's
U-Net (shipped, trained on synthetic cartoon faces) or with SD 1.5 + an OpenPose-face ControlNet; compare."""

from __future__ import annotations

import tempfile
from typing import Any

import gradio as gr

from pipelines.core.gpu import gpu_task
from pipelines.landmark_faces import landmarks as L
from pipelines.landmark_faces.request import MAX_FACES, MAX_GUIDANCE, MAX_STEPS, MIN_GUIDANCE

from .common import (
    MODEL_WORK,
    SEED_INFO,
    file_input,
    file_paths,
    friendly_errors,
    image_input,
    keeps_results,
    progress_callback,
    test_model_note,
    worker_stream,
)
from .visitors import owned_list

SLIDER_LABELS = {
    "yaw": "Turn left/right (yaw, °)", "pitch": "Nod down/up (pitch, down > 0, °)",
    "roll": "Tilt sideways (roll, clockwise > 0, °)",
    "left_eye_open": "Left eye open", "right_eye_open": "Right eye open", "gaze_x": "Gaze left/right",
    "gaze_y": "Gaze up/down", "mouth_open": "Mouth open", "smile": "Smile", "face_width": "Face width",
}
DEFAULT_TAGS = "brown_hair, blue_eyes"
OVERLAY_SIZE = 320
UPSCALE = 256  # the U-Net draws 32–64 px faces; the gallery shows them enlarged (nearest neighbour)


def _points_from_sliders(*values: float) -> list[list[float]]:
    params = L.FaceParams(**dict(zip(L.PARAM_NAMES, (float(v) for v in values), strict=True)))
    return L.parametric_face(params).tolist()


def _views(points: Any) -> tuple[Any, Any, list[list[Any]]]:
    return points, L.overlay(points, size=OVERLAY_SIZE, numbers=True), L.as_rows(points)


@friendly_errors
def on_sliders(*values: float) -> tuple[Any, Any, list[list[Any]]]:
    return _views(_points_from_sliders(*values))


@friendly_errors
def on_table(rows: Any) -> tuple[Any, Any, list[list[Any]]]:
    values = rows.values.tolist() if hasattr(rows, "values") else list(rows or [])
    return _views(L.from_rows(values).tolist())


@friendly_errors
def on_json(file: Any) -> tuple[Any, Any, list[list[Any]]]:
    paths = file_paths(file)
    if not paths:
        raise gr.Error("Choose a landmark JSON file first.")
    return _views(L.load_json(paths[0]).tolist())


@friendly_errors
def on_export(points: Any) -> str:
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="landmarks_", delete=False)  # noqa: SIM115
    with handle:
        handle.write(L.to_json(points))
    return handle.name


@friendly_errors
def on_photo(photo: Any) -> tuple[Any, Any, list[list[Any]], Any, str, list[list[float]]]:
    """The photo's 24 points, its face-mesh drawing, a note, and the mesh itself (for the MediaPipe condition)."""
    if photo is None:
        raise gr.Error("Upload a photo with a face first.")
    found = L.from_photo(photo)
    points = found.points.tolist()
    note = found.note or "1 face found."
    return (*_views(points), L.face_mesh_drawing(found.mesh, 384, 384), note, found.mesh.round(5).tolist())


def _enlarge(image: Any) -> Any:
    from PIL import Image

    return image.resize((UPSCALE, UPSCALE), Image.Resampling.NEAREST)


def _tags(text: str) -> list[str]:
    return [tag.strip().replace(" ", "_") for tag in str(text or "").split(",") if tag.strip()]


@gpu_task
@friendly_errors
def on_generate_unet(points: Any, model: str, tags: str, guidance: float, steps: int, seed: int, count: int,
                     progress: gr.Progress = gr.Progress()) -> tuple[list[Any], str]:
    from pipelines.landmark_faces import is_test_model
    from pipelines.landmark_faces.runs import run_generate

    record, output = run_generate(points, _tags(tags), model=model, guidance=guidance, steps=int(steps),
                                  seed=int(seed), count=int(count), callback=progress_callback(progress))
    lines = [f"Run {record.id}: {len(output.images)} face(s) in {output.seconds:.1f} s, seeds "
             f"{', '.join(map(str, output.seeds))}.", *output.notes]
    note = test_model_note(is_test_model(model), "random weights, output is noise")
    if note:
        lines.append(note)
    else:
        lines.append("Model: paper 003's U-Net trained on synthetic cartoon faces (64 px), shown enlarged.")
    return [_enlarge(image) for image in output.images], "\n\n".join(lines)


@gpu_task
@friendly_errors
def on_generate_controlnet(points: Any, model: str, controlnet: str, prompt: str, negative: str, steps: int,
                           cfg: float, scale: float, seed: int, size: int, reference: Any, ip_adapter: str,
                           reference_scale: float, condition: str = "openpose", mesh: Any = None,
                           progress: gr.Progress = gr.Progress()) -> tuple[list[Any], Any, str]:
    from pipelines.landmark_faces.runs import condition_image, run_controlnet

    if not str(prompt or "").strip():
        raise gr.Error("Write a prompt (tags such as: 1girl, anime, smile, blue eyes).")
    record, output = run_controlnet(points, prompt, negative_prompt=negative, model=model, controlnet=controlnet,
                                    steps=int(steps), cfg_scale=float(cfg), control_scale=float(scale),
                                    seed=int(seed), size=int(size), reference=reference, ip_adapter=ip_adapter,
                                    reference_scale=float(reference_scale), condition=condition, mesh=mesh,
                                    callback=progress_callback(progress))
    test = any(m.get("test_model") for m in output.models)
    lines = [f"Run {record.id} in {output.seconds:.1f} s.", *output.notes]
    note = test_model_note(test)
    if note:
        lines.append(note)
    return output.images, condition_image(points, condition, mesh, int(size))[0], "\n\n".join(lines)


@gpu_task
@friendly_errors
def on_compare(points: Any, model: str, tags: str, guidance: float, steps: int, seed: int, count: int,
               with_reference: bool, sd_model: str, ip_adapter: str, reference_scale: float,
               progress: gr.Progress = gr.Progress()) -> tuple[list[Any], Any, str, Any]:
    """The comparison on this face (a recorded run, listed in History) and the per-slider read-back stored in the
    model's record by the bench (not recomputed here: it samples ~200 faces)."""
    import pandas as pd

    from pipelines.core.loader import is_test_model
    from pipelines.landmark_faces.compare import ReferenceOnly
    from pipelines.landmark_faces.runs import run_compare

    reference_only = (ReferenceOnly(model=sd_model, ip_adapter=ip_adapter, scale=float(reference_scale),
                                    size=64 if is_test_model(sd_model) else 512) if with_reference else None)
    record, result = run_compare(points, _tags(tags), model=model, guidance=guidance, steps=int(steps),
                                 seed=int(seed), count=int(count), reference_only=reference_only,
                                 callback=progress_callback(progress))
    gallery = [(_enlarge(image), caption) for image, caption in result.gallery]
    sliders, note = slider_readback_table(model)
    markdown = "\n\n".join([f"Run {record.id} (in History).", result.markdown, note])
    return gallery, pd.DataFrame(result.table, columns=result.headers), markdown, sliders


def slider_readback_table(model: str) -> tuple[Any, str]:
    """The per-slider read-back of `model` from its record (a DataFrame, or None) and a line saying what it is."""
    import pandas as pd

    from pipelines.landmark_faces.readback import stored_table, table_rows

    report = stored_table(model)
    if report is None:
        return None, ("No per-slider read-back is stored for this model: run `python -m pipelines.landmark_faces "
                      "readback --model MODEL --record MODEL.json` (or bench/bench_landmark_faces.py --readback).")
    headers, rows = table_rows(report)
    return pd.DataFrame(rows, columns=headers), (
        f"Per slider (from the model's record, {report.get('faces_per_slider')} faces across each slider's range, "
        f"{report.get('sampling_steps')} steps): mean |read back − asked|, lower is better; the synthetic drawings "
        "are the read-back's own floor.")


def _train_job_id(request: gr.Request | None) -> str:
    return f"landmark_faces_train:{getattr(request, 'session_hash', None) or 'api'}"


@gpu_task(duration=600)
def on_train(data_zip: Any, name: str, size: int, width: int, steps: int, batch_size: int, seed: int,
             target: str, request: gr.Request = None, progress: gr.Progress = gr.Progress()):
    """Train (or resume) the seed's U-Net in a worker thread, on the zip when one is given, else on the synthetic
    faces; yields (status, model dropdown) as it goes."""
    from pipelines.core.jobs import JOBS
    from pipelines.landmark_faces.runs import run_train
    from pipelines.landmark_faces.train import TrainConfig

    paths = file_paths(data_zip)
    zip_path = paths[0] if paths else None
    config = TrainConfig(name=(name or "").strip(), image_size=int(size), width=int(width), steps=int(steps),
                         batch_size=int(batch_size), seed=int(seed), prediction_type=target,
                         checkpoint_every=max(1, int(steps) // 10))
    job_id, token = JOBS.start(_train_job_id(request))
    report = progress_callback(progress)

    def work(put: Any) -> Any:
        def callback(step: int, total: int, message: str) -> None:
            report(step, total, message)
            put(message)

        return run_train(config, zip_path=zip_path, callback=callback, cancel=token)

    record, result = yield from worker_stream(work, lambda message: (f"Training… {message}", gr.update()),
                                              job_id=job_id, token=token, name="landmark-train")
    choices = _model_choices()
    chosen = str(result.path) if result.path is not None else gr.update()
    yield f"{result.summary} (run {record.id})", gr.update(choices=choices, value=chosen)


def on_cancel_training(request: gr.Request = None) -> str:
    from pipelines.core.jobs import JOBS

    if JOBS.cancel(_train_job_id(request)):
        return "Cancelling after the current step; the checkpoint is kept: press Train again to resume."
    return "Nothing is training."


def _model_choices() -> list[tuple[str, str]]:
    from pipelines.landmark_faces import model_choices

    return model_choices()


def _sd_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Checkpoints, the two face ControlNets and IP-Adapter plus-face: catalog entries (licence, download size), then
    the test models."""
    from pipelines.core import catalog
    from pipelines.core.tiny_models import dropdown_choice
    from pipelines.diffusion.models import controlnet_choices, model_choices
    from pipelines.landmark_faces.runs import CONTROLNET_DEFAULT, CONTROLNET_MEDIAPIPE

    controls = controlnet_choices([CONTROLNET_DEFAULT, CONTROLNET_MEDIAPIPE])
    adapters = catalog.choices("ip_adapter") + [dropdown_choice("ip_adapter")]
    return model_choices(), controls, adapters


def _sd_defaults() -> tuple[str, str, str]:
    """A real checkpoint, ControlNet and IP-Adapter whenever they are here or can be fetched; the test trio only
    offline with nothing cached (a real ControlNet or adapter cannot run on the test UNet)."""
    from pipelines.diffusion.models import TINY_IP_ADAPTER, default_controlnet, default_model
    from pipelines.landmark_faces.runs import CONTROLNET_DEFAULT, IP_ADAPTER_DEFAULT

    model = default_model()
    adapter = TINY_IP_ADAPTER if model.startswith("tiny:") else IP_ADAPTER_DEFAULT
    return model, default_controlnet(CONTROLNET_DEFAULT, model), adapter


def build(tab: gr.Tab | None = None) -> None:
    from pipelines.landmark_faces import default_model

    gr.Markdown("**Landmark faces** (paper 003): set the paper's 24 anime landmarks, then draw a face that follows "
                "them. The default model is the paper's U-Net **trained in this project on synthetic cartoon "
                "faces** (64 px) — a demonstration of the method, not an anime illustrator.")
    start = L.parametric_face().tolist()
    points = gr.State(start)
    photo_mesh = gr.State(None)  # the last photo's MediaPipe mesh (478 points), for the MediaPipe-face condition
    with gr.Row():
        with gr.Column(scale=1):
            overlay = gr.Image(value=L.overlay(start, size=OVERLAY_SIZE, numbers=True), label="Landmarks",
                               interactive=False, elem_id="lf-overlay", height=OVERLAY_SIZE)
            with gr.Accordion("Sliders (parametric face)", open=True):
                sliders = []
                for name in L.PARAM_NAMES:
                    low, high = L.LIMITS[name]
                    step = 1.0 if high > 5 else 0.05
                    sliders.append(gr.Slider(low, high, value=getattr(L.FaceParams(), name), step=step,
                                             label=SLIDER_LABELS[name], elem_id=f"lf-{name}"))
            with gr.Accordion("Points (edit, then Apply)", open=False):
                table = gr.Dataframe(value=L.as_rows(start), headers=["#", "name", "x", "y"],
                                     datatype=["number", "str", "number", "number"], interactive=True,
                                     row_count=(L.COUNT, "fixed"), column_count=(4, "fixed"), elem_id="lf-table")
                apply_table = gr.Button("Apply table")
            with gr.Accordion("From a photo (MediaPipe) or a JSON file", open=False):
                photo = image_input("Photo with a face", type="pil")
                use_photo = gr.Button("Find landmarks in the photo")
                photo_note = gr.Markdown()
                mesh = gr.Image(label="MediaPipe face mesh (the MediaPipe-face ControlNet's condition)",
                                interactive=False, height=256)
                json_file = file_input("Landmark JSON", kinds=("json",))
                load_json = gr.Button("Load JSON")
                export = gr.Button("Export JSON")
                exported = gr.File(label="Exported landmarks", interactive=False)
        with gr.Column(scale=1):
            with gr.Tab("Paper 003's U-Net"):
                unet_model = owned_list(gr.Dropdown(_model_choices(), value=default_model(), label="Model",
                                                    info="The face-drawing network: the shipped one (trained here on "
                                                         "simple cartoon faces), yours, or a test one"),
                                        _model_choices)
                tags = gr.Textbox(DEFAULT_TAGS, label="Tags (comma-separated)",
                                  info="hair: black/brown/blonde/pink/silver_hair; eyes: blue/green/purple_eyes; "
                                       "open_mouth, closed_mouth, smile, looking_left/right, closed_eyes")
                with gr.Row():
                    guidance = gr.Slider(MIN_GUIDANCE, MAX_GUIDANCE, value=2.0, step=0.5, label="Guidance scale",
                                         info="How strictly the face follows the tags; higher is stricter but less "
                                              "varied")
                    steps = gr.Slider(5, MAX_STEPS, value=50, step=1, label="Steps",
                                      info="How many times the picture is refined; more is slower and often cleaner",
                                      elem_id="lf-steps")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed",
                                     info=SEED_INFO)
                    count = gr.Slider(1, MAX_FACES, value=4, step=1, label="Faces",
                                      info="How many faces to draw")
                generate = gr.Button("Generate", variant="primary", elem_id="lf-generate")
                gallery = gr.Gallery(label="Faces", columns=4, height=300, elem_id="lf-gallery")
                notes = gr.Markdown(elem_id="lf-notes")
            with gr.Tab("ControlNet (SD 1.5)"):
                sd_models, controls, adapters = _sd_choices()
                sd_default, control_default, adapter_default = _sd_defaults()
                gr.Markdown("The landmarks drawn as OpenPose's 70 face points condition an OpenPose ControlNet; a "
                            "reference face, if you give one, steers the look through IP-Adapter (plus-face). "
                            "Without real SD 1.5 / ControlNet / IP-Adapter weights on this machine only the **test "
                            "models** (random weights, output is noise) can run.")
                sd_model = gr.Dropdown(sd_models, value=sd_default, label="Checkpoint",
                                       info="The image model (SD 1.5) that draws the face")
                with gr.Row():
                    condition_kind = gr.Radio([("OpenPose face (drawn from the 24 points)", "openpose"),
                                               ("MediaPipe face mesh (from the photo)", "mediapipe")],
                                              value="openpose", label="Condition",
                                              info="Pair it with its ControlNet: OpenPose ↔ OpenPose, MediaPipe face "
                                                   "mesh ↔ MediaPipe face. The mesh is the photo's, not the edited "
                                                   "points.")
                    control = gr.Dropdown(controls, value=control_default, label="ControlNet",
                                          info="The add-on that makes the face follow the landmark points")
                prompt = gr.Textbox("1girl, anime, portrait, smile, blue eyes", label="Prompt",
                                    info="What the face looks like, in words, e.g. 1girl, smile, blue eyes",
                                    elem_id="lf-prompt")
                negative = gr.Textbox("lowres, bad anatomy", label="Negative prompt",
                                      info="What you do not want in the picture, e.g. lowres, bad anatomy")
                with gr.Row():
                    sd_steps = gr.Slider(1, 50, value=20, step=1, label="Steps",
                                         info="How many times the picture is refined; more is slower and often "
                                              "cleaner",
                                         elem_id="lf-sd-steps")
                    cfg = gr.Slider(1, 15, value=7, step=0.5, label="Prompt strength (CFG scale)",
                                    info="Guidance (CFG): how strictly the picture follows the prompt; 5–8 is usual, "
                                         "high values look harsh")
                    scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Control scale",
                                      info="How closely the face follows the points: 0 ignores them, 1 follows them")
                with gr.Row():
                    sd_seed = gr.Number(0, precision=0, label="Seed",
                                        info=SEED_INFO)
                    size = gr.Slider(64, 768, value=512, step=64, label="Size",
                                     info="Width and height in pixels; 512 suits SD 1.5, smaller is faster",
                                     elem_id="lf-sd-size")
                with gr.Accordion("Reference face (IP-Adapter, optional)", open=False):
                    reference = image_input("Reference face", type="pil", height=200)
                    ip_adapter = gr.Dropdown(adapters, value=adapter_default, label="IP-Adapter",
                                             info="An add-on that copies the look of a reference face (upload one "
                                                  "above)")
                    reference_scale = gr.Slider(0, 1.5, value=0.6, step=0.05, label="Reference strength",
                                                info="0: ignore the reference; IP-Adapter's usual range is 0.5–1")
                sd_generate = gr.Button("Generate with ControlNet", elem_id="lf-sd-generate")
                sd_gallery = gr.Gallery(label="Images", columns=2, height=300, elem_id="lf-sd-gallery")
                condition = gr.Image(label="Condition image", interactive=False, height=256)
                sd_notes = gr.Markdown(elem_id="lf-sd-notes")
            with gr.Tab("Train"):
                gr.Markdown("Train the paper's U-Net yourself: on the synthetic cartoon faces, or on your own faces "
                            "(a zip of images, each with a same-named landmark JSON — the format **Export JSON** "
                            "writes — and optionally `\"tags\": [\"blonde_hair\", …]`). Pressing Train again with "
                            "the same settings resumes from the last checkpoint. A CPU trains 32 px in minutes; "
                            "the paper's 64 px takes about four times as long.")
                train_zip = file_input("Your faces: a zip of images + landmark JSONs (empty: the synthetic faces)",
                                       kinds=("zip",))
                with gr.Row():
                    train_name = gr.Textbox("my_faces", label="Name (names the model file)",
                                            info="Your name for the trained model")
                    train_size = gr.Radio([32, 64], value=32, label="Resolution (px)",
                                          info="Size of the faces it learns to draw; 32 is fast on a CPU")
                    train_target = gr.Radio([("clean image (as the shipped model)", "sample"),
                                             ("noise (the paper's)", "epsilon")], value="sample",
                                            label="The U-Net predicts",
                                            info="What the network learns to output; the clean image trains faster "
                                                 "here")
                with gr.Row():
                    train_width = gr.Slider(8, 64, value=16, step=4, label="Network width (paper 003 used 64)",
                                            info="How big the network is; smaller trains faster, paper 003 used 64")
                    train_steps = gr.Slider(10, 20000, value=1500, step=10, label="Steps",
                                            info="How many times the picture is refined; more is slower and often "
                                                 "cleaner",
                                            elem_id="lf-train-steps")
                    train_batch = gr.Slider(1, 64, value=16, step=1, label="Batch size",
                                            info="Faces per training step; larger is smoother but uses more memory")
                    train_seed = gr.Number(0, precision=0, label="Seed",
                                           info=SEED_INFO)
                with gr.Row():
                    train_button = gr.Button("Train (or resume)", variant="primary", elem_id="lf-train")
                    train_cancel = gr.Button("Cancel")
                train_status = gr.Markdown(elem_id="lf-train-status")
            with gr.Tab("Compare"):
                gr.Markdown("The paper's comparison on this face: the U-Net **with its landmarks** against **its "
                            "tags and orientation word only** (landmarks withheld) and, if ticked, **reference-only**"
                            " (the ControlNet tab's checkpoint + IP-Adapter given the reference drawing, no "
                            "landmarks). Scored against the synthetic drawing of these landmarks through the Metrics "
                            "pipeline: SSIM, PSNR, FID/KID/IS against synthetic faces (when their network is on this "
                            "machine), and the landmark error (parts read back by colour, in image widths).")
                with_reference = gr.Checkbox(False, label="Also reference-only (SD 1.5 + IP-Adapter)",
                                             info="Add a third face drawn from the reference picture alone, without "
                                                  "points",
                                             elem_id="lf-compare-reference")
                compare = gr.Button("Compare", elem_id="lf-compare")
                compare_gallery = gr.Gallery(label="Reference · with landmarks · baselines", columns=3, height=300)
                compare_table = gr.Dataframe(label="Metrics", interactive=False)
                compare_notes = gr.Markdown()
                slider_table = gr.Dataframe(label="Per slider: shape read back vs asked (the model's record)",
                                            interactive=False, elem_id="lf-slider-table")

    views = [points, overlay, table]
    for slider in sliders:
        # The preview is cheap, but queued behind other work 20 arrow presses took 42 s to catch up: off the queue,
        # and a press made while one is pending replaces any other waiting one (only the newest values run).
        slider.change(on_sliders, sliders, views, show_progress="hidden", trigger_mode="always_last", queue=False,
                      api_name=False)
    apply_table.click(on_table, table, views)
    load_json.click(on_json, json_file, views)
    export.click(on_export, points, exported)
    use_photo.click(on_photo, photo, [*views, mesh, photo_note, photo_mesh], **keeps_results(photo_note))
    generate.click(on_generate_unet, [points, unet_model, tags, guidance, steps, seed, count], [gallery, notes],
                   **keeps_results(notes), **MODEL_WORK)
    sd_generate.click(on_generate_controlnet, [points, sd_model, control, prompt, negative, sd_steps, cfg, scale,
                                               sd_seed, size, reference, ip_adapter, reference_scale,
                                               condition_kind, photo_mesh],
                      [sd_gallery, condition, sd_notes], **keeps_results(sd_notes), **MODEL_WORK)
    train_button.click(friendly_errors(on_train), [train_zip, train_name, train_size, train_width, train_steps,
                                                   train_batch, train_seed, train_target],
                       [train_status, unet_model], api_name="landmark_train", **MODEL_WORK)
    train_cancel.click(on_cancel_training, outputs=train_status, concurrency_limit=None, api_name=False)
    compare.click(on_compare, [points, unet_model, tags, guidance, steps, seed, count, with_reference, sd_model,
                               ip_adapter, reference_scale],
                  [compare_gallery, compare_table, compare_notes, slider_table],
                  **keeps_results(compare_notes), **MODEL_WORK)

    from .start import offer_example  # the Start page's example fills these in and presses Generate

    offer_example(tab, "lf-generate", points=points, model=unet_model, tags=tags, guidance=guidance, steps=steps,
                  seed=seed, count=count, **{f"face.{name}": slider for name, slider in zip(L.PARAM_NAMES, sliders,
                                                                                            strict=True)})
