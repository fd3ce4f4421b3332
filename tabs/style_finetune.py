"""Style fine-tuning tab: 1 Dataset → 2 Train (live loss, validation images, cancel, resume) → 3 Generate & compare
→ 4 Evaluate. Components and handlers only; every computation is in pipelines.style_finetune."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipelines.core.gpu import TRAIN_SLICE_S, gpu_task, training_budget_s

from .common import (
    MODEL_WORK,
    SEED_INFO,
    file_input,
    file_paths,
    friendly_errors,
    keeps_results,
    progress_callback,
    start_worker,
    stop_worker,
    test_model_note,
)
from .visitors import owned_list

CAPTION_MODELS = [("No captions (trigger word only)", ""),
                  ("BLIP base (Salesforce)", "Salesforce/blip-image-captioning-base"),
                  ("BLIP — tiny (test, random weights), output is noise", "tiny:blip")]


def caption_choices() -> list[tuple[str, str]]:
    """CAPTION_MODELS with the catalog's licence and download size on the real captioner."""
    from pipelines.core import catalog

    def label(text: str, source: str) -> str:
        entry = catalog.entry_for(source) if source else None
        return f"{text} — {catalog.licence_and_size(entry)}" if entry else text

    return [(label(text, source), source) for text, source in CAPTION_MODELS]
FULL_HINT = ("⚠️ **Full UNet fine-tuning needs a GPU with ≥ 24 GB** for SD 1.5 (the whole UNet, its gradients and "
             "Adam's two moments). On smaller GPUs choose LoRA or embedding + LoRA.")
TRAIN_SLOT_S = TRAIN_SLICE_S  # what a ZeroGPU slot is asked for; the job checkpoints and pauses before it ends
INTRO = (
    "**Teach an image model a drawing style from your own pictures, then draw anything in that style.** "
    "**1** Upload 3–200 pictures that share one style (a zip or the files; the same artist or look), and pick a "
    "made-up *trigger word* such as `mystyle`. **2** Press **Train**: the app teaches the model that the word "
    "means your style (minutes on a GPU; the progress and sample pictures show as it goes, and Train again "
    "resumes a stopped training). **3** Write a prompt and see the same pictures drawn before and after (top: "
    "the original model, bottom: yours). **4** Optionally score how close the new pictures are to yours. "
    "You get a small style file that every drawing tab here can use (and A1111/Forge can too), and each result "
    "saved with its settings in **History**.")
# For those who want the numbers: the method and its defaults, behind a click.
INTRO_DETAILS = (
    "How it learns (paper 000): by default it first learns the trigger word's *embedding* (textual inversion), "
    "then a *LoRA* (a small add-on to the model), as DreamBooth-LoRA; you can also train the whole UNet or both "
    "at once. Defaults from the diffusers examples: LoRA learning rate 1e-4, full UNet 2e-6, embedding 5e-4, about "
    "100 steps per image. Evaluation: FID/KID and per-image FID–KL against your pictures, CLIP-I (likeness to your "
    "pictures), CLIP score (match to the prompt) and LPIPS diversity, each with a 95% interval. Results are "
    "installed as `<lora:NAME:1>` and as an embedding named by the trigger word. See About's glossary for the "
    "terms.")


def _job_id(request: gr.Request | None) -> str:
    return f"style_finetune:{getattr(request, 'session_hash', None) or 'api'}"


def model_choices() -> list[tuple[str, str]]:
    from pipelines.diffusion.models import model_choices as choices

    return choices()


def default_model() -> str:
    from pipelines.diffusion.models import default_model as default

    return default()


def tuned_choices() -> list[str]:
    from pipelines.style_finetune.apply import list_tuned

    return [tuned.name for tuned in list_tuned()]


# ---------------------------------------------------------------------------------------------- 1 dataset
@gpu_task
def prepare_dataset(files: Any, name: str, trigger: str, resolution: int, face_aware: bool, caption_model: str,
                    progress=gr.Progress()):
    from pipelines.style_finetune.config import TrainConfig, check
    from pipelines.style_finetune.data import build_dataset, save_dataset
    from pipelines.style_finetune.runs import dataset_folder

    paths = file_paths(files)
    if not paths:
        raise gr.Error("Upload 3–200 images of the style (or a zip of them).")
    problems = [p for p in check(TrainConfig(name=(name or "").strip())) if p.startswith("The name")]
    if problems:
        raise gr.Error(problems[0])
    dataset = build_dataset(paths, trigger, resolution=int(resolution), face_aware=bool(face_aware),
                            caption_model=caption_model or None, progress=progress_callback(progress))
    save_dataset(dataset, dataset_folder(name.strip()))
    rows = [[image_name, caption] for image_name, caption in zip(dataset.names, dataset.captions, strict=True)]
    notes = "\n".join(f"- {note}" for note in dataset.notes)
    status = f"**{len(dataset)} images** ready for training **{name.strip()}** (trigger `{dataset.trigger}`)."
    return list(dataset.images), rows, status + ("\n\n" + notes if notes else "")


# ---------------------------------------------------------------------------------------------- 2 train
def _config(name, model, method, steps, learning_rate, embedding_learning_rate, rank, alpha, vectors, initializer,
            train_text_encoder, prior_preservation, class_prompt, mixed_precision, gradient_checkpointing, adam_8bit,
            seed, checkpoint_every, validation_every, validation_prompt, joint=False):
    from pipelines.style_finetune.config import TrainConfig

    return TrainConfig(name=(name or "").strip(), model=model, method=method, steps=int(steps),
                       learning_rate=float(learning_rate), embedding_learning_rate=float(embedding_learning_rate),
                       rank=int(rank), alpha=float(alpha), vectors=int(vectors), initializer=initializer,
                       train_text_encoder=bool(train_text_encoder), prior_preservation=bool(prior_preservation),
                       class_prompt=class_prompt, mixed_precision=mixed_precision,
                       gradient_checkpointing=bool(gradient_checkpointing), adam_8bit=bool(adam_8bit), seed=int(seed),
                       checkpoint_every=int(checkpoint_every), validation_every=int(validation_every),
                       validation_prompt=validation_prompt or "",
                       joint=bool(joint) and method == "embedding+lora")


def _captions_from_table(table: Any) -> list[str] | None:
    rows = table.values.tolist() if hasattr(table, "values") else (table or [])
    captions = [str(row[1]) for row in rows if len(row) > 1 and str(row[0]).strip()]
    return captions or None


def loss_figure(losses: list[float]) -> Any:
    """The loss curve as a matplotlib Figure: a line with a dot per step (a single step is a visible dot, where a
    line chart showed an empty frame), whole-number steps, both axis titles inside the picture. A Figure, not
    pyplot: nothing is kept in pyplot's registry when the page drops it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 2.6), layout="constrained")
    axes = figure.add_subplot()
    steps = list(range(1, len(losses) + 1))
    axes.plot(steps, losses, color="#DD8452", marker="o" if len(losses) <= 60 else None, markersize=4)
    axes.set_title("Training loss", loc="left", fontsize=10)  # in the picture: a block label would cover the top tick
    axes.set_xlabel("training step")
    axes.set_ylabel("loss")
    axes.set_xlim(0.5, max(len(losses), 1) + 0.5)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axes.grid(alpha=0.3)
    if not losses:
        axes.text(0.5, 0.5, "The loss of each step shows here", ha="center", va="center", transform=axes.transAxes,
                  color="gray")
    return figure


@gpu_task(duration=TRAIN_SLOT_S)
def train_style(table: Any, *settings: Any, request: gr.Request = None):
    """Runs the training in a worker thread and streams its loss curve and validation images to the page."""

    from pipelines.core.jobs import JOBS
    from pipelines.style_finetune.data import load_dataset, save_dataset
    from pipelines.style_finetune.runs import dataset_folder, run_train

    config = _config(*settings)
    folder = dataset_folder(config.name)
    dataset = load_dataset(folder)  # a plain message when step 1 was not done for this name
    captions = _captions_from_table(table)
    if captions and list(captions) != list(dataset.captions):
        dataset = dataset.with_captions(captions)
        save_dataset(dataset, folder)
    losses: list[float] = []
    validation: list[Any] = []
    outcome: dict[str, Any] = {}
    message = ["Starting"]
    job_id, token = JOBS.start(_job_id(request))

    def work() -> None:
        try:
            outcome["result"] = run_train(
                config, None, cancel=token, time_budget_s=training_budget_s(TRAIN_SLOT_S),
                callback=lambda step, total, text: message.__setitem__(0, text),
                on_step=lambda step, loss: losses.append(loss),
                on_validation=lambda step, images: validation.__setitem__(slice(None), images))[1]
        except BaseException as err:  # noqa: BLE001 - handed to the page below
            outcome["error"] = err

    thread = start_worker(work, name=f"train-{config.name}")
    drawn = -1
    try:
        while thread.is_alive():
            thread.join(timeout=1.0)
            curve = gr.update() if len(losses) == drawn else loss_figure(losses)  # redrawn when a step is added
            drawn = len(losses)
            yield f"⏳ {message[0]}", curve, list(validation), gr.update(), gr.update()
    finally:
        stop_worker(thread, token)
        JOBS.finish(job_id, token)
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    note = test_model_note(result.test_model)
    text = result.summary + ("\n\n" + note if note else "")
    if result.files:
        text += ("\n\nInstalled: the LoRA as `<lora:" + config.name + ":1>` and the embedding as the word `"
                 + dataset.trigger + "` in prompts (where the method trained them). Downloads below: `*_a1111` and "
                 "the trigger-named embedding are for A1111/ComfyUI, the others for diffusers.")
    images = [str(path) for _, paths in result.validation[-1:] for path in paths]
    downloads = [str(path) for kind, path in result.files.items() if kind != "model" and not kind.endswith("installed")]
    yield (text, loss_figure(result.losses), images, gr.update(choices=tuned_choices(), value=config.name),
           downloads or None)


def cancel_training(request: gr.Request = None) -> str:
    from pipelines.core.jobs import JOBS

    if JOBS.cancel(_job_id(request)):
        return "Cancelling after the current step; a checkpoint is written, press Train to resume."
    return "Nothing is training."


def memory_preset(name: str | None):
    from pipelines.style_finetune.config import MEMORY_PRESETS

    values = MEMORY_PRESETS.get(name or "", None)
    if values is None:
        return gr.update(), gr.update(), gr.update()
    return (values.get("mixed_precision", "auto"), values.get("gradient_checkpointing", False),
            values.get("adam_8bit", False))


def method_hint(method: str) -> str:
    return FULL_HINT if method == "full" else ""


# ---------------------------------------------------------------------------------------------- 3 compare
@gpu_task
def compare_models(tuned: str, prompt: str, negative: str, lora_scale: float, seed: int, count: int, steps: int,
                   size: int, fast_preview: bool = False, progress=gr.Progress()):
    from pipelines.core.jobs import JOBS
    from pipelines.style_finetune.apply import CompareRequest, compare_base_tuned

    if not tuned:
        raise gr.Error("Choose a trained style (train one in step 2).")
    job_id, token = JOBS.start()
    try:
        output = compare_base_tuned(CompareRequest(tuned=tuned, prompt=prompt or "", negative_prompt=negative or "",
                                                   lora_scale=float(lora_scale), seed=int(seed), count=int(count),
                                                   steps=int(steps), size=int(size),
                                                   fast_preview=bool(fast_preview)),
                                    callback=progress_callback(progress), cancel=token)
    finally:
        JOBS.finish(job_id, token)
    note = test_model_note(output.test_model)
    text = (f"Top row: base (`{output.prompts[0]}`); bottom row: tuned (`{output.prompts[1]}`); seeds "
            f"{output.seeds}.\n\n" + "\n".join(f"- {item}" for item in output.notes) + ("\n\n" + note if note else ""))
    return output.grid, text


# ---------------------------------------------------------------------------------------------- 4 evaluate
@gpu_task(duration=TRAIN_SLOT_S)
def evaluate_models(tuned: str, prompt: str, count: int, steps: int, lora_scale: float, size: int, networks: str,
                    progress=gr.Progress()):
    from pipelines.metrics import plots
    from pipelines.style_finetune.evaluate import TEST_NETWORKS, EvaluateRequest
    from pipelines.style_finetune.runs import run_evaluate

    from .metrics import _summary, table_row

    if not tuned:
        raise gr.Error("Choose a trained style (train one in step 2).")
    _, result = run_evaluate(EvaluateRequest(tuned=tuned, count=int(count), prompt=prompt or "", steps=int(steps),
                                             lora_scale=float(lora_scale), size=int(size),
                                             networks=TEST_NETWORKS if networks == "test" else {}),
                             callback=progress_callback(progress))  # a recorded run: History lists it
    notes = "\n".join(f"- {item}" for item in result.notes)
    return (_summary(result.report) + "\n\n" + notes, [table_row(row) for row in result.report.rows],
            plots.scatter_plot(result.report))


# ---------------------------------------------------------------------------------------------- layout
def build(tab: gr.Tab | None = None) -> None:
    from pipelines.style_finetune.config import MEMORY_PRESETS, METHODS, PRECISIONS, TrainConfig

    from .metrics import TABLE_HEADERS

    defaults = TrainConfig()
    gr.Markdown(INTRO)
    with gr.Accordion("How it works, and the numbers it uses", open=False):
        gr.Markdown(INTRO_DETAILS)
    models = model_choices()
    with gr.Accordion("1 · Dataset", open=True):
        with gr.Row():
            files = file_input("Images of the style, or zips of them (3–200)", kinds=("image", "zip"), multiple=True,
                               elem_id="sf-files")
            with gr.Column():
                name = gr.Textbox(value="my_style", label="Name (names the LoRA file and the training folder)",
                                  info="Your name for the style; the result is saved under it",
                                  elem_id="sf-name")
                trigger = gr.Textbox(value="mystyle", label="Trigger word (a rare made-up word is best)",
                                     info="A made-up word that will stand for the style: put it in a prompt later to "
                                          "get the style",
                                     elem_id="sf-trigger")
                resolution = gr.Slider(64, 1024, value=512, step=64, label="Training resolution (px)",
                                       info="Your images are cropped to this square size; 512 suits SD 1.5, smaller "
                                            "is faster",
                                       elem_id="sf-resolution")
                face_aware = gr.Checkbox(False, label="Face-aware crop (MediaPipe; else centre crop)",
                                         info="Centre each crop on the face found in the image instead of the middle")
                caption_model = gr.Dropdown(caption_choices(), value="", label="Captions",
                                            info="Optional descriptions of each image, written by a captioning model,"
                                                 " so the style is learned apart from the content")
        prepare = gr.Button("Prepare dataset", variant="primary", elem_id="sf-prepare")
        dataset_status = gr.Markdown(elem_id="sf-dataset-status")
        crops = gr.Gallery(label="Training crops", columns=8, height=200)
        captions = gr.Dataframe(headers=["image", "caption"], label="Captions (edit them before training)",
                                interactive=True, wrap=True, elem_id="sf-captions")
    with gr.Accordion("2 · Train", open=True):
        with gr.Row():
            model = gr.Dropdown(models, value=default_model(), label="Base model",
                                info="The image model to teach the style to (an SD 1.5 checkpoint)",
                                allow_custom_value=True)
            method = gr.Radio([(label, key) for key, label in METHODS.items()], value=defaults.method,
                              label="Method",
                              info="What is trained: a new word (embedding), a small add-on file (LoRA), the whole "
                                   "model, or word then add-on (default)")
        hint = gr.Markdown()
        with gr.Row():
            steps = gr.Number(0, label="Steps (0 = about 100 per image)",
                              info="Training rounds; 0 picks about 100 per image",
                              precision=0, minimum=0, elem_id="sf-steps")
            learning_rate = gr.Number(0, label="Learning rate (0 = 1e-4 LoRA, 2e-6 full)",
                                      info="How big each training step is; 0 uses the tested default",
                                      minimum=0)
            embedding_lr = gr.Number(defaults.embedding_learning_rate, label="Embedding learning rate",
                                     info="The step size for learning the trigger word itself",
                                     minimum=0)
            seed = gr.Number(defaults.seed, label="Seed",
                             info=SEED_INFO,
                             precision=0, minimum=0)
        with gr.Accordion("More settings", open=False):
            with gr.Row():
                rank = gr.Slider(1, 128, value=defaults.rank, step=1, label="LoRA rank",
                                 info="How much the add-on can learn; higher is bigger and can copy your images more "
                                      "closely")
                alpha = gr.Slider(1, 128, value=defaults.alpha, step=1, label="LoRA alpha",
                                  info="Scales the add-on's effect while training; usually the same as the rank")
                vectors = gr.Slider(1, 16, value=defaults.vectors, step=1, label="Embedding vectors",
                                    info="How many word-pieces the trigger word is made of; more can hold more of the"
                                         " style")
                initializer = gr.Textbox(defaults.initializer, label="Embedding starts from the word",
                                         info="An existing word the new trigger word starts from, e.g. illustration")
            with gr.Row():
                text_encoder = gr.Checkbox(False, label="LoRA on the text encoder too",
                                           info="Also train the part that reads the prompt; can help the trigger "
                                                "word, uses more memory")
                joint = gr.Checkbox(False, label="Embedding and LoRA together (joint; default: embedding first)",
                                    info="Only for 'Embedding, then DreamBooth-LoRA': one phase, each at its own "
                                         "learning rate")
                prior = gr.Checkbox(False, label="Prior preservation (class images from the base model)",
                                    info="Also train on the base model's own pictures of the class, so it does not "
                                         "forget what the class looks like")
                class_prompt = gr.Textbox(defaults.class_prompt, label="Class prompt",
                                          info="What your images are in general words, e.g. anime illustration (used "
                                               "with prior preservation)")
            with gr.Row():
                preset = gr.Dropdown(list(MEMORY_PRESETS), value=None, label="GPU memory preset (sets the next three)",
                                     info="Pick your graphics card's memory to set precision, checkpointing and 8-bit"
                                          " Adam for it")
                precision = gr.Dropdown(list(PRECISIONS), value="auto", label="Mixed precision",
                                        info="Number format while training: fp16/bf16 use less memory and are faster "
                                             "on a GPU; auto picks for you")
                checkpointing = gr.Checkbox(False, label="Gradient checkpointing (less memory, slower)",
                                            info="Recomputes instead of storing, to fit a smaller GPU")
                adam_8bit = gr.Checkbox(False, label="8-bit Adam (needs bitsandbytes)",
                                        info="A smaller optimizer state to fit a smaller GPU")
            with gr.Row():
                checkpoint_every = gr.Number(0, label="Checkpoint every N steps (0 = 10%)",
                                             info="How often progress is saved, so a cancelled training can resume",
                                             precision=0, minimum=0)
                validation_every = gr.Number(0, label="Validation images every N steps (0 = at the end)",
                                             info="How often sample pictures are drawn while training, to watch the "
                                                  "style appear",
                                             precision=0, minimum=0)
                validation_prompt = gr.Textbox("", label="Validation prompt (empty: '<trigger>, 1girl, solo')",
                                               info="What the sample pictures drawn during training show")
        with gr.Row():
            train = gr.Button("Train (or resume)", variant="primary", elem_id="sf-train")
            cancel = gr.Button("Cancel", elem_id="sf-cancel")
        train_status = gr.Markdown(elem_id="sf-train-status")
        with gr.Row():
            loss_plot = gr.Plot(label="Training loss", show_label=False, elem_id="sf-loss")
            validation = gr.Gallery(label="Validation images (fixed seeds)", columns=4, height=240,
                                    elem_id="sf-validation")
        exported = gr.File(label="Exported files", file_count="multiple", interactive=False)
    with gr.Accordion("3 · Generate & compare", open=True):
        with gr.Row():
            tuned = owned_list(gr.Dropdown(tuned_choices(), label="Trained style",
                                           info="A style you trained here (its LoRA and/or trigger word)",
                                           allow_custom_value=True,
                                           elem_id="sf-tuned"), tuned_choices)
            prompt = gr.Textbox("", label="Prompt (the trigger word is added when missing)",
                                info="What to draw, in words, e.g. 1girl, smile, outdoors")
            negative = gr.Textbox("", label="Negative prompt",
                                  info="What you do not want in the picture, e.g. lowres, bad anatomy")
        with gr.Row():
            lora_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="LoRA scale",
                                   info="How strongly the trained style applies: 0 = not at all, 1 = as trained")
            ab_seed = gr.Number(0, label="First seed",
                                info="Image i uses this seed + i, for the base and the tuned model alike, so each "
                                     "pair differs only by the training",
                                precision=0, minimum=0)
            count = gr.Slider(1, 8, value=4, step=1, label="Images per side",
                              info="How many base and how many tuned pictures to draw",
                              elem_id="sf-count")
            ab_steps = gr.Slider(1, 50, value=20, step=1, label="Sampling steps",
                                 info="How many times the picture is refined; more is slower and often cleaner",
                                 elem_id="sf-ab-steps")
            size = gr.Slider(64, 1024, value=512, step=64, label="Size (px)",
                             info="Width and height of each picture; SD 1.5 works best at 512, smaller is faster",
                             elem_id="sf-size")
        fast_preview = gr.Checkbox(False, label="Fast preview (LCM-LoRA: 4 steps at CFG 1 — for a CPU)",
                                   info="A quick look in seconds instead of minutes; fetches LCM-LoRA for SD 1.5 once "
                                        "(a tiny test LoRA for the test model). Evaluate always samples in full.",
                                   elem_id="sf-fast-preview")
        compare = gr.Button("Generate base and tuned", variant="primary", elem_id="sf-compare")
        grid = gr.Image(label="Top: base · bottom: tuned (same seeds)", type="pil", elem_id="sf-grid")
        compare_notes = gr.Markdown(elem_id="sf-compare-notes")
    with gr.Accordion("4 · Evaluate", open=False):
        with gr.Row():
            eval_count = gr.Slider(2, 200, value=16, step=1, label="Images per model",
                                   info="How many pictures each model draws for the scores; more gives tighter "
                                        "intervals but takes longer")
            networks = gr.Radio([("Real networks (Inception, CLIP, LPIPS)", "real"),
                                 ("Test networks (random weights: numbers are not real)", "test")], value="real",
                                label="Metric networks",
                                info="The real scoring networks (downloaded once) or test ones that only check the "
                                     "app works")
        evaluate = gr.Button("Evaluate", variant="primary")
        eval_summary = gr.Markdown()
        eval_table = gr.Dataframe(headers=TABLE_HEADERS, label="Base (A) vs tuned (B)", wrap=True,
                                  interactive=False)
        eval_scatter = gr.Plot(label="Per-image FID vs KL (paper 000's scatter)")

    settings = [name, model, method, steps, learning_rate, embedding_lr, rank, alpha, vectors, initializer,
                text_encoder, prior, class_prompt, precision, checkpointing, adam_8bit, seed, checkpoint_every,
                validation_every, validation_prompt, joint]
    prepare.click(friendly_errors(prepare_dataset),
                  inputs=[files, name, trigger, resolution, face_aware, caption_model],
                  outputs=[crops, captions, dataset_status], api_name="style_prepare",
                  **keeps_results(dataset_status), **MODEL_WORK)
    method.change(method_hint, inputs=method, outputs=hint, api_name=False)
    preset.change(memory_preset, inputs=preset, outputs=[precision, checkpointing, adam_8bit], api_name=False)
    train.click(friendly_errors(train_style), inputs=[captions, *settings],
                outputs=[train_status, loss_plot, validation, tuned, exported], api_name="style_train",
                **keeps_results(train_status), **MODEL_WORK)
    cancel.click(cancel_training, outputs=train_status, concurrency_limit=None, api_name="style_cancel")
    compare.click(friendly_errors(compare_models),
                  inputs=[tuned, prompt, negative, lora_scale, ab_seed, count, ab_steps, size, fast_preview],
                  outputs=[grid, compare_notes], api_name="style_compare", **keeps_results(compare_notes),
                  **MODEL_WORK)
    evaluate.click(friendly_errors(evaluate_models),
                   inputs=[tuned, prompt, eval_count, ab_steps, lora_scale, size, networks],
                   outputs=[eval_summary, eval_table, eval_scatter], api_name="style_evaluate",
                   **keeps_results(eval_summary), **MODEL_WORK)
    if tab is not None:  # trainings finished elsewhere (CLI, another page) show up when the tab is opened
        tab.select(lambda: gr.update(choices=tuned_choices()), outputs=tuned, api_name=False)
