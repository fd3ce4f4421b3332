"""Start here: what each tab does, in plain words, with a real result the app itself made (assets/examples/, written
by `python -m tools.make_examples`), each one click from being made again: "Try it" opens the tab with the
example's settings filled in and presses its button.

Only methods that give a real result on this machine show an example. The Stable Diffusion tabs (and Neural style,
until a real style network is here) say what they do and what they need instead: an example made with random
weights would pass noise off as a result.

A tab takes part by calling `offer_example(tab, run_button_id, **inputs)` at the end of its build(); app.py calls
`connect(tabs, built)` once every tab is built, which wires each "Try it" button to its tab's inputs. Building the
page reads a few small JSON files and PNGs; it imports no model library.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "assets" / "examples"
QUICK_EXAMPLE = "single_image"  # the one the start-here line points at: a real result in well under a minute


@dataclass(frozen=True)
class MethodIntro:
    tab_id: str  # the gr.Tab id app.py gives the tab (its module's name)
    title: str
    what: str  # what a person does there and gets, in plain words


INTROS = (
    MethodIntro("single_image", "Single-image variation",
                "Train a small model on **one picture**, then get new pictures that rearrange its parts "
                "(wider, taller, more or less varied), or change a region with a few words."),
    MethodIntro("landmark_faces", "Landmark faces",
                "Place **24 points** on a face (eyes, brows, mouth, chin) with sliders, and get faces drawn to "
                "follow them, with tags for hair and eye colour."),
    MethodIntro("metrics", "Metrics / A-B",
                "Which of two sets of pictures is better, or closer to real ones? **Scores with 95% intervals and "
                "a plain verdict**, or a blind vote by eye."),
    MethodIntro("neural_style", "Neural style",
                "Repaint your photos in a drawing style, about a second each on a CPU (also live from a webcam), "
                "or teach it a new style from one picture."),
    MethodIntro("style_finetune", "Style fine-tuning",
                "Teach Stable Diffusion a drawing style from **3–200 of your pictures**, then compare pictures "
                "made before and after, side by side."),
    MethodIntro("storyboard", "Storyboard",
                "Write **one line per panel**; get rough sketches you can draw over, then finished frames that "
                "keep the same character from panel to panel."),
)
SD_TABS = ("style_finetune", "storyboard")


# ---------------------------------------------------------------------------------------------- the examples
def load_examples(folder: Path = EXAMPLES_DIR) -> dict[str, dict[str, Any]]:
    """tab id -> the example's card (its JSON) for every example whose PNG is here too."""
    cards = {}
    for path in sorted(folder.glob("*.json")):
        card = json.loads(path.read_text())
        if (folder / card.get("image", "")).is_file():
            cards[card["tab"]] = {**card, "image_path": str(folder / card["image"])}
    return cards


def about_seconds(seconds: float) -> str:
    """'about 20 s' / 'under a second' / 'about 1 min': the time a visitor can expect, rounded up to 5 s."""
    if seconds < 1:
        return "under a second"
    if seconds < 55:
        return f"about {max(5, math.ceil(seconds / 5) * 5)} s"
    return f"about {math.ceil(seconds / 60)} min"


def took(card: dict[str, Any]) -> str:
    """'it took 17.0 s on a 2-core processor (busy with other work then)', or '… on cuda float16'."""
    cores = card.get("cpu_cores")
    if not cores:
        return f"it took {card['seconds']} s on {card['device']}"
    busy = " (busy with other work then)" if card.get("load", 0) > cores else ""
    return f"it took {card['seconds']} s on a {cores}-core processor{busy}"


def start_here_text(examples: dict[str, dict[str, Any]]) -> str:
    """The line that leads a newcomer to a result, then what the page is; short, so it fits a phone's first screen."""
    quick = examples.get(QUICK_EXAMPLE)
    lines = []
    if quick:
        lines.append(f"**New here? Press Try it under {quick['title']}** below: you get new variations of a photo in "
                     f"{about_seconds(quick['seconds'])}.")
    lines.append("Each tab is one research method for anime and cartoon-style pictures. The examples here were "
                 "**made by this app**; **Try it** opens the tab with the same settings and makes it again.")
    return "\n\n".join(lines)


def sd_model_status() -> str:
    """Whether a real Stable Diffusion 1.5 model is on this machine (the models folder or the download cache)."""
    from pipelines.core import catalog
    from pipelines.diffusion.models import local_checkpoints

    local = local_checkpoints()
    if local:
        return f"A real model is here: **{Path(local[0]).name}**."
    cached = [entry for entry in catalog.entries("sd15") if catalog.is_cached(entry)]
    if cached:
        return f"A real model is here: **{cached[0].label}**."
    if catalog.hub_may_be_used():
        entry = next(iter(catalog.entries("sd15")), None)
        size = f" ({entry.size_text})" if entry else ""
        return f"It needs a real Stable Diffusion 1.5 model{size}, downloaded the first time you use the tab."
    return ("It needs a real Stable Diffusion 1.5 model, and **none is on this machine** (it cannot download "
            "one now), so only the test model runs here: random weights, its pictures are noise.")


def neural_style_status() -> tuple[bool, str]:
    """(a real style network is here, what to say about it)."""
    from pipelines.core.catalog import hub_may_be_used
    from pipelines.neural_style import list_styles

    real = [entry for entry in list_styles() if entry.kind != "test"]
    ready = [entry for entry in real if entry.available]
    if ready:
        return True, f"Style networks here: {len(ready)}, e.g. *{ready[0].label}*. Press **Stylize** on the samples."
    if hub_may_be_used():
        return False, ("Its ready-made styles (a few MB each) download the first time you use one: open the tab, "
                       "press **Use the sample photos**, then **Stylize**.")
    return False, ("Its ready-made styles are **not on this machine** and cannot be downloaded now, so there is no "
                   "example: only the test style runs here (random weights, not a real style). Training your own "
                   "style needs a download too (the VGG16 network that judges style).")


# ---------------------------------------------------------------------------------------------- the page
def _example_card(intro: MethodIntro, card: dict[str, Any]) -> gr.Button:
    gr.Markdown(f"#### {intro.title}\n{intro.what}")
    gr.Image(card["image_path"], format="png", show_label=False, interactive=False, container=False,
             buttons=[], alt_text=card["caption"], elem_id=f"start-image-{intro.tab_id}")
    gr.Markdown(f"{card['caption']}\n\n*Made by this app with {card['model']}; {took(card)}.*",
                elem_classes=["start-caption"])
    return gr.Button(f"Try it: {intro.title}", variant="primary", size="sm", elem_id=f"start-try-{intro.tab_id}")


def _plain_card(intro: MethodIntro, note: str, label: str) -> gr.Button:
    gr.Markdown(f"#### {intro.title}\n{intro.what}\n\n{note}")
    return gr.Button(label, size="sm", elem_id=f"start-open-{intro.tab_id}")


def build(tab: gr.Tab | None = None) -> None:
    examples = load_examples()
    gr.Markdown(start_here_text(examples), elem_id="start-here")
    buttons: dict[str, tuple[gr.Button, dict[str, Any] | None]] = {}
    style_ready, style_note = neural_style_status()
    sd_note = sd_model_status()
    with gr.Row(equal_height=False, elem_id="start-examples"):  # the methods with a real example, wide enough to see
        for intro in (intro for intro in INTROS if intro.tab_id in examples):
            with gr.Column(min_width=300, variant="panel"):
                buttons[intro.tab_id] = (_example_card(intro, examples[intro.tab_id]), examples[intro.tab_id])
    with gr.Row(equal_height=False, elem_id="start-others"):
        for intro in (intro for intro in INTROS if intro.tab_id not in examples):
            with gr.Column(min_width=280, variant="panel"):
                if intro.tab_id == "neural_style":
                    label = "Try it on the sample photos" if style_ready else f"Open {intro.title}"
                    # the sample photos are filled in either way; Stylize is pressed only with a real style here
                    buttons[intro.tab_id] = (_plain_card(intro, style_note, label), {"press": style_ready})
                else:  # the SD tabs (or a method whose example is missing): what it needs, and a way there
                    note = sd_note if intro.tab_id in SD_TABS else ""
                    buttons[intro.tab_id] = (_plain_card(intro, note, f"Open {intro.title}"), None)
    gr.Markdown("Everything you make is kept with its settings in **History**, where any result can be made again. "
                "**About** says where each method comes from and explains the terms.")
    if tab is not None:
        tab.start_buttons = buttons


# ---------------------------------------------------------------------------------------------- the wiring
def offer_example(tab: gr.Tab | None, run_button: str, **inputs: gr.components.Component) -> None:
    """A tab's hook: the components an example fills (by the names its JSON's params use) and the elem_id of the
    button that runs it."""
    if tab is not None:
        tab.example_inputs = (run_button, inputs)


def _landmark_values(card: dict[str, Any]) -> dict[str, Any]:
    from pipelines.landmark_faces import default_model
    from pipelines.landmark_faces import landmarks as L

    params = card["params"]
    face = L.FaceParams(**params.get("face", {}))
    values = {f"face.{name}": getattr(face, name) for name in L.PARAM_NAMES}
    values["points"] = L.parametric_face(face).tolist()
    values["model"] = default_model()  # the shipped U-Net, which made the example
    return values | {key: params[key] for key in ("tags", "guidance", "steps", "seed", "count")}


def _single_image_values(card: dict[str, Any]) -> dict[str, Any]:
    from pipelines.single_image.runs import shipped_model

    from .single_image import model_label

    model = str(shipped_model() or "")
    keys = ("count", "seed", "start_scale", "width_scale", "height_scale", "milestone")
    return {"model_path": model, "model_label": model_label(model)} | {key: card["params"][key] for key in keys}


def _metrics_values(card: dict[str, Any]) -> dict[str, Any]:
    files = {label: [str(ROOT / path) for path in paths] for label, paths in card["files"].items()}
    params = card["params"]
    return {"files_a": files["a"], "files_b": files["b"], "files_reference": files["reference"],
            "metrics": params["metrics"], "seed": params["seed"], "n_bootstrap": params["n_bootstrap"]}


def _neural_style_values(card: dict[str, Any]) -> dict[str, Any]:
    from .neural_style import sample_photos

    return {"files": sample_photos()}


VALUES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "landmark_faces": _landmark_values, "single_image": _single_image_values, "metrics": _metrics_values,
    "neural_style": _neural_style_values}


def _fill(tab_id: str, card: dict[str, Any], names: list[str]) -> Callable[[], tuple[Any, ...]]:
    def fill() -> tuple[Any, ...]:
        values = VALUES[tab_id](card)
        return (gr.Tabs(selected=tab_id), *(values[name] for name in names))

    return fill


def _press(elem_id: str) -> str:
    """Browser-side: press the tab's run button, as a person would. This runs once the fill event's values are
    applied; the short wait lets the newly shown tab render first."""
    return f"() => {{ setTimeout(() => document.querySelector('#{elem_id}')?.click(), 200); }}"


def connect(tabs: gr.Tabs, built: dict[str, gr.Tab]) -> None:
    """Wire each Start button: switch to its tab, fill in the example's inputs, press the tab's run button."""
    start = built.get("start")
    for tab_id, (button, card) in getattr(start, "start_buttons", {}).items():
        target = built.get(tab_id)
        run_button, inputs = getattr(target, "example_inputs", (None, {}))
        if card is None or run_button is None or tab_id not in VALUES:  # only open the tab
            button.click(lambda tab_id=tab_id: gr.Tabs(selected=tab_id), outputs=tabs, api_visibility="private")
            continue
        names = [name for name in inputs if name in VALUES[tab_id](card)]
        event = button.click(_fill(tab_id, card, names), outputs=[tabs, *(inputs[name] for name in names)],
                             api_visibility="private")
        if card.get("press", True):
            event.then(None, js=_press(run_button), api_visibility="private")
