"""A storyboard's frames as a strip, a grid, a comic page (PNG and PDF) and an animated GIF."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.core.jobs import atomic_path

if TYPE_CHECKING:
    from PIL import Image

GUTTER = 16  # px between panels, as on a printed page
MARGIN = 32
PAGE_COLUMNS = 2
GIF_FRAME_MS = 1200


def strip(frames: Sequence[Image.Image], gutter: int = GUTTER) -> Image.Image:
    """The panels side by side, in order."""
    return grid(frames, columns=len(frames), gutter=gutter, margin=0)


def grid(frames: Sequence[Image.Image], columns: int | None = None, gutter: int = GUTTER,
         margin: int = 0) -> Image.Image:
    """The panels in rows of `columns` (default: as square as it gets), white gutters between them."""
    from PIL import Image

    columns = columns or math.ceil(math.sqrt(len(frames)))
    rows = math.ceil(len(frames) / columns)
    width, height = frames[0].size
    canvas = Image.new("RGB", (2 * margin + columns * width + (columns - 1) * gutter,
                               2 * margin + rows * height + (rows - 1) * gutter), "white")
    for index, frame in enumerate(frames):
        row, column = divmod(index, columns)
        canvas.paste(frame.convert("RGB").resize((width, height)),
                     (margin + column * (width + gutter), margin + row * (height + gutter)))
    return canvas


def comic_page(frames: Sequence[Image.Image]) -> Image.Image:
    """A page: two panels a row, black panel borders, white margins and gutters."""
    from PIL import ImageDraw

    page = grid(frames, columns=min(PAGE_COLUMNS, len(frames)), gutter=GUTTER, margin=MARGIN)
    draw = ImageDraw.Draw(page)
    width, height = frames[0].size
    for index in range(len(frames)):
        row, column = divmod(index, min(PAGE_COLUMNS, len(frames)))
        left, top = MARGIN + column * (width + GUTTER), MARGIN + row * (height + GUTTER)
        draw.rectangle((left - 2, top - 2, left + width + 1, top + height + 1), outline="black", width=3)
    return page


def save_all(frames: Sequence[Image.Image], folder: str | Path, stem: str) -> dict[str, Path]:
    """Strip, grid, comic page (PNG + PDF) and GIF under `folder`, each written atomically."""
    folder = Path(folder)
    page = comic_page(frames)
    files = {"strip": folder / f"{stem}_strip.png", "grid": folder / f"{stem}_grid.png",
             "page": folder / f"{stem}_page.png", "pdf": folder / f"{stem}_page.pdf", "gif": folder / f"{stem}.gif"}
    for key, image in (("strip", strip(frames)), ("grid", grid(frames)), ("page", page)):
        with atomic_path(files[key]) as tmp:
            image.save(tmp, format="PNG")
    with atomic_path(files["pdf"]) as tmp:
        page.save(tmp, format="PDF", resolution=150)
    with atomic_path(files["gif"]) as tmp:
        first, *rest = [frame.convert("RGB") for frame in frames]
        first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=GIF_FRAME_MS, loop=0)
    return files
