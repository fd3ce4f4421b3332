"""Landmark faces: 24 anime facial landmarks + tags → a face that follows them.

Being built (issue 10); this placeholder keeps the tab registry and About complete meanwhile.
"""

from __future__ import annotations

from pipelines.core.methods import MethodCard

TAB = "Landmark faces"

METHOD_CARD = MethodCard(
    name="Landmark faces: 24 anime facial landmarks + tags → a face that follows them",
    tab=TAB,
    summary="Seed 003 draws anime faces from a 24-point landmark set and a tag caption. Being built.",
    inputs="see the issue",
    model="see the issue",
    output="see the issue",
    good_at=("being built",),
    bad_at=("not usable yet",),
    seed_document="003",
)
