"""Metric formulas against closed forms, hand-computed values, scikit-image and torchmetrics."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import skimage.data
import skimage.filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipelines.metrics import formulas

PHOTOS = {"astronaut": skimage.data.astronaut, "chelsea": skimage.data.chelsea, "coffee": skimage.data.coffee}


def _noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    blurred = skimage.filters.gaussian(image, sigma=sigma, channel_axis=-1, preserve_range=True)
    return np.clip(np.round(blurred), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------ SSIM / PSNR
@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_ssim_and_psnr_equal_scikit_image_on_its_photos(photo):
    image = PHOTOS[photo]()
    for distorted in (_noisy(image, 12), _blurred(image, 1.5)):
        expected_ssim = structural_similarity(image, distorted, channel_axis=-1, data_range=255)
        expected_psnr = peak_signal_noise_ratio(image, distorted, data_range=255)
        assert formulas.ssim(image, distorted) == pytest.approx(expected_ssim, abs=1e-6)
        assert formulas.psnr(image, distorted) == pytest.approx(expected_psnr, abs=1e-6)
        mse = np.mean((image.astype(np.float64) - distorted) ** 2)  # the textbook formula, by hand
        assert formulas.psnr(image, distorted) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-6)
        assert 0 < formulas.ssim(image, distorted) < 1
    assert formulas.ssim(image, image) == pytest.approx(1.0)
    # more noise: less similar
    assert formulas.ssim(image, _noisy(image, 40)) < formulas.ssim(image, _noisy(image, 5))


def test_ssim_equals_scikit_image_on_grey_and_window_sized_images():
    grey = skimage.data.camera()  # 2-D: one channel
    noisy = _noisy(grey, 20)
    assert formulas.ssim(grey, noisy) == pytest.approx(structural_similarity(grey, noisy, data_range=255), abs=1e-6)
    rng = np.random.default_rng(3)
    for shape in ((7, 7, 3), (7, 9, 1), (11, 8, 3)):  # the smallest sizes, where the border crop leaves little
        a, b = (rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(2))
        expected = structural_similarity(a, b, channel_axis=-1, data_range=255)
        assert formulas.ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_psnr_of_identical_images_is_infinite():
    image = skimage.data.chelsea()
    assert formulas.psnr(image, image.copy()) == float("inf")


def test_paired_metrics_reject_bad_input_with_clear_messages():
    a, b = np.zeros((48, 64, 3), np.uint8), np.zeros((48, 60, 3), np.uint8)
    for fn in (formulas.ssim, formulas.psnr):
        with pytest.raises(ValueError, match="images of different sizes: 64×48 and 60×48; paired metrics need equal"):
            fn(a, b)
        with pytest.raises(ValueError, match="uint8"):
            fn(a.astype(np.float32), a)
        with pytest.raises(ValueError, match="channel"):
            fn(a, np.zeros((48, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="7×7"):
        formulas.ssim(np.zeros((5, 5, 3), np.uint8), np.zeros((5, 5, 3), np.uint8))


# ------------------------------------------------------------------------------------------ Fréchet distance
def _random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_equals_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    value = formulas.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert isinstance(value, float)
    assert value == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_equals_closed_form_for_commuting_covariances():
    rng = np.random.default_rng(2)
    d = 12
    q = _random_orthogonal(d, rng)
    e1, e2 = rng.uniform(0.05, 3, d), rng.uniform(0.05, 3, d)
    sigma1, sigma2 = (q * e1) @ q.T, (q * e2) @ q.T  # same eigenvectors: Σ1Σ2 = Q diag(e1·e2) Qᵀ
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    expected = d * 0.25 + np.sum(e1 + e2 - 2 * np.sqrt(e1 * e2))
    assert formulas.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-6)
    # one dimension: (μ1 − μ2)² + (σ1 − σ2)²
    assert formulas.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1, rel=1e-12)


def test_frechet_distance_matches_the_pytorch_fid_formula_on_a_general_case():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 20))
    b = rng.normal(size=(400, 20)) @ rng.normal(size=(20, 20)) * 0.4 + 0.3
    mu1, sigma1 = formulas.gaussian_stats(a)
    mu2, sigma2 = formulas.gaussian_stats(b)
    np.testing.assert_allclose(sigma1, np.cov(a, rowvar=False), rtol=1e-12)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real  # pytorch-fid's calculate_frechet_distance
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * covmean)
    value = formulas.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert value == pytest.approx(expected, rel=1e-6)
    assert formulas.frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(value, rel=1e-9)
    assert formulas.frechet_distance_from_features(a, b) == pytest.approx(value, rel=1e-6)


def test_frechet_distance_is_finite_and_real_for_rank_deficient_covariances():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(10, 64)) + 0.2  # 10 samples in 64-d: rank 9
    mu1, sigma1 = formulas.gaussian_stats(a)
    mu2, sigma2 = formulas.gaussian_stats(b)
    assert np.linalg.matrix_rank(sigma1) == 9
    value = formulas.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert isinstance(value, float) and math.isfinite(value) and value > 0
    assert formulas.frechet_distance_from_features(a, b) == pytest.approx(value, rel=1e-6)
    # the same set: 0 (clamped, never a tiny negative), on both paths
    assert 0 <= formulas.frechet_distance(mu1, sigma1, mu1, sigma1) < 1e-9 * np.trace(sigma1)
    assert 0 <= formulas.frechet_distance_from_features(a, a) < 1e-9 * np.trace(sigma1)
    # a point mass (zero covariance): ‖μ1 − μ2‖² + Tr Σ1
    point = formulas.frechet_distance(mu1, sigma1, mu2, np.zeros((64, 64)))
    assert point == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1), rel=1e-9)


def test_a_single_image_is_a_point_mass():
    rng = np.random.default_rng(11)
    one, many = rng.normal(size=(1, 20)), rng.normal(size=(8, 20)) + 1
    mu, sigma = formulas.gaussian_stats(one)
    assert np.array_equal(mu, one[0]) and not sigma.any()
    mu_many, sigma_many = formulas.gaussian_stats(many)
    expected = formulas.per_image_fid(one, mu_many, sigma_many)[0]  # ‖μ − f‖² + Tr Σ
    assert formulas.frechet_distance_from_features(one, many) == pytest.approx(expected, rel=1e-9)
    assert formulas.frechet_distance_from_features(many, one) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("n1", "n2", "d"), [(10, 10, 64), (30, 45, 64), (3, 200, 64), (63, 63, 64), (80, 90, 16)])
def test_frechet_distance_from_features_equals_the_dxd_path(n1, n2, d):
    rng = np.random.default_rng(n1 * 1000 + n2)
    a = rng.normal(size=(n1, d)) * rng.uniform(0.2, 3, d) + 1.0  # positive-ish, like Inception features
    b = rng.normal(size=(n2, d)) + 1.4
    expected = formulas.frechet_distance(*formulas.gaussian_stats(a), *formulas.gaussian_stats(b))
    assert formulas.frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_from_gram_with_weights_equals_repeated_rows():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(7, 30)), rng.normal(size=(9, 30)) + 0.5
    wa, wb = np.array([1, 3, 1, 2, 1, 1, 4]), np.array([2, 1, 1, 1, 5, 1, 1, 2, 1])
    expected = formulas.frechet_distance_from_features(np.repeat(a, wa, axis=0), np.repeat(b, wb, axis=0))
    value = formulas.frechet_distance_from_gram(a @ a.T, b @ b.T, a @ b.T, wa, wb)
    assert value == pytest.approx(expected, rel=1e-9)
    assert formulas.frechet_distance_from_gram(a @ a.T, b @ b.T, a @ b.T) == pytest.approx(
        formulas.frechet_distance_from_features(a, b), rel=1e-9)


def test_frechet_distance_rejects_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="equal length"):
        formulas.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        formulas.frechet_distance(np.zeros(2), np.array([[1, np.nan], [0, 1]]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="at least 1"):
        formulas.frechet_distance_from_features(np.zeros((0, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="different feature sizes"):
        formulas.frechet_distance_from_features(np.zeros((5, 4)), np.zeros((5, 3)))


# ------------------------------------------------------------------------------------------ KID
def test_kid_is_about_zero_for_the_same_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    same, same_std = formulas.kernel_inception_distance(x, y, subsets=20, subset_size=100)
    shifted, _ = formulas.kernel_inception_distance(x, y + 0.5, subsets=20, subset_size=100)
    assert shifted > 0
    assert abs(same) < 0.05 * shifted
    assert same_std > 0  # random subsets differ


def _kid_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² with k(u, v) = (u·v/d + 1)³, written out with loops."""
    m, d = len(x), x.shape[1]

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    between = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return within - 2 * between


def test_kid_matches_the_unbiased_estimator_by_hand_and_adapts_to_small_sets():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
    mean, std = formulas.kernel_inception_distance(x, y)  # subset_size 1000 → 6: the whole sets
    assert mean == pytest.approx(_kid_by_hand(x, y), rel=1e-10)
    assert std == 0.0
    mean, _ = formulas.kernel_inception_distance(x, np.vstack([y, y[:3] + 1]), subsets=5, seed=1)  # 6 vs 9 rows
    assert math.isfinite(mean)
    with pytest.raises(ValueError, match="at least 2"):
        formulas.kernel_inception_distance(x[:1], y)


def test_kid_equals_torchmetrics_poly_mmd():
    torch = pytest.importorskip("torch")
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(50, 16)), rng.normal(size=(50, 16)) + 0.2
    expected = float(kid_module.poly_mmd(torch.from_numpy(x), torch.from_numpy(y)))
    assert formulas.kernel_inception_distance(x, y)[0] == pytest.approx(expected, rel=1e-9)


# ------------------------------------------------------------------------------------------ IS
def test_inception_score_is_one_for_identical_predictions():
    p = np.tile([0.1, 0.2, 0.7], (40, 1))
    for splits in (1, 10):
        mean, std = formulas.inception_score(p, splits=splits)
        assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_is_k_for_k_evenly_used_one_hot_classes():
    k = 5
    p = np.eye(k)[np.arange(40) % k]
    assert formulas.inception_score(p, splits=1) == pytest.approx((k, 0.0))
    # splits are reduced to the number of rows: 3 images, 10 splits → 3 one-image splits with IS 1
    assert formulas.inception_score(np.eye(3), splits=10) == pytest.approx((1.0, 0.0))
    # ... unless each split must keep a minimum of rows: then 40 rows make 2 splits of 20, each with all 5 classes
    assert formulas.inception_score(p, splits=10, min_split_size=20) == pytest.approx((k, 0.0))


def test_inception_score_splits_keep_a_minimum_size():
    assert [formulas.inception_score_splits(n, 10, 50) for n in (10, 99, 100, 499, 500, 5000)] == [1, 1, 2, 9, 10, 10]
    assert formulas.inception_score_splits(3, 10) == 3  # the default minimum of 1 row


def test_inception_score_by_hand_and_input_checks():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])  # p(y) = (0.75, 0.25)
    kl = [math.log(1 / 0.75), 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)]
    assert formulas.inception_score(p, splits=1)[0] == pytest.approx(math.exp(np.mean(kl)), rel=1e-12)
    with pytest.raises(ValueError, match="sum to 1"):
        formulas.inception_score(np.ones((4, 3)))


# ------------------------------------------------------------------------------------------ CMMD
def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_cmmd_is_about_zero_for_the_same_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(9)
    centre = rng.normal(size=32)
    x = _normalised(rng.normal(size=(300, 32)) + centre)
    y = _normalised(rng.normal(size=(300, 32)) + centre)
    z = _normalised(rng.normal(size=(300, 32)) + centre + rng.normal(size=32))
    same, shifted = formulas.mmd_rbf(x, y), formulas.mmd_rbf(x, z)
    assert shifted > 0 and 0 <= same < 0.1 * shifted
    assert formulas.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-9)


def test_cmmd_is_the_google_research_estimator():
    rng = np.random.default_rng(10)
    x, y = _normalised(rng.normal(size=(5, 4))), _normalised(rng.normal(size=(7, 4)))

    def mean_k(u, v):  # google-research/cmmd distance.mmd: means over all pairs, diagonals included
        return np.mean([[math.exp(-np.sum((a - b) ** 2) / (2 * 10**2)) for b in v] for a in u])

    expected = 1000 * (mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y))
    assert formulas.mmd_rbf(x, y) == pytest.approx(expected, rel=1e-8)


# ------------------------------------------------------------------------------------------ per-image scores
def test_per_image_fid_by_hand():
    features = np.array([[1.0, 2.0], [3.0, 4.0]])
    mu_ref, sigma_ref = np.array([1.0, 1.0]), np.array([[2.0, 0.5], [0.5, 3.0]])  # Tr Σ_ref = 5
    # ‖(0, 1)‖² + 5 = 6 and ‖(2, 3)‖² + 5 = 18
    np.testing.assert_allclose(formulas.per_image_fid(features, mu_ref, sigma_ref), [6.0, 18.0])
    # it is the Fréchet distance to a point mass
    point = formulas.frechet_distance(mu_ref, sigma_ref, features[1], np.zeros((2, 2)))
    assert point == pytest.approx(18.0, rel=1e-9)


def test_per_image_kl_by_hand():
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])  # p_ref = (0.5, 0.5)
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]])
    expected = [math.log(2), 0.0, 0.25 * math.log(0.5) + 0.75 * math.log(1.5)]
    np.testing.assert_allclose(formulas.per_image_kl(p, reference), expected, atol=1e-12)
    # a class the reference never predicts: large but finite
    value = formulas.per_image_kl(np.array([[0.0, 0.0, 1.0]]), np.array([[0.5, 0.5, 0.0]]))[0]
    assert math.isfinite(value) and value == pytest.approx(-math.log(1e-12), rel=1e-9)


def test_clip_score_both_definitions():
    cosines = np.array([-0.2, 0.0, 0.3, 0.31])
    np.testing.assert_allclose(formulas.clip_score(cosines), [0, 0, 30, 31])
    np.testing.assert_allclose(formulas.clip_score(cosines, "clip"), [0, 0, 30, 31])
    np.testing.assert_allclose(formulas.clip_score(cosines, "hessel"), [0, 0, 0.75, 0.775])
    with pytest.raises(ValueError, match="hessel"):
        formulas.clip_score(cosines, "openai")


# ------------------------------------------------------------------------------------------ metric table
def test_metric_info_covers_every_metric_with_a_definition():
    keys = {"fid", "kid", "is", "cmmd", "clip_fid", "ssim", "psnr", "lpips", "clip_score", "clip_score_hessel",
            "clip_i", "dino_i", "nima", "fid_per_image", "kl_per_image", "lpips_diversity", "patch_nn"}
    assert set(formulas.METRIC_INFO) == keys
    for key, info in formulas.METRIC_INFO.items():
        assert info.key == key and info.name and len(info.definition) > 40
        assert info.kind in ("set", "per_image", "paired", "text")
        assert info.needs in ("inception", "clip", "lpips", "nima", "dino", None)
    lower_better = {"fid", "kid", "cmmd", "clip_fid", "lpips", "fid_per_image", "kl_per_image", "patch_nn"}
    assert {k for k, i in formulas.METRIC_INFO.items() if not i.higher_is_better} == lower_better
    assert "255" in formulas.METRIC_INFO["ssim"].definition and "255" in formulas.METRIC_INFO["psnr"].definition
    assert formulas.METRIC_INFO["ssim"].needs is None and formulas.METRIC_INFO["fid"].default
    with pytest.raises(dataclasses.FrozenInstanceError):
        formulas.METRIC_INFO["fid"].higher_is_better = True  # type: ignore[misc]
