"""GPNN (no training) and the patch nearest-neighbour search it shares with the patch_nn metric.

Checked against independent facts: closed forms (with no noise every patch's nearest neighbour is itself, so the
output is the source), a brute-force numpy reference of the search and of the normalised score, and the
defining property of the method (every output patch is close to some source patch, far closer than a
tile-shuffled control).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.core.jobs import CancelToken, JobCancelled
from pipelines.metrics.patches import (
    extract_patches,
    fold_patches,
    nearest_patches,
    patch_nn_distance,
    shuffled_tiles,
)
from pipelines.single_image.gpnn import GPNNSettings, finish_layout, gpnn_variations, pyramid_sizes, source_levels

FAST = GPNNSettings(iterations=2)


def _photo(side: int = 32) -> Image.Image:
    """A small crop of scikit-image's coffee photo (real texture, no two patches alike)."""
    from skimage import data

    return Image.fromarray(data.coffee()).resize((3 * side // 2, side), Image.Resampling.LANCZOS)


def _noise_image(height: int = 34, width: int = 38, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _numpy_patches(array: np.ndarray, patch: int = 7) -> np.ndarray:
    """Every patch×patch patch (stride 1) as a row, in the same C-then-rows-then-columns order as unfold."""
    height, width, _ = array.shape
    rows = [array[y:y + patch, x:x + patch].transpose(2, 0, 1).ravel()
            for y in range(height - patch + 1) for x in range(width - patch + 1)]
    return np.asarray(rows, dtype=np.float64)


def _brute_patch_distance(image: np.ndarray, source: np.ndarray, patch: int = 7) -> float:
    queries, keys = _numpy_patches(image / 255.0, patch), _numpy_patches(source / 255.0, patch)
    squared = ((queries[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
    return float(np.sqrt(squared.min(1) / queries.shape[1]).mean())


# ---------------------------------------------------------------------------------------------- the search
def test_patches_match_a_numpy_reference_and_fold_inverts_unfold():
    array = np.asarray(_noise_image(12, 14))
    tensor = torch.from_numpy(array / 255.0).permute(2, 0, 1)[None]
    np.testing.assert_allclose(extract_patches(tensor).numpy(), _numpy_patches(array / 255.0), atol=1e-12)
    np.testing.assert_allclose(fold_patches(extract_patches(tensor), (12, 14)).numpy(), tensor.numpy(), atol=1e-12)


@pytest.mark.parametrize("max_elements", [60, 1 << 20])  # chunks of one query (two passes), the whole matrix
@pytest.mark.parametrize("alpha", [None, 0.005, 1.0])
def test_nearest_patches_match_brute_force_and_the_normalised_score(alpha, max_elements):
    rng = np.random.default_rng(1)
    queries, keys = rng.random((50, 12)), rng.random((40, 12))
    squared = ((queries[:, None] - keys[None]) ** 2).sum(-1)
    # Granot et al. eq. 2: D(q, k) / (α + min over queries of D(·, k))
    score = squared if alpha is None else squared / (alpha + squared.min(0))[None]
    expected = score.argmin(1)
    indices, distances = nearest_patches(torch.from_numpy(queries), torch.from_numpy(keys), alpha,
                                         max_elements=max_elements)
    np.testing.assert_array_equal(indices.numpy(), expected)
    np.testing.assert_allclose(distances.numpy(), squared[np.arange(50), expected], rtol=1e-9)


def test_normalised_score_uses_more_of_the_source_than_plain_nearest_neighbours():
    rng = np.random.default_rng(2)
    keys = torch.from_numpy(rng.random((30, 6)))
    queries = keys[:3].repeat(20, 1) + 0.05 * torch.from_numpy(rng.standard_normal((60, 6)))  # all near 3 keys
    plain, _ = nearest_patches(queries, keys)
    normalised, _ = nearest_patches(queries, keys, alpha=1e-4)
    assert len(set(normalised.tolist())) > len(set(plain.tolist()))


def test_patch_nn_distance_matches_brute_force():
    source, image = np.asarray(_photo(16)), np.asarray(_noise_image(16, 20, seed=3))
    assert patch_nn_distance(image, source, max_elements=500) == pytest.approx(_brute_patch_distance(image, source),
                                                                               rel=1e-4)
    assert patch_nn_distance(source, source) == pytest.approx(0, abs=1e-3)  # every patch occurs in itself


def test_shuffled_tiles_keep_every_tile_and_score_worse_than_the_source():
    source = np.asarray(_photo(28))
    shuffled = shuffled_tiles(source, 7, seed=0)
    tiles = {shuffled[y:y + 7, x:x + 7].tobytes() for y in range(0, 28, 7) for x in range(0, 42, 7)}
    assert tiles == {source[y:y + 7, x:x + 7].tobytes() for y in range(0, 28, 7) for x in range(0, 42, 7)}
    assert patch_nn_distance(shuffled, source) > 0.02


# ---------------------------------------------------------------------------------------------- GPNN
def test_pyramid_is_four_thirds_apart_down_to_the_coarse_side():
    sizes = pyramid_sizes(96, 128, GPNNSettings())
    assert sizes[-1] == (96, 128) and min(sizes[0]) == 14
    for (h0, _), (h1, _) in zip(sizes[1:-1], sizes[2:], strict=True):  # [0] is the last, shorter step
        assert h1 / h0 == pytest.approx(4 / 3, abs=0.06)
    assert 1 < sizes[1][0] / sizes[0][0] <= 4 / 3 + 0.06
    assert len(sizes) == len(set(sizes))


@pytest.mark.parametrize("alpha", [1e6, 0.005])
def test_no_noise_reproduces_the_source_exactly(alpha):
    """Closed form: with no noise each query patch IS a key patch (distance 0, normalised score 0), so every
    patch is replaced by itself at every scale and the output is the source, pixel for pixel."""
    source = _noise_image()
    output = gpnn_variations(source, 1, 0, GPNNSettings(noise_std=0, alpha=alpha, iterations=2), device="cpu")
    np.testing.assert_array_equal(np.asarray(output.images[0]), np.asarray(source))


def test_output_patches_come_from_the_source():
    source = _photo(32)
    output = gpnn_variations(source, 2, 0, FAST, device="cpu")
    array, reference = np.asarray(source), np.asarray(output.images[0])
    distance = _brute_patch_distance(reference, array)  # independent numpy search
    control = _brute_patch_distance(shuffled_tiles(array, 7, seed=0), array)
    noise = _brute_patch_distance(np.asarray(_noise_image(32, 48)), array)
    assert distance < 0.5 * control < noise
    assert np.abs(reference.astype(float) - array).mean() / 255 > 0.01  # a variation, not the source


def test_seeds_give_different_variations_and_repeat_exactly():
    source = _photo(32)
    first = gpnn_variations(source, 2, 5, FAST, device="cpu")
    again = gpnn_variations(source, 1, 6, FAST, device="cpu")
    assert first.seeds == [5, 6]
    a, b = (np.asarray(image).astype(float) for image in first.images)
    assert np.abs(a - b).mean() > 2  # different seeds: different images
    np.testing.assert_array_equal(np.asarray(again.images[0]), np.asarray(first.images[1]))
    assert len(first.per_scale[0]) == len(pyramid_sizes(32, 48, FAST)) and first.images[0].size == source.size


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def test_the_source_as_its_own_layout_is_finished_into_the_source():
    """Closed form, as with no noise: the source as the layout (at full size or at the coarsest level) becomes the
    coarsest level, whose patches are its own keys, and at every finer level each query patch is a key patch (the
    upscaled coarser source), so the output is the source exactly."""
    source = _noise_image()
    levels = source_levels(_tensor(source), FAST)
    for layout in (_tensor(source), levels[0]):
        outputs = finish_layout(_tensor(source), layout, (34, 38), FAST)
        assert len(outputs) == len(levels)
        np.testing.assert_allclose(outputs[-1][0].permute(1, 2, 0).numpy() * 255, np.asarray(source), atol=1e-3)


def test_a_finished_layout_keeps_its_arrangement_and_takes_the_source_patches():
    """The layout's arrangement is kept (the output, shrunk to the layout's size, is nearer the layout than the
    photo), its detail is the source's (patch distance, by an independent numpy search, far below the
    tile-shuffled control), and a retargeted size is honoured."""
    source = _photo(32)
    array = np.asarray(source)
    flipped = _tensor(Image.fromarray(np.flipud(array).copy()))
    layout = torch.nn.functional.interpolate(flipped, size=(12, 18), mode="area")
    for size in [(32, 48), (32, 72)]:
        output = finish_layout(_tensor(source), layout, size, FAST)[-1]
        assert tuple(output.shape[-2:]) == size
        shrunk = torch.nn.functional.interpolate(output, size=(12, 18), mode="area")
        own = torch.nn.functional.interpolate(_tensor(source), size=(12, 18), mode="area")
        assert (shrunk - layout).abs().mean() < 0.75 * (shrunk - own).abs().mean()  # measured 0.58, 0.57
        image = (output[0].permute(1, 2, 0).numpy() * 255).round()
        control = _brute_patch_distance(shuffled_tiles(array, 7, seed=0), array)
        assert _brute_patch_distance(image, array) < 0.5 * control


def test_cancel_stops_and_progress_is_reported():
    token, seen = CancelToken(), []

    def report(step, total, message):
        seen.append((step, total))
        if step == 3:
            token.cancel()

    with pytest.raises(JobCancelled):
        gpnn_variations(_photo(32), 2, 0, FAST, device="cpu", callback=report, cancel=token)
    assert seen[:3] == [(1, seen[0][1]), (2, seen[0][1]), (3, seen[0][1])] and len(seen) == 3


def test_bad_settings_are_clear_errors():
    from pipelines.core.errors import UserError

    with pytest.raises(UserError, match="odd"):
        gpnn_variations(_photo(32), 1, 0, GPNNSettings(patch=6))
    with pytest.raises(UserError, match="1–16"):
        gpnn_variations(_photo(32), 0, 0, FAST)


def test_compare_scores_patch_nn_against_the_pooled_reference():
    """pipelines.metrics.compare's patch_nn: each image against the reference images' patches (repeats once)."""
    from pipelines.metrics import compare

    source = np.asarray(_photo(16))
    noise = [np.asarray(_noise_image(16, 20, seed=s)) for s in (4, 5)]
    report = compare([source, np.fliplr(source).copy()], noise, reference=[source, source], metrics=["patch_nn"],
                     n_bootstrap=50)
    row = report.row("patch_nn")
    assert row.a == pytest.approx(np.mean([0.0, _brute_patch_distance(np.fliplr(source), source)]), abs=1e-3)
    assert row.b == pytest.approx(np.mean([_brute_patch_distance(n, source) for n in noise]), rel=1e-3)
    assert row.better == "A"


def test_ablation_sets_gpnn_beside_the_trained_model_with_the_shuffled_control():
    """GPNN trains nothing, keeps the source's patches (below the control) and its row's patch-NN distance is the
    brute-force value for its variations."""
    from pipelines.single_image.runs import CONTROL_ROW, GPNN_VARIANT, run_ablation

    source = _photo(32)
    result = run_ablation(source, [GPNN_VARIANT, "baseline"], steps=20, width=16, count=2, seed=0,
                          metrics=["patch_nn"])
    rows = {row["variant"]: row for row in result.rows}
    assert set(rows) == {GPNN_VARIANT, "baseline", CONTROL_ROW}
    gpnn, baseline, control = rows[GPNN_VARIANT], rows["baseline"], rows[CONTROL_ROW]
    assert gpnn["train_seconds"] == 0 and baseline["train_seconds"] > 0
    expected = np.mean([_brute_patch_distance(np.asarray(image), np.asarray(source))
                        for image in result.images[GPNN_VARIANT]])
    assert gpnn["patch_nn"] == pytest.approx(expected, abs=2e-4)
    assert control["patch_nn"] == pytest.approx(_brute_patch_distance(shuffled_tiles(np.asarray(source), 7, 0),
                                                                       np.asarray(source)), abs=2e-4)
    assert gpnn["patch_nn"] < control["patch_nn"] and gpnn["diversity"] > 0


def test_tab_makes_gpnn_variations_of_the_upload_and_history_repeats_them(tmp_path):
    import re

    from pipelines.core.runs import rerun
    from tabs import single_image as tab

    path = tmp_path / "cat.png"
    _photo(32).save(path)
    gallery, scales, readout, source = tab.make_gpnn_variations(str(path), "", 2, 3, 1, progress=lambda *a, **k: None)
    assert len(gallery) == 2 and "no training" in readout and "seeds 3, 4" in readout
    assert source.size == (48, 32) and gallery[0][0].size == (48, 32) and len(scales) >= 2
    again = rerun(re.search(r"run ([0-9a-f]{12})", readout).group(1))
    np.testing.assert_array_equal(np.asarray(Image.open(again.outputs[1])), np.asarray(gallery[1][0]))
