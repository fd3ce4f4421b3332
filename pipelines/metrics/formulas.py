"""The mathematics of the Metrics / A-B tab, on features and pixels: numpy, scipy and scikit-image, float64.

Set metrics (FID, KID, IS, CMMD, CLIP-FID) take feature or probability arrays with one row per image;
per-image and paired metrics (per-image FID and KL, CLIP score, SSIM, PSNR) return one value per image.
No torch here: the feature networks live elsewhere and hand their outputs over as numpy arrays.

Reference implementations followed (named again where they are followed):
- FID: pytorch-fid `calculate_frechet_distance` and clean-fid `frechet_distance` (same formula); here the
  matrix square root comes from symmetric eigen-decompositions, so it is never complex or NaN.
- KID: torchmetrics `image/kid.py` (`poly_kernel`, `maximum_mean_discrepancy`, random subsets, std with
  ddof=0), itself adapted from Bińkowski et al.'s MMD-GAN code.
- IS: torch-fidelity `metric_isc.py` (splits as consecutive chunks i·N//splits, std with ddof=0).
- CMMD: google-research `cmmd/distance.py` (`mmd`: Gaussian RBF, σ = 10, ×1000, minimum-variance estimator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "METRIC_INFO", "MetricInfo", "clip_score", "frechet_distance", "frechet_distance_from_features",
    "frechet_distance_from_gram", "gaussian_stats", "inception_score", "kernel_inception_distance",
    "mmd_rbf", "mmd_rbf_from_gram", "per_image_fid", "per_image_kl", "poly_kernel", "poly_mmd_unbiased", "psnr",
    "ssim",
]

_EPS = np.finfo(np.float64).eps
# KID precomputes the kernel matrices of all rows once (then each subset is a look-up) up to this many rows.
_KID_PRECOMPUTE_ROWS = 4000


# ------------------------------------------------------------------------------------------ metric table
@dataclass(frozen=True)
class MetricInfo:
    """What the UI shows next to a metric: its name, direction, the model it needs and a plain definition."""

    name: str  # display name
    key: str
    kind: Literal["set", "per_image", "paired", "text"]
    higher_is_better: bool
    needs: str | None  # "inception", "clip", "lpips", "nima", "dino"; None for pixel metrics
    definition: str  # one or two plain sentences, data range and model included
    default: bool  # preselected in the UI
    to_reference: bool = False  # measures closeness to the reference images ("closer to the reference")


def _info(key: str, name: str, kind: str, higher: bool, needs: str | None, default: bool, to_reference: bool,
          definition: str) -> MetricInfo:
    return MetricInfo(name=name, key=key, kind=kind, higher_is_better=higher, needs=needs, definition=definition,
                      default=default, to_reference=to_reference)  # type: ignore[arg-type]


METRIC_INFO: dict[str, MetricInfo] = {info.key: info for info in (
    _info("fid", "FID", "set", False, "inception", True, True,
          "Fréchet Inception Distance: the distance between Gaussians fitted to the Inception-v3 pool features "
          "(2048 numbers per image) of the set and of the reference images. Lower is closer to the reference "
          "(0 = identical statistics); biased upward on fewer than about 2048 images."),
    _info("kid", "KID", "set", False, "inception", True, True,
          "Kernel Inception Distance: the unbiased squared MMD between the set's and the reference's Inception-v3 "
          "pool features with the polynomial kernel (x·y/2048 + 1)³, averaged over random subsets. Lower is "
          "closer to the reference; about 0 (it can dip below 0) for the same distribution, and fair on small sets."),
    _info("is", "IS", "set", True, "inception", True, False,
          "Inception Score: exp of the average KL divergence between each image's Inception-v3 ImageNet class "
          "probabilities and the set's average, averaged over 10 splits of the set (fewer for sets under 500 "
          "images, so that each split keeps at least 50; one split below 100 images). From 1 (every image looks "
          "alike to the classifier) up to the number of classes; higher is better. ImageNet classes, not anime "
          "ones."),
    _info("cmmd", "CMMD", "set", False, "clip", True, True,
          "CLIP Maximum Mean Discrepancy (Jayasumana et al. 2024): the squared MMD between the CLIP image "
          "embeddings of the set and of the reference with a Gaussian kernel (σ = 10), times 1000. Lower is "
          "closer to the reference; no Gaussian assumption, so it suits small sets better than FID."),
    _info("clip_fid", "CLIP-FID", "set", False, "clip", False, True,
          "The FID formula on CLIP image embeddings instead of Inception features (Kynkäänniemi et al. 2023): "
          "less tied to ImageNet classes. Lower is closer to the reference; biased upward on small sets, like FID."),
    _info("ssim", "SSIM", "paired", True, None, True, True,
          "Structural similarity between each image and its paired reference image on 8-bit RGB pixels (data "
          "range 255), scikit-image's definition: 7×7 windows, averaged over the three channels. 1 = identical; "
          "higher is closer."),
    _info("psnr", "PSNR (dB)", "paired", True, None, True, True,
          "Peak signal-to-noise ratio 10·log10(255² / mean squared error) between each image and its paired "
          "reference on 8-bit RGB pixels (data range 255), in decibels. Higher is closer; identical images give "
          "+∞ and are left out of averages."),
    _info("lpips", "LPIPS", "paired", False, "lpips", True, True,
          "Learned perceptual distance (Zhang et al. 2018, AlexNet features) between each image and its paired "
          "reference; the code maps pixels to [-1, 1] itself. 0 = identical; lower is closer."),
    _info("lpips_diversity", "Diversity (LPIPS)", "per_image", True, "lpips", False, False,
          "How different the images of one set are from each other: the mean LPIPS distance between every two "
          "images of the set (no reference needed; each image's value is its mean distance to the others, and "
          "the interval resamples those). Higher is more varied; 0 = all the same. Needs at least 2 images of "
          "one size per set."),
    _info("clip_score", "CLIP score (100·cos)", "text", True, "clip", True, False,
          "How well each image matches its prompt: 100 × max(cos, 0) of the CLIP image and text embeddings, per "
          "image, then averaged (torchmetrics' CLIPScore scales by 100 the same way but clamps only the average, "
          "so the two differ when some cosines are negative). Higher is better; prompts longer than 77 tokens are "
          "cut."),
    _info("clip_score_hessel", "CLIP-S (Hessel, 2.5·cos)", "text", True, "clip", True, False,
          "How well each image matches its prompt, as Hessel et al. (2021) define CLIPScore: 2.5 × max(cos, 0) of "
          "the CLIP image and text embeddings; the same cosine as 'CLIP score' on a different scale. Higher is "
          "better."),
    _info("clip_i", "CLIP-I", "per_image", True, "clip", True, True,
          "Cosine similarity of CLIP image embeddings between each image and its paired reference image (without "
          "pairs: the reference set's mean direction), a measure of shared style or identity. At most 1; higher "
          "is closer to the reference."),
    _info("dino_i", "DINO-I", "per_image", True, "dino", False, True,
          "Cosine similarity of DINO image embeddings (the self-supervised ViT's CLS token) between each image "
          "and its paired reference image (without pairs: the reference set's mean direction), as DreamBooth "
          "measures subject fidelity. Unlike CLIP-I it was not taught by captions, so it tells apart look-alike "
          "subjects better. At most 1; higher is closer to the reference."),
    _info("nima", "NIMA", "per_image", True, "nima", False, False,
          "Predicted mean aesthetic rating from 1 to 10 by a NIMA model (Talebi & Milanfar 2018) trained on "
          "people's ratings of photos (AVA). Higher is rated more pleasing; photos, not anime, taught it."),
    _info("fid_per_image", "Per-image FID", "per_image", False, "inception", True, True,
          "Fréchet distance between the reference images' Gaussian (Inception-v3 pool features) and a single "
          "point at this image's features: ‖μ_ref − f‖² + Tr Σ_ref (our definition of seed 000's per-image "
          "score). Lower is closer to the reference."),
    _info("patch_nn", "Patch-NN distance", "per_image", False, None, False, True,
          "How far each image's 7×7 patches are from the reference images' patches: for every patch of the image "
          "the RMS pixel difference (0–1 units) to the nearest reference patch, averaged over its patches (the "
          "reference images pooled). 0 = every patch occurs in the reference (a copy or a rearrangement); it "
          "judges single-image variations, whose patches should be their source's. Lower is closer."),
    _info("kl_per_image", "Per-image KL", "per_image", False, "inception", True, True,
          "KL(p(y|image) ‖ p_ref(y)) in nats: how far this image's Inception-v3 class probabilities are from the "
          "reference images' average class distribution (our definition of seed 000's per-image score). Lower "
          "is closer to the reference."),
)}


# ------------------------------------------------------------------------------------------ validation
def _features(features, name: str = "features", min_rows: int = 1) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (one row per image), got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (images), got {array.shape[0]}")
    if array.shape[1] < 1:
        raise ValueError(f"{name} has no columns (features)")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _same_width(a: np.ndarray, b: np.ndarray, names: str = "the two feature sets") -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} have different feature sizes: {a.shape[1]} and {b.shape[1]}")


def _probabilities(probabilities, name: str = "probabilities") -> np.ndarray:
    p = _features(probabilities, name)
    if (p < 0).any():
        raise ValueError(f"{name} must be non-negative (softmax outputs)")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(f"each row of {name} must sum to 1 (softmax outputs); row sums range "
                         f"{sums.min():.4g} to {sums.max():.4g}")
    return p / sums[:, None]


# ------------------------------------------------------------------------------------------ Fréchet distance
def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, as np.cov and pytorch-fid) of the rows of `features`, in float64.

    A single row gives a zero covariance (a point mass) instead of np.cov's NaN.
    """
    x = _features(features)
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / max(x.shape[0] - 1, 1)
    return mu, sigma


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return (matrix + matrix.T) / 2


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (negative rounding → 0)."""
    w, v = np.linalg.eigh(_symmetric(sigma))
    w = np.where(w > max(w.max(), 0.0) * len(w) * _EPS, w, 0.0)
    return (v * np.sqrt(w)) @ v.T


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((Σ1 Σ2)^½), always real: Σ1Σ2 is similar to the PSD matrix Σ1^½ Σ2 Σ1^½, whose eigenvalues are its own.

    pytorch-fid and clean-fid use scipy.linalg.sqrtm(Σ1 Σ2), retry with 1e-6 added to the diagonals when the
    result is not finite and drop a small imaginary part; this is the same quantity without those failure modes.
    """
    root = _psd_sqrt(sigma1)
    w = np.linalg.eigvalsh(_symmetric(root @ sigma2 @ root))
    w = np.where(w > max(w.max(), 0.0) * len(w) * _EPS, w, 0.0)
    return float(np.sqrt(w).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2): ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½).

    Computed in float64 from symmetric eigen-decompositions, so rank-deficient covariances (fewer images
    than features) give a finite real number, never NaN or a complex one; tiny negative rounding results are
    clamped to 0. Same formula as pytorch-fid's `calculate_frechet_distance`.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors must be 1-D and of equal length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be {d}×{d} to match the means, got {sigma1.shape} and {sigma2.shape}")
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * _trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)


def _sum_singular_values(matrix: np.ndarray) -> float:
    try:
        return float(np.linalg.svd(matrix, compute_uv=False).sum())
    except np.linalg.LinAlgError:  # gesdd did not converge: the slower, sturdier gesvd
        import scipy.linalg  # here, not at import: the app builds its pages without scipy (start-up time)

        return float(scipy.linalg.svdvals(matrix, lapack_driver="gesvd").sum())


def frechet_distance_from_features(features_a, features_b) -> float:
    """FID-style Fréchet distance between the Gaussians of two feature sets (rows = images), in float64.

    When a set has fewer rows than features (e.g. 50–500 images, 2048-d) it never forms a d×d matrix:
    with centred rows Xa, Xb, the eigenvalues of Σa Σb are the squared singular values of Xb·Xaᵀ divided by
    (na − 1)(nb − 1), so Tr((ΣaΣb)^½) = Σ singular values(Xb·Xaᵀ) / sqrt((na − 1)(nb − 1)) — exact, an
    na×nb SVD instead of two d×d eigen-decompositions. Otherwise the d×d `frechet_distance` path.
    A set of one image counts as a point mass (zero covariance), as in `gaussian_stats`.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    _same_width(a, b)
    (na, d), nb = a.shape, b.shape[0]
    if min(na, nb) >= d:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    xa, xb = a - mu_a, b - mu_b
    # max(n − 1, 1): one row has centred rows of zeros, so its covariance terms are 0, not 0/0
    trace_a, trace_b = np.sum(xa * xa) / max(na - 1, 1), np.sum(xb * xb) / max(nb - 1, 1)
    cross = _sum_singular_values(xb @ xa.T) / np.sqrt(max(na - 1, 1) * max(nb - 1, 1))
    diff = mu_a - mu_b
    return max(float(diff @ diff + trace_a + trace_b - 2 * cross), 0.0)


def _weights(weights, n: int, name: str) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any():
        raise ValueError(f"{name} must be {n} non-negative counts, one per row")
    return w


def frechet_distance_from_gram(gram_aa, gram_bb, gram_ab, weights_a=None, weights_b=None) -> float:
    """The same Fréchet distance from inner products only: gram_aa = Xa·Xaᵀ, gram_bb = Xb·Xbᵀ, gram_ab = Xa·Xbᵀ.

    Used by the bootstrap, which computes one Gram matrix of all rows and then only looks rows up. The rows
    may be shifted by any common vector first (the distance does not change), which keeps the Gram exact.
    weights: how many times each row counts (a bootstrap resample repeats rows): the result equals the
    distance of the sets with every row repeated that many times, from an SVD of the distinct rows only.
    """
    gaa, gbb, gab = (np.asarray(g, dtype=np.float64) for g in (gram_aa, gram_bb, gram_ab))
    ua, ub = gab.shape
    if gaa.shape != (ua, ua) or gbb.shape != (ub, ub):
        raise ValueError(f"Gram matrices must be na×na, nb×nb and na×nb; got {gaa.shape}, {gbb.shape} and "
                         f"{gab.shape}")
    wa, wb = _weights(weights_a, ua, "weights_a"), _weights(weights_b, ub, "weights_b")
    na, nb = wa.sum(), wb.sum()
    if na < 1 or nb < 1:
        raise ValueError(f"each set needs at least 1 row, got {na:g} and {nb:g}")
    mean_aa, mean_bb = wa @ gaa @ wa / na**2, wb @ gbb @ wb / nb**2
    row_means, col_means = gab @ wb / nb, wa @ gab / na  # x_k·μb and μa·y_l
    mean_ab = wa @ row_means / na  # μa·μb
    mean_term = mean_aa + mean_bb - 2 * mean_ab  # ‖μa − μb‖²
    trace_a = (wa @ np.diag(gaa) - na * mean_aa) / max(na - 1, 1)  # Tr Σa = (Σ‖x‖² − n‖μ‖²) / (n − 1)
    trace_b = (wb @ np.diag(gbb) - nb * mean_bb) / max(nb - 1, 1)
    centred = gab - row_means[:, None] - col_means[None, :] + mean_ab  # (x_k − μa)·(y_l − μb)
    # the centred cross product of the repeated rows has the singular values of √wa·centred·√wb
    weighted = np.sqrt(wa)[:, None] * centred * np.sqrt(wb)[None, :]
    cross = _sum_singular_values(weighted) / np.sqrt(max(na - 1, 1) * max(nb - 1, 1))
    return max(float(mean_term + trace_a + trace_b - 2 * cross), 0.0)


# ------------------------------------------------------------------------------------------ KID
def poly_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                coef0: float = 1.0) -> np.ndarray:
    """(γ·x·yᵀ + coef0)^degree with γ = 1/d by default (torchmetrics' `poly_kernel`, sklearn's polynomial_kernel)."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def poly_mmd_unbiased(k_aa, k_bb, k_ab, weights_a=None, weights_b=None) -> float:
    """Unbiased MMD² from kernel matrices of two sets of equal size m (torchmetrics' `maximum_mean_discrepancy`).

    (Σ_{i≠j} k_aa + Σ_{i≠j} k_bb) / (m(m − 1)) − 2 Σ k_ab / m²  (the KID paper's "unbiased" estimator).
    weights: how many times each row counts (repeated rows are distinct positions i ≠ j), as in the bootstrap.
    """
    k_aa, k_bb, k_ab = (np.asarray(k, dtype=np.float64) for k in (k_aa, k_bb, k_ab))
    wa, wb = _weights(weights_a, k_ab.shape[0], "weights_a"), _weights(weights_b, k_ab.shape[1], "weights_b")
    m = wa.sum()
    if wb.sum() != m or m < 2:
        raise ValueError(f"the unbiased MMD needs two sets of the same size ≥ 2, got {m:g} and {wb.sum():g}")
    within = (wa @ k_aa @ wa - wa @ np.diag(k_aa) + wb @ k_bb @ wb - wb @ np.diag(k_bb)) / (m * (m - 1))
    return float(within - 2 * (wa @ k_ab @ wb) / m**2)


def _kid_from_blocks(n_a: int, n_b: int, blocks, subsets: int, subset_size: int,
                     seed: int) -> tuple[float, float]:
    """KID over `subsets` random subsets; blocks(ia, ib) -> (k_aa, k_bb, k_ab) for row indices ia, ib."""
    if subsets < 1:
        raise ValueError(f"subsets must be at least 1, got {subsets}")
    m = min(int(subset_size), n_a, n_b)  # subset size adapted to small sets
    if m < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {n_a} and {n_b}")
    if m == n_a == n_b:  # every subset is the whole of both sets, and the estimator ignores the order
        return poly_mmd_unbiased(*blocks(np.arange(n_a), np.arange(n_b))), 0.0
    rng = np.random.default_rng(seed)
    values = np.array([poly_mmd_unbiased(*blocks(rng.permutation(n_a)[:m], rng.permutation(n_b)[:m]))
                       for _ in range(subsets)])
    return float(values.mean()), float(values.std())  # ddof=0, as torchmetrics (unbiased=False)


def kernel_inception_distance(features_a, features_b, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
                              gamma: float | None = None, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): mean and std over random subsets of the unbiased polynomial-kernel MMD².

    As torchmetrics' KernelInceptionDistance: kernel (γ·x·y + coef0)^degree with γ = 1/d, `subsets` subsets of
    `subset_size` rows drawn without replacement from each set, std with ddof=0. Unlike torchmetrics (which
    raises), the subset size shrinks to min(n_a, n_b) on small sets; each set needs at least 2 rows. When both
    sets have exactly that many rows every subset is the whole set, so the result is exact with std 0.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    _same_width(a, b)
    na, nb = a.shape[0], b.shape[0]
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)

    if na + nb <= _KID_PRECOMPUTE_ROWS:
        k_aa, k_bb, k_ab = (poly_kernel(x, y, degree, gamma, coef0) for x, y in ((a, a), (b, b), (a, b)))

        def blocks(ia, ib):
            return k_aa[np.ix_(ia, ia)], k_bb[np.ix_(ib, ib)], k_ab[np.ix_(ia, ib)]
    else:
        def blocks(ia, ib):
            x, y = a[ia], b[ib]
            return (poly_kernel(x, x, degree, gamma, coef0), poly_kernel(y, y, degree, gamma, coef0),
                    poly_kernel(x, y, degree, gamma, coef0))

    return _kid_from_blocks(na, nb, blocks, subsets, subset_size, seed)


# ------------------------------------------------------------------------------------------ IS
def _kl_rows(p: np.ndarray, q: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """KL(p_i ‖ q) in nats for each row p_i, with 0·log 0 = 0 and q clipped below at eps (or the tiniest float)."""
    floor = max(eps, np.finfo(np.float64).tiny)
    positive = p > 0
    terms = np.where(positive, p * (np.log(np.where(positive, p, 1.0)) - np.log(np.maximum(q, floor))), 0.0)
    return terms.sum(axis=1)


def inception_score_splits(n: int, splits: int = 10, min_split_size: int = 1) -> int:
    """How many splits inception_score uses for n rows: at most `splits`, each of at least `min_split_size` rows
    (at least one split)."""
    return max(1, min(int(splits), n // max(1, int(min_split_size))))


def inception_score(probabilities, splits: int = 10, min_split_size: int = 1) -> tuple[float, float]:
    """Inception Score: mean and std (ddof=0) over splits of exp(mean_i KL(p(y|x_i) ‖ p(y))).

    As torch-fidelity's `isc_features_to_metric` (splits are consecutive chunks i·N//splits … (i+1)·N//splits,
    p(y) is each chunk's mean), but on probabilities in the given order (torch-fidelity shuffles logits first).
    Splits are reduced so that each has at least `min_split_size` rows (1: reduced to the number of rows): a
    split of one image always scores 1. IS = 1 when all predictions are identical and K when K classes are
    each predicted with certainty equally often.
    """
    p = _probabilities(probabilities)
    n = p.shape[0]
    splits = inception_score_splits(n, splits, min_split_size)
    scores = []
    for i in range(splits):
        chunk = p[i * n // splits:(i + 1) * n // splits]
        scores.append(np.exp(_kl_rows(chunk, chunk.mean(axis=0, keepdims=True)).mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ------------------------------------------------------------------------------------------ CMMD
def mmd_rbf_from_gram(gram_xx, gram_yy, gram_xy, sigma: float = 10.0, scale: float = 1000.0, weights_x=None,
                      weights_y=None) -> float:
    """CMMD's estimator from inner products (gram_xx = X·Xᵀ, …): scale·(mean k_xx + mean k_yy − 2 mean k_xy).

    weights: how many times each row counts (the means become weighted means), as in frechet_distance_from_gram.
    """
    gxx, gyy, gxy = (np.asarray(g, dtype=np.float64) for g in (gram_xx, gram_yy, gram_xy))
    wx, wy = _weights(weights_x, gxy.shape[0], "weights_x"), _weights(weights_y, gxy.shape[1], "weights_y")
    sq_x, sq_y = np.diag(gxx), np.diag(gyy)
    gamma = 1.0 / (2.0 * sigma**2)

    def mean_kernel(gram, sq_left, sq_right, w_left, w_right):
        kernel = np.exp(-gamma * np.maximum(sq_left[:, None] + sq_right[None, :] - 2 * gram, 0.0))
        return w_left @ kernel @ w_right / (w_left.sum() * w_right.sum())

    value = scale * (mean_kernel(gxx, sq_x, sq_x, wx, wx) + mean_kernel(gyy, sq_y, sq_y, wy, wy)
                     - 2 * mean_kernel(gxy, sq_x, sq_y, wx, wy))
    return max(float(value), 0.0)  # a squared norm in the kernel space: below 0 only by rounding


def mmd_rbf(x, y, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """CMMD (Jayasumana et al. 2024): squared MMD with a Gaussian RBF kernel exp(−‖x−y‖²/(2σ²)), times `scale`.

    The same estimator as google-research/cmmd `distance.mmd` (σ = 10, scale 1000, the minimum-variance or
    "biased" estimator: means over all pairs, diagonals included), in float64. CMMD expects L2-normalised CLIP
    image embeddings; normalising is the feature extractor's job, not done here.
    """
    a, b = _features(x, "x"), _features(y, "y")
    _same_width(a, b, "x and y")
    return mmd_rbf_from_gram(a @ a.T, b @ b.T, a @ b.T, sigma=sigma, scale=scale)


# ------------------------------------------------------------------------------------------ per-image scores
def per_image_fid(features, mu_ref, sigma_ref) -> np.ndarray:
    """Per-image FID: Fréchet distance between N(μ_ref, Σ_ref) and a point mass at each row f.

    A point mass has zero covariance, so the distance is ‖μ_ref − f‖² + Tr Σ_ref (the cross term vanishes).
    """
    f = _features(features)
    mu = np.atleast_1d(np.asarray(mu_ref, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma_ref, dtype=np.float64))
    d = f.shape[1]
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise ValueError(f"reference mean and covariance must be {d} and {d}×{d} to match the features, "
                         f"got {mu.shape} and {sigma.shape}")
    return np.sum((f - mu) ** 2, axis=1) + float(np.trace(sigma))


def per_image_kl(probabilities, reference_probabilities, eps: float = 1e-12) -> np.ndarray:
    """Per-image KL(p(y|image) ‖ p_ref(y)) in nats, p_ref = the mean of the reference rows (0·log 0 = 0).

    p_ref is clipped below at `eps` so a class the reference never predicts gives a large finite value.
    """
    p = _probabilities(probabilities)
    reference = _probabilities(reference_probabilities, "reference_probabilities")
    if p.shape[1] != reference.shape[1]:
        raise ValueError(f"probabilities have {p.shape[1]} classes but the reference has {reference.shape[1]}")
    return _kl_rows(p, reference.mean(axis=0, keepdims=True), eps=eps)


def clip_score(cosines, definition: str = "clip") -> np.ndarray:
    """CLIP score from image–text cosine similarities.

    "clip": 100·max(cos, 0) per image (torchmetrics' CLIPScore scale; torchmetrics clamps only the mean over
    images, max(mean(100·cos), 0), so per-image values and their mean can differ from it when cosines are negative).
    "hessel": 2.5·max(cos, 0), Hessel et al.'s CLIP-S (2021).
    """
    cos = np.asarray(cosines, dtype=np.float64)
    factors = {"clip": 100.0, "hessel": 2.5}
    if definition not in factors:
        raise ValueError(f"unknown CLIP score definition {definition!r}: use 'clip' (100·max(cos, 0)) or "
                         f"'hessel' (2.5·max(cos, 0))")
    return factors[definition] * np.maximum(cos, 0.0)


# ------------------------------------------------------------------------------------------ paired pixels
def _pixel_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, image in (("first", a), ("second", b)):
        image = np.asarray(image)
        if image.dtype != np.uint8:
            raise ValueError(f"the {name} image is {image.dtype}; paired metrics take 8-bit images (uint8, 0–255)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(f"the {name} image has shape {image.shape}; expected height × width × channels")
        arrays.append(image)
    a, b = arrays
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"images of different sizes: {a.shape[1]}×{a.shape[0]} and {b.shape[1]}×{b.shape[0]}; "
                         f"paired metrics need equal sizes")
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"images with different channel counts: {a.shape[2]} and {b.shape[2]}; "
                         f"paired metrics need the same colour mode")
    return a, b


SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _ssim_plane(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Mean SSIM of two float64 planes, scikit-image's formula step by step (uniform 7×7 windows, sample
    covariances, borders of (7 − 1)/2 cropped). OpenCV's box filter stands in for scipy's uniform_filter: the
    same window means (the cropped result does not depend on the border mode), about 8× faster."""
    import cv2

    def mean(plane):
        return cv2.blur(plane, (SSIM_WINDOW, SSIM_WINDOW), borderType=cv2.BORDER_REFLECT)

    count = SSIM_WINDOW**2
    cov_norm = count / (count - 1)
    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (SSIM_WINDOW - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean(dtype=np.float64))


def ssim(a, b) -> float:
    """SSIM of two uint8 H×W×C images, data range 255: skimage.metrics.structural_similarity(channel_axis=-1).

    scikit-image's defaults: 7×7 uniform windows, K1 = 0.01, K2 = 0.03, the mean over channels (the tests
    check equality with scikit-image). Raises ValueError for images of different sizes, non-uint8 images and
    images smaller than 7×7.
    """
    a, b = _pixel_pair(a, b)
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"image of {a.shape[1]}×{a.shape[0]} pixels is too small for SSIM's 7×7 windows")
    planes = [_ssim_plane(a[:, :, c].astype(np.float64), b[:, :, c].astype(np.float64), 255.0)
              for c in range(a.shape[2])]
    return float(np.mean(planes))


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 H×W×C images, data range 255: 10·log10(255² / MSE).

    Equal to skimage.metrics.peak_signal_noise_ratio(data_range=255). Identical images have MSE 0 and a PSNR
    of +inf: returned as float("inf") (callers leave it out of averages).
    """
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _pixel_pair(a, b)
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=255))
