"""Storyboard (seed 001): prompts → editable sketches → frames whose characters stay consistent, through
cross-frame memory attention (our reading of the thesis's MAGA; see memory.py).

This step holds the memory attention itself (`memory.py`), which the diffusion core carries through
`generate(..., state=memory, cross_attention_kwargs={"memory": memory})`; the sketch stage, the tab and the
comparisons follow (issue #9). Importing this package is cheap: torch and diffusers load on first use.
"""

from __future__ import annotations

TAB = "Storyboard"
