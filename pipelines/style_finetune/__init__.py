"""Style fine-tuning: DreamBooth, textual-inversion embeddings and both combined.

Being built (issue 8); this placeholder keeps the tab registry and About complete meanwhile.
"""

from __future__ import annotations

from pipelines.core.methods import MethodCard

TAB = "Style fine-tuning"

METHOD_CARD = MethodCard(
    name="Style fine-tuning: DreamBooth, textual-inversion embeddings and both combined",
    tab=TAB,
    summary="Seed 000 teaches a Stable Diffusion anime checkpoint an art style through a trigger word. Being built.",
    inputs="see the issue",
    model="see the issue",
    output="see the issue",
    good_at=("being built",),
    bad_at=("not usable yet",),
    seed_document="000",
)
