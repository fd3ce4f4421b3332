"""Single-image variation: a multi-scale diffusion model trained on one image.

Being built (issue 11); this placeholder keeps the tab registry and About complete meanwhile.
"""

from __future__ import annotations

from pipelines.core.methods import MethodCard

TAB = "Single-image variation"

METHOD_CARD = MethodCard(
    name="Single-image variation: a multi-scale diffusion model trained on one image",
    tab=TAB,
    summary="Seed 004 trains a multi-scale diffusion model on one image and edits it with text. Being built.",
    inputs="see the issue",
    model="see the issue",
    output="see the issue",
    good_at=("being built",),
    bad_at=("not usable yet",),
    seed_document="004",
)
