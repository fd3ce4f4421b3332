"""Storyboard tab: prompts → sketches you can redraw, erase in and reorder → consistent frames (our reading of
MAGA), with the on/off A/B and the L × S sweep."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipelines.core.errors import UserError
from pipelines.core.gpu import STORYBOARD_S, ZEROGPU_MAX_S, gpu_task
from pipelines.storyboard.memory import DEFAULT_START_LAYER, DEFAULT_START_STEP_OF_50, SCOPES, SD15_TRANSFORMER_BLOCKS
from pipelines.storyboard.request import (
    CONTROL_TYPES,
    DEFAULT_CONTROL,
    DEFAULT_PANELS,
    DEFAULT_SKETCH_STEPS,
    DEFAULT_STEPS,
    EXAMPLES,
    FRAME_NEGATIVE,
    LINE_METHODS,
    MAX_PANELS,
    MIN_PANELS,
)

from .common import (
    MODEL_WORK,
    SEED_INFO,
    friendly_errors,
    image_editor_input,
    keeps_results,
    progress_callback,
    test_model_note,
)

MAGA_LABEL = ("**Memory attention (our reading of paper 001's MAGA):** from layer L of the model and denoising "
              "step S on, each frame also looks at the earlier frames while it is drawn, so the character stays the "
              "same. The paper's own equations cannot carry history (its values come from the current frame); "
              "see About.")


def _model_choices() -> list[tuple[str, str]]:
    from pipelines.diffusion.models import model_choices

    return model_choices()


def _control_choices() -> list[tuple[str, str]]:
    """The storyboard's control types by name, each with its ControlNet's licence and download size."""
    from pipelines.core import catalog
    from pipelines.core.tiny_models import dropdown_choice

    def label(name: str, source: str) -> str:
        entry = catalog.entry_for(source)
        return f"{name} ({source})" + (f" — {catalog.licence_and_size(entry)}" if entry else "")

    return [(label(name, source), name) for name, source in CONTROL_TYPES.items()] + [dropdown_choice("controlnet")]


def _sketch_of(editor_value: Any) -> Any:
    """The composite a gr.ImageEditor holds (background + strokes), or None for an empty panel."""
    if editor_value is None:
        return None
    if isinstance(editor_value, dict):
        return editor_value.get("composite") or editor_value.get("background")
    return editor_value


def _panel_prompts(count: int, prompts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(prompt or "") for prompt in prompts[:int(count)])


def load_example(name: str) -> list[Any]:
    prefix, prompts = EXAMPLES[name]
    padded = list(prompts) + [""] * (MAX_PANELS - len(prompts))
    return [len(prompts), prefix, *padded, *[None] * MAX_PANELS]


def show_panels(count: int) -> list[Any]:
    return [gr.update(visible=index < int(count)) for index in range(MAX_PANELS)]


def _sketch_request(count: int, prefix: str, prompts: tuple[str, ...], model: str, seed: int, steps: int,
                    size: int, method: str, block: int, c: int, low: int, high: int) -> Any:
    from pipelines.storyboard.request import LineSettings, SketchRequest

    lines = LineSettings(method, int(block), int(c), int(low), int(high))
    return SketchRequest(prompts=_panel_prompts(count, prompts), prefix=prefix or "", model=model, seed=int(seed),
                         steps=int(steps), width=int(size), height=int(size), lines=lines)


@gpu_task
def draw_sketches(count: int, prefix: str, model: str, seed: int, steps: int, size: int, method: str, block: int,
                  c: int, low: int, high: int, panel: int, *prompts: str, progress=gr.Progress()) -> list[Any]:
    """Sketches for every panel (panel = 0) or only panel `panel` (1-based); the editors of the others are kept."""
    from pipelines.storyboard.runs import run_sketches

    request = _sketch_request(count, prefix, prompts, model, seed, steps, size, method, block, c, low, high)
    panels = None if not panel else [int(panel) - 1]
    output = run_sketches(request, panels, callback=progress_callback(progress))[1]  # History lists it
    updates: list[Any] = [gr.update() for _ in range(MAX_PANELS)]
    for index, sketch in zip(output.panels, output.sketches, strict=True):
        updates[index] = sketch
    note = test_model_note(output.test_model)
    return [*updates, "\n\n".join(part for part in [f"Sketches in {output.seconds:.1f} s.", note, *output.notes]
                                  if part)]


def reorder_panels(order: str, count: int, *values: Any) -> list[Any]:
    """New panel order from "2,1,3,4"; prompts and sketches move together."""
    from pipelines.storyboard.sketches import reordered

    count = int(count)
    try:
        indices = [int(item) - 1 for item in str(order).replace(" ", "").split(",") if item]
    except ValueError as err:
        raise ValueError(f"Write the new order as panel numbers separated by commas, e.g. 2,1,3 (got {order!r}).") \
            from err
    prompts, editors = list(values[:MAX_PANELS]), list(values[MAX_PANELS:])
    new_prompts, new_editors = reordered(prompts[:count], indices), reordered(editors[:count], indices)
    return [*new_prompts, *prompts[count:], *new_editors, *editors[count:]]


def _board_request(count: int, prefix: str, negative: str, model: str, control: str, scale: float, steps: int,
                   cfg: float, seed: int, size: int, memory_on: bool, start_layer: int, start_step: int, scope: str,
                   ratio: float, values: tuple[Any, ...]) -> Any:
    from pipelines.storyboard.request import MemorySettings, StoryboardRequest

    count = int(count)
    prompts = _panel_prompts(count, values[:MAX_PANELS])
    sketches = tuple(_sketch_of(value) for value in values[MAX_PANELS:MAX_PANELS + count])
    return StoryboardRequest(prompts=prompts, sketches=sketches, prefix=prefix or "", negative_prompt=negative or "",
                             model=model, control=control, control_scale=float(scale), steps=int(steps),
                             cfg_scale=float(cfg), seed=int(seed), width=int(size), height=int(size),
                             memory=MemorySettings(bool(memory_on), int(start_layer), int(start_step), scope,
                                                   float(ratio)))


@gpu_task(duration=STORYBOARD_S)
def draw_storyboard(*args: Any, progress=gr.Progress()) -> tuple[list[str], Any, list[str], str]:
    """Frames (PNG paths), the strip, the page PNG/PDF and GIF files, and a readout."""
    from pipelines.storyboard.runs import run_storyboard

    request = _board_request(*args[:15], values=args[15:])
    record, output = run_storyboard(request, callback=progress_callback(progress))
    frames = record.outputs[:len(output.frames)]
    files = [path for path in record.outputs if path.endswith(("_page.png", "_page.pdf", ".gif"))]
    strip = next(path for path in record.outputs if path.endswith("_strip.png"))
    readout = (f"**{len(frames)} frames in {output.seconds:.1f} s** ({output.seconds_per_frame:.2f} s per frame, "
               f"peak memory {output.peak_memory_mb:.0f} MB) · memory attention "
               f"{'on' if output.memory_on else 'off'} · run `{record.id}`")
    notes = [readout, test_model_note(output.test_model), *output.notes]
    return frames, strip, files, "\n\n".join(note for note in notes if note)


@gpu_task(duration=2 * STORYBOARD_S)  # two storyboards
def compare_on_off(*args: Any, progress=gr.Progress()) -> tuple[list[Any], list[Any], list[list[Any]], str]:
    from pipelines.storyboard.compare import ab_compare

    request = _board_request(*args[:15], values=args[15:])
    result = ab_compare(request, callback=progress_callback(progress), record=True)  # both boards join History
    rows = [] if result.report is None else [
        [row.name, _fmt(row.a), _fmt(row.b), _fmt(row.difference), f"[{_fmt(row.low)}, {_fmt(row.high)}]",
         row.verdict] for row in result.report.rows]
    note = "Panel 1 is the same either way (it has no memory): the numbers compare panels 2 and after with it."
    warnings = [] if result.report is None else [*result.report.warnings, *(
        f"{key}: {reason}" for key, reason in result.report.skipped.items())]
    tests = test_model_note(result.memory_on.test_model)
    return result.memory_off.frames, result.memory_on.frames, rows, "\n\n".join(
        part for part in [note, tests, *warnings] if part)


def _fmt(value: Any) -> str:
    from pipelines.metrics.stats import readable_number

    return "–" if value is None else readable_number(float(value))


@gpu_task(duration=ZEROGPU_MAX_S)  # a storyboard per grid cell
def sweep_grid(layers: str, steps: str, *args: Any, progress=gr.Progress()) -> tuple[Any, str]:
    from pipelines.storyboard.runs import run_sweep

    def numbers(text: str, low: int, high: int, what: str) -> list[int]:
        wanted = f"list 1 to 6 whole numbers from {low} to {high}, separated by commas, e.g. {low},{(low + high) // 2}"
        try:
            values = [int(item) for item in str(text).replace(" ", "").split(",") if item]
        except ValueError as err:
            raise UserError(f"{what}: {text!r} is not a list of numbers; {wanted}.") from err
        if not values or any(not low <= value <= high for value in values) or len(values) > 6:
            raise UserError(f"{what}: {wanted} (got {text!r}).")
        return values

    request = _board_request(*args[:15], values=args[15:])
    record, result = run_sweep(request, numbers(layers, 0, SD15_TRANSFORMER_BLOCKS - 1, "Layers L to try"),
                               numbers(steps, 0, 50, "Steps S to try"), callback=progress_callback(progress))
    return result.image, (f"Rows: steps S {', '.join(map(str, result.steps_of_50))}; columns: layers L "
                          f"{', '.join(map(str, result.layers))}. Run `{record.id}` in History.")


def build(tab: gr.Tab | None = None) -> None:
    from pipelines.diffusion.models import default_controlnet, default_model

    models = _model_choices()
    default = default_model()
    gr.Markdown("Write what happens in each panel, draw the sketches (then redraw, erase in or replace any of "
                "them), and draw the storyboard over them. " + MAGA_LABEL)
    with gr.Row():
        example = gr.Dropdown(list(EXAMPLES), value=next(iter(EXAMPLES)), label="Example story (from paper 001)",
                              info="A ready-made story from paper 001 to start from",
                              scale=3)
        load = gr.Button("Load example", scale=1)
    with gr.Row():
        count = gr.Slider(MIN_PANELS, MAX_PANELS, value=DEFAULT_PANELS, step=1, label="Panels",
                          info="How many pictures the story has",
                          elem_id="sb-count")
        prefix = gr.Textbox(label="Character and style (put before every panel's prompt, with a comma)",
                            info="Describe the character once, e.g. 1girl, red scarf, anime style; it is added to "
                                 "every panel",
                            scale=3,
                            elem_id="sb-prefix")
    prompts, editors, rows = [], [], []
    for index in range(MAX_PANELS):
        with gr.Row(visible=index < DEFAULT_PANELS) as row:
            prompts.append(gr.Textbox(label=f"Panel {index + 1}", lines=3, scale=1, elem_id=f"sb-prompt-{index}",
                                      info="What happens in this panel, e.g. sitting on a bench, smiling"))
            # No layers panel: it covered most of a returned sketch; the sketch is one layer anyway.
            editors.append(image_editor_input(f"Sketch {index + 1} (draw, erase, or upload your own)",
                                              type="pil", height=360, scale=1, elem_id=f"sb-sketch-{index}",
                                              brush=gr.Brush(colors=["#000000"], default_size=3),
                                              eraser=gr.Eraser(default_size=12), layers=False,
                                              canvas_size=(512, 512)))
        rows.append(row)
    with gr.Accordion("Sketch settings", open=False):
        with gr.Row():
            sketch_model = gr.Dropdown(models, value=default, allow_custom_value=True, label="Sketch model",
                                       info="The image model that draws the line-art sketches")
            sketch_seed = gr.Number(0, precision=0, label="Seed (panel i uses seed + i)",
                                    info=SEED_INFO)
            sketch_steps = gr.Slider(1, 80, value=DEFAULT_SKETCH_STEPS, step=1, label="Steps",
                                     info="How many times the picture is refined; more is slower and often cleaner",
                                     elem_id="sb-sketch-steps")
            sketch_size = gr.Slider(256, 1024, value=512, step=64, label="Sketch size (px; smaller is faster)",
                                    info="Width and height of each sketch",
                                    elem_id="sb-sketch-size")
        with gr.Row():
            method = gr.Radio(list(LINE_METHODS), value=LINE_METHODS[0], label="Clean lines with",
                              info="How a sketch is turned into clean black lines")
            block = gr.Slider(3, 51, value=15, step=2, label="Line neighbourhood (adaptive block size)",
                              info="Adaptive threshold: the neighbourhood (px) each pixel is compared with; larger "
                                   "gives bolder lines")
            c = gr.Slider(0, 30, value=8, step=1, label="Line threshold (adaptive C)",
                          info="Adaptive threshold: how much darker than its neighbourhood a pixel must be to become "
                               "a line; higher gives fewer lines")
            low = gr.Slider(0, 500, value=100, step=5, label="Edge threshold, low (Canny)",
                            info="Canny edge finder: edges weaker than this are dropped; lower finds more lines")
            high = gr.Slider(0, 1000, value=200, step=5, label="Edge threshold, high (Canny)",
                             info="Canny edge finder: edges stronger than this always become lines")
    with gr.Row():
        sketch_all = gr.Button("Draw all sketches", variant="primary", elem_id="sb-sketch-all")
        redraw_panel = gr.Number(1, precision=0, label="Panel to redraw",
                                 info="The number of the panel whose sketch to draw again",
                                 minimum=1, maximum=MAX_PANELS)
        redraw = gr.Button("Redraw this panel")
        order = gr.Textbox(label="New order (e.g. 2,1,3,4)",
                           info="Panel numbers in the order you want them")
        reorder = gr.Button("Reorder panels")
    sketch_status = gr.Markdown(elem_id="sb-sketch-status", min_height=60)  # room for the progress bar

    with gr.Accordion("Frame settings", open=True):
        with gr.Row():
            model = gr.Dropdown(models, value=default, allow_custom_value=True, label="Anime model (SD 1.5)",
                                info="The image model that draws the final frames")
            controls = _control_choices()
            # With only the test model here (offline), default to the test ControlNet too: a real one would fail.
            default_control = default_controlnet(DEFAULT_CONTROL, default)
            control = gr.Dropdown(controls, value=default_control, allow_custom_value=True, label="ControlNet",
                                  info="The add-on that makes each frame follow its sketch")
            scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Sketch strength (conditioning scale)",
                              info="How closely the frames follow the sketches: 0 ignores them, 1 follows them")
        with gr.Row():
            steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps",
                              info="How many times the picture is refined; more is slower and often cleaner",
                              elem_id="sb-steps")
            cfg = gr.Slider(1, 20, value=7, step=0.5, label="Prompt strength (CFG scale)",
                            info="Guidance (CFG): how strictly the picture follows the prompt; 5–8 is usual, high "
                                 "values look harsh")
            seed = gr.Number(0, precision=0, label="Seed (panel i uses seed + i)",
                             info=SEED_INFO,
                             elem_id="sb-seed")
            size = gr.Slider(256, 1024, value=512, step=64, label="Size (px)",
                             info="Width and height of each frame; 512 suits SD 1.5, smaller is faster",
                             elem_id="sb-size")
        negative = gr.Textbox(FRAME_NEGATIVE, label="Negative prompt",
                              info="What you do not want in the picture, e.g. lowres, bad anatomy")
        with gr.Row():
            memory_on = gr.Checkbox(True, label="Keep the character the same (memory attention, MAGA)",
                                    info="Each frame looks at the earlier frames while it is drawn, so the character "
                                         "stays the same")
            start_layer = gr.Slider(0, SD15_TRANSFORMER_BLOCKS - 1, value=DEFAULT_START_LAYER, step=1,
                                    label="Memory from layer L on (0–15)",
                                    info="Which of the model's 16 attention layers start sharing memory; lower shares"
                                         " more (layout too), higher only details")
            start_step = gr.Slider(0, 50, value=DEFAULT_START_STEP_OF_50, step=1, label="Memory from step S on (of 50)",
                                   info="From which denoising step (of 50) memory is shared; later keeps each frame's"
                                        " own layout")
            scope = gr.Radio(list(SCOPES), value="all", label="Memory: earlier frames",
                             info="Which earlier frames each frame looks at")
            ratio = gr.Slider(0.05, 1, value=1, step=0.05, label="Memory tokens kept",
                              info="The share of earlier frames' features kept in memory; less is faster and looser")
    with gr.Row():
        draw = gr.Button("Draw the storyboard", variant="primary", elem_id="sb-draw")
    frames = gr.Gallery(label="Frames", columns=4, height=320, elem_id="sb-frames")
    strip = gr.Image(label="Strip", type="filepath", elem_id="sb-strip")
    files = gr.File(label="Comic page (PNG, PDF) and GIF", file_count="multiple")
    readout = gr.Markdown(elem_id="sb-readout")

    with gr.Accordion("Compare: memory on versus off, and the L × S sweep", open=False):
        ab_button = gr.Button("Memory on vs off (same seeds and sketches)")
        with gr.Row():
            off_gallery = gr.Gallery(label="Memory off", columns=4, height=240)
            on_gallery = gr.Gallery(label="Memory on", columns=4, height=240)
        ab_table = gr.Dataframe(headers=["Metric", "Off (A)", "On (B)", "On − off", "95% interval", "Verdict"],
                                interactive=False, wrap=True)
        ab_notes = gr.Markdown()
        gr.Markdown("*How alike the frames are*: **CLIP-I** and **DINO-I** score how alike two pictures look to "
                    "the CLIP or DINO image network (higher: more alike, so the character stayed the same); "
                    "**CLIP score** how well each frame matches its prompt. The interval is where the true "
                    "difference most likely lies; see About's glossary.")
        with gr.Row():
            sweep_layers = gr.Textbox("0,4,8,12", label="Layers L to try (columns)",
                                      info="Layers to try, as a comma list (0–15); each is one column of the grid")
            sweep_steps = gr.Textbox("0,12,24,36", label="Steps S to try, of 50 (rows)",
                                     info="Steps to try, as a comma list (0–50); each is one row of the grid")
            sweep_button = gr.Button("Sweep")
        sweep_image = gr.Image(label="Sweep: one strip per (S, L)", type="pil")
        sweep_note = gr.Markdown(elem_id="sb-sweep-note")

    settings = [count, prefix, negative, model, control, scale, steps, cfg, seed, size, memory_on, start_layer,
                start_step, scope, ratio]
    sketch_inputs = [count, prefix, sketch_model, sketch_seed, sketch_steps, sketch_size, method, block, c, low,
                     high]
    load.click(load_example, inputs=example, outputs=[count, prefix, *prompts, *editors], api_visibility="private")
    count.change(show_panels, inputs=count, outputs=rows, api_visibility="private")
    # Progress in the status line, full width ("Sketch 2 of 4, step 5/25"), not clipped over each small editor.
    sketch_all.click(friendly_errors(draw_sketches), inputs=[*sketch_inputs, gr.State(0), *prompts],
                     outputs=[*editors, sketch_status], api_name="storyboard_sketches",
                     **keeps_results(sketch_status), **MODEL_WORK)
    redraw.click(friendly_errors(draw_sketches), inputs=[*sketch_inputs, redraw_panel, *prompts],
                 outputs=[*editors, sketch_status], api_name="storyboard_redraw", **keeps_results(sketch_status),
                 **MODEL_WORK)
    reorder.click(friendly_errors(reorder_panels), inputs=[order, count, *prompts, *editors],
                  outputs=[*prompts, *editors], api_visibility="private")
    draw.click(friendly_errors(draw_storyboard), inputs=[*settings, *prompts, *editors],
               outputs=[frames, strip, files, readout], api_name="storyboard", **keeps_results(readout),
               **MODEL_WORK)
    ab_button.click(friendly_errors(compare_on_off), inputs=[*settings, *prompts, *editors],
                    outputs=[off_gallery, on_gallery, ab_table, ab_notes], api_name="storyboard_ab",
                    **keeps_results(ab_notes), **MODEL_WORK)
    sweep_button.click(friendly_errors(sweep_grid), inputs=[sweep_layers, sweep_steps, *settings, *prompts, *editors],
                       outputs=[sweep_image, sweep_note], api_name="storyboard_sweep", **keeps_results(sweep_note),
                       **MODEL_WORK)
