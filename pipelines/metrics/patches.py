"""Patch nearest-neighbour search on torch, and the patch-statistics distance built on it.

One search serves two users: GPNN (pipelines/single_image/gpnn.py) replaces every patch of its output by the
source patch nearest to it, and the "patch_nn" metric scores how far each patch of an image is from the nearest
patch of a source image (how well a variation keeps its source's patch statistics, as SinGAN-type papers judge).

Distances are squared L2 over a whole patch (C·p·p values), computed as ‖q‖² + ‖k‖² − 2 q·k in chunks of queries so
that no more than `max_elements` distances are held at once (a 128×128 image has about 15k patches a side: the full
matrix would be ~0.9 GB). GPNN's normalised score (Granot et al. 2022, eq. 2) divides each distance by
α + the key's smallest distance to any query, which needs every query's distance first: two passes over the chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_PATCH = 7
DEFAULT_MAX_ELEMENTS = 1 << 24  # distances held at once (64 MB in float32)


def extract_patches(image: torch.Tensor, patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """N×(C·p·p) rows of every p×p patch (stride 1, no padding) of a 1×C×H×W image, in unfold's order."""
    return F.unfold(image, kernel_size=patch).squeeze(0).transpose(0, 1).contiguous()


def fold_patches(rows: torch.Tensor, size: tuple[int, int], patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """The 1×C×H×W image whose pixels are the mean of the overlapping patches that cover them."""
    summed = F.fold(rows.transpose(0, 1).unsqueeze(0), output_size=size, kernel_size=patch)
    ones = torch.ones(1, 1, *size, dtype=rows.dtype, device=rows.device)
    counts = F.fold(F.unfold(ones, kernel_size=patch), output_size=size, kernel_size=patch)
    return summed / counts


def _chunks(queries: torch.Tensor, keys: torch.Tensor, max_elements: int):
    """(start, squared distances of queries[start:start+n] to every key), n bounded by max_elements."""
    step = max(1, max_elements // max(1, len(keys)))
    key_norms = keys.pow(2).sum(1)
    for start in range(0, len(queries), step):
        block = queries[start:start + step]
        distances = block.pow(2).sum(1, keepdim=True) + key_norms[None] - 2 * block @ keys.T
        yield start, distances.clamp_(min=0)


def nearest_patches(queries: torch.Tensor, keys: torch.Tensor, alpha: float | None = None,
                    max_elements: int = DEFAULT_MAX_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query row, the index of its nearest key row and the squared distance to it.

    alpha None: plain nearest neighbour. alpha > 0: GPNN's normalised score D(q, k) / (α + min_q' D(q', k)); a key
    that some query already matches closely is then dearer for the others, so more of the keys get used
    (the paper's completeness term; small α = strong push toward using every key, large α = plain NN).
    """
    if alpha is not None and alpha <= 0:
        raise ValueError("alpha must be positive (or None for plain nearest neighbours)")
    indices = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    distances = torch.empty(len(queries), dtype=queries.dtype, device=queries.device)
    if alpha is None:
        for start, block in _chunks(queries, keys, max_elements):
            distances[start:start + len(block)], indices[start:start + len(block)] = block.min(1)
        return indices, distances
    if len(queries) * len(keys) <= max_elements:  # the whole matrix fits: one pass
        (_, block), = _chunks(queries, keys, max_elements)
        indices = (block / (alpha + block.min(0).values)[None]).argmin(1)
        return indices, block.gather(1, indices[:, None]).squeeze(1)
    key_best = torch.full((len(keys),), float("inf"), dtype=queries.dtype, device=queries.device)
    for _, block in _chunks(queries, keys, max_elements):
        key_best = torch.minimum(key_best, block.min(0).values)
    scale = 1.0 / (alpha + key_best)
    for start, block in _chunks(queries, keys, max_elements):
        chosen = (block * scale[None]).argmin(1)
        indices[start:start + len(block)] = chosen
        distances[start:start + len(block)] = block.gather(1, chosen[:, None]).squeeze(1)
    return indices, distances


def _unit_tensor(image: Any) -> torch.Tensor:
    """1×C×H×W float32 in [0, 1] from a uint8 H×W(×C) array or a PIL image."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype != np.uint8:
        raise ValueError(f"patch distances take 8-bit images (uint8, 0–255), got {array.dtype}")
    return torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()


def patch_nn_distance(image: Any, source: Any, patch: int = DEFAULT_PATCH,
                      max_elements: int = DEFAULT_MAX_ELEMENTS) -> float:
    """Mean over the image's p×p patches of the RMS pixel difference (0–1 units) to the nearest source patch.

    0 = every patch of the image occurs in the source (a copy, or a rearrangement of its patches); the images
    may differ in size. Both are uint8 H×W×C arrays (or PIL images) with the same channels; `source` may be a
    list of images, whose patches are pooled.
    """
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    query = _unit_tensor(image)
    keys = [_unit_tensor(item) for item in sources]
    for name, tensor in (("image", query), *(("source", key) for key in keys)):
        if tensor.shape[1] != query.shape[1]:
            raise ValueError(f"images with different channel counts: {query.shape[1]} and {tensor.shape[1]}")
        if min(tensor.shape[-2:]) < patch:
            raise ValueError(f"the {name} ({tensor.shape[-1]}×{tensor.shape[-2]}) is smaller than a {patch}×{patch} "
                             "patch")
    with torch.no_grad():
        pooled = torch.cat([extract_patches(key, patch) for key in keys])
        _, squared = nearest_patches(extract_patches(query, patch), pooled, max_elements=max_elements)
    values = query.shape[1] * patch * patch
    return float((squared / values).sqrt().mean())


def shuffled_tiles(image: Any, tile: int = DEFAULT_PATCH, seed: int = 0) -> np.ndarray:
    """The control for patch_nn_distance: the image cut into tile×tile squares put back in a random order (seeded).

    Every tile is a piece of the source, but most p×p patches straddle two to four tiles that did not touch: a
    generator whose seams are no better than random scores about this; a real variation should score well below.
    Edge rows and columns that do not fill a whole tile are cropped off.
    """
    array = np.asarray(image)
    rows, cols = array.shape[0] // tile, array.shape[1] // tile
    if rows * cols < 2:
        raise ValueError(f"the image is too small to cut into {tile}×{tile} tiles")
    cropped = array[:rows * tile, :cols * tile]
    tiles = cropped.reshape(rows, tile, cols, tile, -1).swapaxes(1, 2).reshape(rows * cols, tile, tile, -1)
    tiles = tiles[np.random.default_rng(seed).permutation(len(tiles))]
    shuffled = tiles.reshape(rows, cols, tile, tile, -1).swapaxes(1, 2).reshape(rows * tile, cols * tile, -1)
    return shuffled.reshape(cropped.shape)
