"""About: what methods AI models use to create animation-style images — one card per method.

The cards come from each method pipeline's METHOD_CARD, so a new tab brings its own card.
"""

from __future__ import annotations

import importlib

import gradio as gr

INTRO = """## How do AI models make images that look like animation?

There are two families of answer, and this app lets you try both. **Image-to-image style transfer** keeps
the content of a picture and repaints it: a small convolutional network learns one style's colours,
strokes and outlines and applies it in a single pass. **Generative models** (diffusion models such as
Stable Diffusion) learn the style itself and draw new images in it from text, sketches or landmarks.
Each card below is one method: what goes in, which model does the work, what comes out, and what it is
good and bad at, with the papers and code it builds on."""


def method_cards() -> list:
    from . import method_pipelines

    cards = []
    for module_name in method_pipelines():
        card = getattr(importlib.import_module(module_name), "METHOD_CARD", None)
        if card is not None:
            cards.append(card)
    return cards


def build(tab: gr.Tab | None = None) -> None:
    gr.Markdown(INTRO)
    for card in method_cards():
        with gr.Group():
            gr.Markdown(card.to_markdown(), elem_classes=["method-card"])
