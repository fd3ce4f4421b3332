"""Storyboard (seed 001): prompts → editable sketches → frames whose characters stay consistent, through
cross-frame memory attention (our reading of the thesis's MAGA; see memory.py).

    from pipelines.storyboard import SketchRequest, StoryboardRequest, generate_sketches, generate_storyboard
    sketches = generate_sketches(SketchRequest(prompts=("1boy, outdoors", "1boy, outdoors, on a bench"))).sketches
    board = generate_storyboard(StoryboardRequest(prompts=(...), sketches=tuple(sketches)))
    board.frames[0].save("panel1.png")

Stages: `sketches.py` (line art per panel, cleaned with OpenCV), `generate.py` (frames in lockstep with MAGA through
the diffusion core), `outputs.py` (strip, grid, comic page PNG/PDF, GIF), `runs.py` (recorded runs, re-run).
Importing this package is cheap: torch and diffusers load on first use.
"""

from __future__ import annotations

from pipelines.core.methods import MethodCard, Reference, lazy, lazy_exports
from pipelines.core.runs import register_rerunner

TAB = "Storyboard"

_EXPORTS = {
    "SketchRequest": "request", "StoryboardRequest": "request", "MemorySettings": "request",
    "LineSettings": "request", "check": "request", "EXAMPLES": "request", "MAX_PANELS": "request",
    "generate_sketches": "sketches", "clean_lines": "sketches", "control_image": "sketches",
    "generate_storyboard": "generate", "StoryboardOutput": "generate", "run_storyboard": "runs",
    "FrameMemory": "memory", "CrossFrameAttention": "memory", "frame_attention": "memory",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


METHOD_CARD = MethodCard(
    name="Storyboard: sketch-guided frames with cross-frame memory attention (our reading of MAGA)",
    tab=TAB,
    summary=(
        "Seed 001 draws a sequence of comic/animation frames in two stages. First a line-art sketch per panel, "
        "which you can redraw, erase in and reorder; then the frames, drawn over the sketches by Stable Diffusion "
        "with a ControlNet, while a memory attention lets each frame look at the earlier frames' features so the "
        "character stays the same. The thesis's MAGA equations do not fit together (its values come from the "
        "current frame, so no history could flow); this app uses a fixed formulation: from transformer block L "
        "and step S on, a frame's self-attention also attends to its memory frames' keys and values."
    ),
    inputs="1–8 panel prompts, a shared character/style description, sketches (generated, edited or your own)",
    model="an SD 1.5 anime checkpoint + a line-art, canny or scribble ControlNet; memory attention in its UNet",
    output="the frames, a strip, a grid, a comic page (PNG and PDF), an animated GIF",
    good_at=("keeping a character's look across panels while poses and scenes change",
             "letting you fix composition on a sketch instead of on the final image",
             "seeing the effect: MAGA on versus off on the same seeds, and a sweep over L and S"),
    bad_at=("very different scenes per panel (memory pulls them together)",
            "cost: the memory attention grows with the number of earlier frames",
            "our formulation is a reading of the thesis, not its code (none was published)"),
    references=(Reference("StoryDiffusion: consistent self-attention", "https://arxiv.org/abs/2405.01434"),
                Reference("MasaCtrl: mutual self-attention control", "https://arxiv.org/abs/2304.08465"),
                Reference("ControlNet", "https://arxiv.org/abs/2302.05543")),
    seed_document="001",
)

register_rerunner(TAB, lazy(f"{__name__}.runs", "rerun_storyboard"))
