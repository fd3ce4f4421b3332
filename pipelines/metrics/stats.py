"""Bootstrap confidence intervals, A-versus-B differences, plain-word verdicts and warnings (numpy, float64).

- Means of per-image metrics: percentile bootstrap over images (`bootstrap_ci`, `difference_ci`); paired
  values are resampled as pairs.
- Set metrics (FID, KID, IS, CMMD): the rows of each set (and of the reference) are resampled independently
  and the metric recomputed (`bootstrap_set_metric`, `set_difference_ci`). Resampling with replacement repeats
  images, which inflates distances such as FID (fewer distinct images); the set-metric intervals therefore
  subtract the bootstrap's own bias (mean of the resamples − estimate) before taking percentiles, so they sit
  around the estimate instead of above it.
- FID, KID and CMMD only need inner products between rows: for them (the formulas functions themselves, or
  functools.partial of them) one Gram/kernel matrix of all rows is computed once and every resample only
  looks rows up; a resample repeats rows, so FID needs only an SVD of its distinct rows (about 316×316 for
  500 images, ~10 ms on an idle 2-core machine).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from . import formulas
from .formulas import MetricInfo

__all__ = ["SET_METRIC_BOOTSTRAP", "DifferenceCI", "bootstrap_ci", "bootstrap_set_metric", "difference_ci",
           "set_difference_ci", "verdict", "warnings_for"]

# Default resamples for set metrics: each recomputes the metric (an SVD for FID), so fewer than the 1000 used
# for means; enough for a 95% percentile interval (12 resamples in each tail). FID on 500 vs 500 images of
# 2048-d features: about 5 s per 500 resamples on an idle 2-core machine (twice that against a reference).
SET_METRIC_BOOTSTRAP = 500
FID_MIN_IMAGES = 2048  # FID's feature size: below it the covariance is rank-deficient
_FAST_MAX_ROWS = 4096  # the shared Gram matrix of all rows (A, B and reference) is used up to this many rows
_CHUNK_ELEMENTS = 2_000_000  # resampled values held in memory at once by the vectorised mean bootstrap


@dataclass(frozen=True)
class DifferenceCI:
    """A's and B's values, the difference B − A and its bootstrap interval [low, high]."""

    a: float
    b: float
    difference: float  # b − a
    low: float  # NaN when there are too few values for an interval
    high: float
    paired: bool
    confidence: float = 0.95
    a_interval: tuple[float, float] | None = None  # interval of A's value alone (error bars)
    b_interval: tuple[float, float] | None = None
    n_bootstrap: int = 0

    @property
    def excludes_zero(self) -> bool:
        """True when the interval of the difference lies entirely above or below 0 (a real difference)."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high) and (self.low > 0 or self.high < 0))


# ------------------------------------------------------------------------------------------ helpers
def _check_bootstrap(n_bootstrap: int, confidence: float) -> None:
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def _percentiles(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    samples = np.asarray(samples, dtype=np.float64)
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def _values(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{name}: no values to summarise")
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise ValueError(f"{name}: {bad} values are NaN or infinite (PSNR of identical images is +inf); "
                         f"leave them out first")
    return array


def _mean_resamples(rng: np.random.Generator, columns: Sequence[np.ndarray], n_bootstrap: int,
                    paired: bool) -> list[np.ndarray]:
    """Bootstrap means of each 1-D array in `columns`; paired: the same resampled rows for all of them."""
    n_max = max(len(c) for c in columns)
    chunk = max(1, _CHUNK_ELEMENTS // n_max)
    out: list[list[np.ndarray]] = [[] for _ in columns]
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        shared = rng.integers(0, len(columns[0]), (size, len(columns[0]))) if paired else None
        for k, column in enumerate(columns):
            index = shared if paired else rng.integers(0, len(column), (size, len(column)))
            out[k].append(column[index].mean(axis=1))
    return [np.concatenate(parts) for parts in out]


# ------------------------------------------------------------------------------------------ per-image means
def bootstrap_ci(values, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0,
                 statistic: Callable = np.mean) -> tuple[float, float, float]:
    """(estimate, low, high): `statistic` of the values and its percentile-bootstrap interval over rows.

    `statistic` takes an array of rows (np.mean by default; np.mean and np.median are vectorised). With one
    row there is no interval: low = high = NaN.
    """
    _check_bootstrap(n_bootstrap, confidence)
    array = _values(values, "values")
    estimate = float(np.asarray(statistic(array), dtype=np.float64).item())
    n = array.shape[0]
    if n < 2:
        return estimate, math.nan, math.nan
    rng = np.random.default_rng(seed)
    if array.ndim == 1 and statistic is np.mean:
        samples = _mean_resamples(rng, [array], n_bootstrap, paired=False)[0]
    elif array.ndim == 1 and statistic is np.median:
        samples = np.median(array[rng.integers(0, n, (n_bootstrap, n))], axis=1)
    else:
        samples = np.array([np.asarray(statistic(array[rng.integers(0, n, n)]), dtype=np.float64).item()
                            for _ in range(n_bootstrap)])
    return (estimate, *_percentiles(samples, confidence))


def difference_ci(values_a, values_b, paired: bool, n_bootstrap: int = 1000, seed: int = 0,
                  confidence: float = 0.95) -> DifferenceCI:
    """Means of a per-image metric on A and B, and the percentile-bootstrap interval of mean(B) − mean(A).

    paired: values_a[i] and values_b[i] belong to the same item (e.g. the same reference image) and are
    resampled together, which removes the items' shared variation; unpaired: each set is resampled on its own.
    Fewer than 2 values in a set: no interval (low = high = NaN).
    """
    _check_bootstrap(n_bootstrap, confidence)
    a, b = _values(values_a, "A"), _values(values_b, "B")
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError("difference_ci takes one value per image (1-D arrays)")
    if paired and len(a) != len(b):
        raise ValueError(f"paired values need equal counts, got {len(a)} for A and {len(b)} for B")
    mean_a, mean_b = float(a.mean()), float(b.mean())
    if min(len(a), len(b)) < 2:
        return DifferenceCI(mean_a, mean_b, mean_b - mean_a, math.nan, math.nan, paired, confidence,
                            n_bootstrap=int(n_bootstrap))
    rng = np.random.default_rng(seed)
    boot_a, boot_b = _mean_resamples(rng, [a, b], int(n_bootstrap), paired)
    return DifferenceCI(mean_a, mean_b, mean_b - mean_a, *_percentiles(boot_b - boot_a, confidence), paired=paired,
                        confidence=confidence, a_interval=_percentiles(boot_a, confidence),
                        b_interval=_percentiles(boot_b, confidence), n_bootstrap=int(n_bootstrap))


# ------------------------------------------------------------------------------------------ set metrics
def _scalar(value) -> float:
    """A metric's number; metrics returning (mean, std), such as KID and IS, give their first element."""
    if isinstance(value, tuple):
        value = value[0]
    return float(value)


def _fast_evaluator(metric_fn: Callable, arrays: Sequence[np.ndarray]) -> Callable | None:
    """For FID, KID and CMMD: evaluate(pairs) on resampled rows via one Gram matrix of all rows, else None.

    The returned evaluate(set_a, index_a, set_b, index_b) equals metric_fn(arrays[set_a][index_a],
    arrays[set_b][index_b]) up to rounding (the tests check this), but looks rows up instead of recomputing.
    """
    fn, kwargs = metric_fn, {}
    if isinstance(fn, functools.partial) and not fn.args:
        fn, kwargs = fn.func, dict(fn.keywords)
    if fn not in (formulas.frechet_distance_from_features, formulas.mmd_rbf, formulas.kernel_inception_distance):
        return None
    if any(a.ndim != 2 or a.shape[1] != arrays[0].shape[1] or a.shape[0] < 2 or not np.isfinite(a).all()
           for a in arrays):
        return None  # let the metric itself raise its clear error
    sizes = [a.shape[0] for a in arrays]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    total, d = sum(sizes), arrays[0].shape[1]
    if total > _FAST_MAX_ROWS:
        return None
    rows = np.concatenate(arrays).astype(np.float64)

    def distinct(s, index):  # the rows a resample uses, as union indices, and how often each appears
        counts = np.bincount(index, minlength=sizes[s])
        used = np.flatnonzero(counts)
        return offsets[s] + used, counts[used].astype(np.float64)

    if fn is formulas.frechet_distance_from_features:
        if kwargs or min(sizes) >= d:  # many rows: the d×d path of the metric itself is cheaper
            return None
        rows = rows - rows.mean(axis=0)  # translation-invariant; centring keeps the Gram accurate
        gram = rows @ rows.T

        def fid(sa, ia, sb, ib):
            (ua, wa), (ub, wb) = distinct(sa, ia), distinct(sb, ib)
            return formulas.frechet_distance_from_gram(gram[np.ix_(ua, ua)], gram[np.ix_(ub, ub)],
                                                       gram[np.ix_(ua, ub)], wa, wb)
        return fid

    if fn is formulas.mmd_rbf:
        if set(kwargs) - {"sigma", "scale"}:
            return None
        rows = rows - rows.mean(axis=0)
        gram = rows @ rows.T

        def cmmd(sa, ia, sb, ib):
            (ua, wa), (ub, wb) = distinct(sa, ia), distinct(sb, ib)
            return formulas.mmd_rbf_from_gram(gram[np.ix_(ua, ua)], gram[np.ix_(ub, ub)], gram[np.ix_(ua, ub)],
                                              weights_x=wa, weights_y=wb, **kwargs)
        return cmmd

    # KID: the polynomial kernel of all rows once; subsets are drawn exactly as kernel_inception_distance does
    if set(kwargs) - {"subsets", "subset_size", "degree", "gamma", "coef0", "seed"}:
        return None
    options = {"subsets": 100, "subset_size": 1000, "degree": 3, "gamma": None, "coef0": 1.0, "seed": 0, **kwargs}
    kernel = formulas.poly_kernel(rows, rows, options["degree"], options["gamma"], options["coef0"])

    def kid(sa, ia, sb, ib):
        if int(options["subsets"]) >= 1 and len(ia) == len(ib) <= int(options["subset_size"]) and len(ia) >= 2:
            (ua, wa), (ub, wb) = distinct(sa, ia), distinct(sb, ib)  # every subset is the whole resample
            return formulas.poly_mmd_unbiased(kernel[np.ix_(ua, ua)], kernel[np.ix_(ub, ub)], kernel[np.ix_(ua, ub)],
                                              wa, wb)
        pa, pb = offsets[sa] + ia, offsets[sb] + ib

        def blocks(ja, jb):
            va, vb = pa[ja], pb[jb]
            return kernel[np.ix_(va, va)], kernel[np.ix_(vb, vb)], kernel[np.ix_(va, vb)]

        return formulas._kid_from_blocks(len(pa), len(pb), blocks, options["subsets"], options["subset_size"],
                                         options["seed"])[0]
    return kid


def _set_resamples(metric_fn: Callable, arrays: list[np.ndarray], comparisons: list[tuple[int, ...]],
                   n_bootstrap: int, seed: int) -> np.ndarray:
    """Metric values on n_bootstrap resamples: rows of every array resampled independently (shared by all
    comparisons of one resample); comparisons are (i,) for metric_fn(arrays[i]) or (i, j) for two sets."""
    rng = np.random.default_rng(seed)
    fast = _fast_evaluator(metric_fn, arrays) if all(len(c) == 2 for c in comparisons) else None
    values = np.empty((n_bootstrap, len(comparisons)))
    for r in range(n_bootstrap):
        index = [rng.integers(0, len(a), len(a)) for a in arrays]
        for k, sets in enumerate(comparisons):
            if fast is not None:
                i, j = sets
                values[r, k] = fast(i, index[i], j, index[j])
            else:
                values[r, k] = _scalar(metric_fn(*(arrays[s][index[s]] for s in sets)))
    return values


def _bias_corrected(samples: np.ndarray, estimate: float) -> np.ndarray:
    """Resamples shifted by the bootstrap bias (their mean − the estimate): duplicates inflate set metrics."""
    finite = samples[np.isfinite(samples)]
    return samples - (finite.mean() - estimate) if finite.size else samples


def _as_rows(features, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a 2-D array with one row per image, got shape {array.shape}")
    return array


def bootstrap_set_metric(metric_fn: Callable, features_a, features_b=None, n_bootstrap: int = SET_METRIC_BOOTSTRAP,
                         seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high) of a set metric: metric_fn(A) or metric_fn(A, B) and its bootstrap interval.

    The rows of A (and, independently, of B) are resampled with replacement and the metric recomputed;
    the interval is the percentile interval of the bias-corrected resamples. Metrics returning (mean, std)
    use the mean. Default SET_METRIC_BOOTSTRAP = 500 resamples. Fewer than 2 rows in a set: no interval (NaN).
    """
    _check_bootstrap(n_bootstrap, confidence)
    arrays = [_as_rows(features_a, "features_a")]
    if features_b is not None:
        arrays.append(_as_rows(features_b, "features_b"))
    estimate = _scalar(metric_fn(*arrays))
    if min(len(x) for x in arrays) < 2:  # one image: every resample is the same, there is no interval
        return estimate, math.nan, math.nan
    comparison = (0, 1) if len(arrays) == 2 else (0,)
    samples = _set_resamples(metric_fn, arrays, [comparison], int(n_bootstrap), seed)[:, 0]
    return (estimate, *_percentiles(_bias_corrected(samples, estimate), confidence))


def set_difference_ci(metric_fn: Callable, feats_a, feats_b, reference_feats=None,
                      n_bootstrap: int = SET_METRIC_BOOTSTRAP, seed: int = 0,
                      confidence: float = 0.95) -> DifferenceCI:
    """A set metric on A and on B and the bootstrap interval of the difference B − A.

    With reference_feats the metric compares each set with the reference: a = metric_fn(A, ref),
    b = metric_fn(B, ref) (e.g. FID, KID, CMMD); without, a = metric_fn(A), b = metric_fn(B) (e.g. IS).
    Each resample draws rows of A, B and the reference independently (one reference resample shared by both
    comparisons) and recomputes both values; the intervals are percentile intervals of the bias-corrected
    resamples. Default SET_METRIC_BOOTSTRAP = 500 resamples.
    """
    _check_bootstrap(n_bootstrap, confidence)
    arrays = [_as_rows(feats_a, "A"), _as_rows(feats_b, "B")]
    if reference_feats is not None:
        arrays.append(_as_rows(reference_feats, "reference"))
        comparisons = [(0, 2), (1, 2)]
    else:
        comparisons = [(0,), (1,)]
    a, b = (_scalar(metric_fn(*(arrays[s] for s in sets))) for sets in comparisons)
    if min(len(arrays[0]), len(arrays[1])) < 2:  # one image in A or B: no interval and so no verdict
        return DifferenceCI(a, b, b - a, math.nan, math.nan, paired=False, confidence=confidence,
                            n_bootstrap=int(n_bootstrap))
    samples = _set_resamples(metric_fn, arrays, comparisons, int(n_bootstrap), seed)
    boot_a, boot_b = _bias_corrected(samples[:, 0], a), _bias_corrected(samples[:, 1], b)
    return DifferenceCI(a, b, b - a, *_percentiles(boot_b - boot_a, confidence), paired=False, confidence=confidence,
                        a_interval=_percentiles(boot_a, confidence), b_interval=_percentiles(boot_b, confidence),
                        n_bootstrap=int(n_bootstrap))


# ------------------------------------------------------------------------------------------ words
def _number(value: float) -> str:
    """3 significant digits, with a real minus sign."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.3g}"
    return text.replace("-", "−")


def verdict(metric: MetricInfo, diff: DifferenceCI) -> str:
    """One plain sentence: a winner only when the interval of B − A excludes 0, otherwise "no clear difference"."""
    level = f"{100 * diff.confidence:g}%"
    if not (math.isfinite(diff.low) and math.isfinite(diff.high)):
        return (f"No verdict on {metric.name}: a {level} interval needs at least 2 images (or pairs) in each set.")
    interval = f"{_number(diff.low)} to {_number(diff.high)}"
    if diff.excludes_zero:
        b_higher = diff.low > 0
        winner = "B" if b_higher == metric.higher_is_better else "A"
        loser = "A" if winner == "B" else "B"
        relation = "closer to the reference than" if metric.to_reference else "better than"
        direction = "higher is better" if metric.higher_is_better else "lower is better"
        return (f"{winner} is {relation} {loser} on {metric.name} ({direction}): the difference is outside the "
                f"noise (the {level} interval of B − A is {interval}).")
    return (f"No clear difference on {metric.name}: the {level} interval of the difference (B − A: {interval}) "
            f"includes 0.")


def warnings_for(n_a: int, n_b: int, metrics: Iterable[str], resized: bool, *,
                 n_reference: int | None = None) -> list[str]:
    """Plain-word warnings about the sizes of the sets, FID on small sets and resizing."""
    keys = set(metrics)
    set_metrics = [formulas.METRIC_INFO[k].name for k in formulas.METRIC_INFO
                   if k in keys and formulas.METRIC_INFO[k].kind == "set"]
    out: list[str] = []
    sizes = [n for n in (n_a, n_b, n_reference) if n is not None]
    smallest = min(sizes) if sizes else 0
    if "fid" in keys and smallest < FID_MIN_IMAGES:
        out.append(f"FID is computed from only {smallest} images in the smallest set. With fewer than "
                   f"{FID_MIN_IMAGES} images (the Inception feature size) the covariance matrix is rank-deficient "
                   f"and FID is biased upward, so its value depends on the number of images: compare FID only "
                   f"between sets of the same size, and prefer KID or CMMD for small sets.")
    if "clip_fid" in keys and smallest < FID_MIN_IMAGES:
        out.append(f"CLIP-FID is biased upward on small sets like FID ({smallest} images in the smallest set): "
                   f"compare it only between sets of the same size.")
    if n_a != n_b:
        text = f"Sets A and B have different sizes ({n_a} and {n_b} images)."
        if set_metrics:
            text += (f" {', '.join(set_metrics)} depend on the number of images, so part of their difference may "
                     f"come from the sizes; use sets of the same size for a fair comparison.")
        out.append(text)
    if min(n_a, n_b) < 2:
        out.append("A set has fewer than 2 images: there is no confidence interval and no verdict.")
    elif min(n_a, n_b) < 20:
        out.append(f"Only {min(n_a, n_b)} images in the smaller set: the 95% intervals will be wide, so a real "
                   f"difference may still get \"no clear difference\".")
    if resized:
        out.append("Images were resized to the feature network's input size before scoring. Scores depend on the "
                   "resizing method, so compare them only with scores computed the same way.")
    return out
