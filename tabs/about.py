"""About: what methods AI models use to create animation-style images — one card per method.

The cards come from each method pipeline's METHOD_CARD, so a new tab brings its own card.
"""

from __future__ import annotations

import importlib
import re

import gradio as gr

# The documents the methods come from, by number. The app calls them "paper 000" (or by title), never "seed 000":
# every tab has a random "Seed" setting, and the two must not be confused.
PAPERS = {
    "000": "Leveraging AI and Diffusion Models for Anime Art Creation: A Study on Style Transfer and Image Quality "
           "Evaluation (Shen, Luo, Fan, Dai)",
    "001": "Sketch-Guided Consistent Image Generation Using Multi-Aggregation Attention Mechanism (Yang, thesis)",
    "002": "What methods do AI models use to create images that mimic animation styles? (a research report)",
    "003": "Applying Conditional Information in Guiding Diffusion-Based Method for Anime-Style Face Drawing "
           "(Nguyễn Phan Gia Bảo, bachelor thesis, 2024)",
    "004": "Prompt-Based Learning for Image Variation Using Single Image Multi-Scale Diffusion Models (Park et al., "
           "IEEE Access 2024)",
}

# The terms the tabs keep (they are what the papers and other tools call them), in plain words.
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("Stable Diffusion (SD 1.5)",
     "A freely available model that draws an image from a text description by removing noise step by step. "
     "The generating tabs use it (or a checkpoint built on it, such as an anime model)."),
    ("Prompt / negative prompt", "What you want in the picture / what you do not want in it, in words."),
    ("Seed",
     "A number that fixes the randomness: the same seed and settings give the same picture again; another "
     "seed gives another picture."),
    ("Steps (sampling steps)",
     "How many times the model refines the picture; more is slower and often cleaner (20–30 is usual)."),
    ("CFG (guidance scale)",
     "Classifier-free guidance: how strictly the picture follows the prompt. 5–8 is usual; high values "
     "look harsh."),
    ("LoRA",
     "Low-rank adaptation: a small add-on file (a few MB) that teaches a big model a style or character "
     "without changing the model itself. Its *scale* sets how strongly it applies; its *rank* how much it "
     "can learn."),
    ("DreamBooth",
     "A way to fine-tune a model on a few images so that a made-up **trigger word** stands for their "
     "style."),
    ("Textual inversion (embedding)",
     "Teaching the model a new *word* (the trigger word) instead of changing the model: tiny, but learns "
     "less than a LoRA."),
    ("ControlNet",
     "An add-on that makes the picture follow a drawing: line art, a pose or face points. Its *strength* "
     "sets how closely."),
    ("IP-Adapter", "An add-on that takes a reference picture (e.g. a face) as part of the prompt."),
    ("MAGA (memory attention)",
     "Multi-aggregation attention, from paper 001: while drawing each panel the model also looks at the "
     "earlier panels, so the character stays the same. *Block L* and *step S* say from which layer and "
     "which denoising step on it looks."),
    ("FID / KID",
     "How far a set of images is from a reference set, measured by an image network's features (lower is "
     "closer). KID works with fewer images."),
    ("IS", "Inception score: how clear and varied a set of images is to an image classifier (higher is better)."),
    ("CLIP score / CLIP-I / DINO-I",
     "CLIP score: how well images match their prompts. CLIP-I and DINO-I: how alike two images look to the "
     "CLIP or DINO network (higher is more alike)."),
    ("LPIPS",
     "How different two images look to people, as a network estimates it (0 = the same). Diversity is the "
     "average LPIPS between images of a set."),
    ("SSIM / PSNR", "How close an image is to a reference, pixel by pixel (higher is closer)."),
    ("95% interval",
     "The range the true difference most likely lies in, from resampling the images (bootstrap). If it "
     "includes 0, the difference may be chance."),
    ("VGG16 loss network",
     "An image network that judges, while a style is trained, how close a result is to the style and the "
     "photo."),
    ("BLIP / CLIP", "BLIP writes a caption for a picture; CLIP scores how well a caption fits a picture."),
    ("GPNN", "Makes variations of one image by reshuffling its patches; no training."),
    ("Test model (random weights)",
     "A tiny stand-in that lets every button work without the real model; its output is noise."),
)

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


def glossary_markdown() -> str:
    return "| term | what it means here |\n| --- | --- |\n" + "\n".join(
        f"| **{term}** | {meaning} |" for term, meaning in GLOSSARY)


_SEED_NUMBER = re.compile(r"\b([Ss])eed (\d{3})\b")
_THE_SEED = re.compile(r"\b([Tt])he seed(?='s\b| reports\b| adds\b| trained\b| draws\b)")
_SOURCE = re.compile(r"\*Source document: ([\d, ]+)\*")


def _paper_footer(numbers: str) -> str:
    """"*From paper 000: its title*", one line per paper when a method draws on several."""
    return "\n\n".join(f"*From paper {number}: {PAPERS.get(number, 'not listed')}*"
                     for number in re.findall(r"\d{3}", numbers))


def in_paper_words(markdown: str) -> str:
    """A card's text with the source documents called papers ("paper 000", "the paper's U-Net") and its footer
    naming the paper by title, so that "seed" only ever means the random seed setting."""
    markdown = _SOURCE.sub(lambda m: _paper_footer(m[1]), markdown)
    markdown = _SEED_NUMBER.sub(lambda m: ("P" if m[1] == "S" else "p") + f"aper {m[2]}", markdown)
    return _THE_SEED.sub(lambda m: m[1] + "he paper", markdown)


def build(tab: gr.Tab | None = None) -> None:
    gr.Markdown(INTRO)
    for card in method_cards():
        with gr.Group():
            gr.Markdown(in_paper_words(card.to_markdown()), elem_classes=["method-card"])
    with gr.Accordion("Glossary: the terms the tabs use", open=True):
        gr.Markdown(glossary_markdown())
