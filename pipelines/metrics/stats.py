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

import contextlib
import functools
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
MAX_BOOTSTRAP_WORKERS = 8  # threads for resamples that need a decomposition each (FID)
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


def _plain_function(metric_fn: Callable) -> tuple[Callable, dict]:
    """(function, keyword arguments) of a metric given as a formulas function or a keyword-only partial of one."""
    if isinstance(metric_fn, functools.partial) and not metric_fn.args:
        return metric_fn.func, dict(metric_fn.keywords)
    return metric_fn, {}


def _worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _per_resample(evaluate: Callable[[int], float], n_bootstrap: int) -> np.ndarray:
    """evaluate(r) for every resample r, on one thread per core with LAPACK single-threaded in each: the
    matrices are small (~300×300), where one thread per decomposition is faster than one shared by all."""
    workers = min(_worker_count(), MAX_BOOTSTRAP_WORKERS)
    if workers < 2 or n_bootstrap < 2 * workers:
        return np.array([evaluate(r) for r in range(n_bootstrap)], dtype=np.float64)
    with _single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
        return np.fromiter(pool.map(evaluate, range(n_bootstrap)), dtype=np.float64, count=n_bootstrap)


_BLAS_LOCK = threading.Lock()
_blas_state = {"users": 0, "limiter": None}


@contextlib.contextmanager
def _single_threaded_blas():
    """BLAS limited to one thread while any bootstrap runs its workers. The limit is process-wide, so
    overlapping bootstraps (library callers in parallel threads) share one limiter: the first sets it, the last
    restores the original setting."""
    from threadpoolctl import threadpool_limits

    with _BLAS_LOCK:
        if _blas_state["users"] == 0:
            _blas_state["limiter"] = threadpool_limits(limits=1, user_api="blas")
        _blas_state["users"] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _blas_state["users"] -= 1
            if _blas_state["users"] == 0:
                _blas_state["limiter"].restore_original_limits()
                _blas_state["limiter"] = None


def _counts(index: np.ndarray, n: int) -> np.ndarray:
    """R×n: how many times each row appears in each of the R resamples (R×n row indices)."""
    rows = index.shape[0]
    flat = (index + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


class _Shortcut:
    """Resampled values of FID, KID, CMMD or IS from quantities computed once for all rows.

    values(comparison, index) -> R values, where index[s] is the R×n_s matrix of resampled row indices of
    set s, equal (up to rounding; the tests check this) to metric_fn on the resampled rows:
    * CMMD and KID are kernel means: with count vectors c, each is a quadratic form cᵀKc of one kernel matrix
      of all rows, so all resamples are a few matrix products;
    * IS is, per split, exp(mean_i Σ p_i log p_i − Σ p̄ log p̄) with p̄ = cᵀP / n: one matrix product per split;
    * FID needs the singular values of each resample's centred cross product: one SVD of its distinct rows,
      resamples spread over the cores.
    """

    def __init__(self, kind: str, arrays: Sequence[np.ndarray], options: dict) -> None:
        self.kind, self.options = kind, options
        self.sizes = [a.shape[0] for a in arrays]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        if kind == "is":
            p = [formulas._probabilities(a) for a in arrays]
            self.probabilities = p
            self.negentropy = [formulas._kl_rows(a, np.ones((1, a.shape[1]))) for a in p]  # Σ p log p (0 log 0 = 0)
            return
        rows = np.concatenate(arrays).astype(np.float64)
        if kind == "kid":
            self.kernel = formulas.poly_kernel(rows, rows, options["degree"], options["gamma"], options["coef0"])
        else:
            rows = rows - rows.mean(axis=0)  # FID and CMMD are translation-invariant; centring keeps the Gram exact
            gram = rows @ rows.T
            if kind == "cmmd":
                sq = np.diag(gram)
                gamma = 1.0 / (2.0 * options["sigma"] ** 2)
                self.kernel = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0))
            else:
                self.gram = gram
        self._counts: dict[int, np.ndarray] = {}

    def _block(self, s: int, t: int) -> np.ndarray:
        rows, cols = (slice(self.offsets[u], self.offsets[u] + self.sizes[u]) for u in (s, t))
        return self.kernel[rows, cols]

    def _count_matrix(self, s: int, index: Sequence[np.ndarray]) -> np.ndarray:
        if s not in self._counts:
            self._counts[s] = _counts(index[s], self.sizes[s])
        return self._counts[s]

    def _quadratic(self, s: int, t: int, index: Sequence[np.ndarray]) -> np.ndarray:
        cs, ct = self._count_matrix(s, index), self._count_matrix(t, index)
        return np.einsum("rj,rj->r", cs @ self._block(s, t), ct)

    def values(self, comparison: tuple[int, ...], index: Sequence[np.ndarray]) -> np.ndarray:
        if self.kind == "is":
            return self._inception_score(comparison[0], index[comparison[0]])
        s, t = comparison
        if self.kind == "cmmd":
            ns, nt = self.sizes[s], self.sizes[t]
            value = (self._quadratic(s, s, index) / ns**2 + self._quadratic(t, t, index) / nt**2
                     - 2 * self._quadratic(s, t, index) / (ns * nt))
            return np.maximum(self.options["scale"] * value, 0.0)
        if self.kind == "kid":
            return self._kid(s, t, index)
        return _per_resample(lambda r: self._fid(s, index[s][r], t, index[t][r]), index[s].shape[0])

    def _inception_score(self, s: int, index: np.ndarray) -> np.ndarray:
        """IS of each resample as inception_score computes it: consecutive splits of the resampled rows, each
        exp(mean Σ p log p − Σ p̄ log p̄) with p̄ the split's mean, averaged over the splits."""
        n = self.sizes[s]
        splits = formulas.inception_score_splits(n, self.options["splits"], self.options["min_split_size"])
        scores = np.zeros(index.shape[0])
        for k in range(splits):
            chunk = index[:, k * n // splits:(k + 1) * n // splits]
            counts, size = _counts(chunk, n), chunk.shape[1]
            marginal = counts @ self.probabilities[s] / size
            log_marginal = np.log(np.maximum(marginal, np.finfo(np.float64).tiny))
            scores += np.exp(counts @ self.negentropy[s] / size - np.einsum("rk,rk->r", marginal, log_marginal))
        return scores / splits

    def _distinct(self, s: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = np.bincount(rows, minlength=self.sizes[s])
        used = np.flatnonzero(counts)
        return self.offsets[s] + used, counts[used].astype(np.float64)

    def _fid(self, s: int, rows_s: np.ndarray, t: int, rows_t: np.ndarray) -> float:
        (us, ws), (ut, wt) = self._distinct(s, rows_s), self._distinct(t, rows_t)
        gram = self.gram
        return formulas.frechet_distance_from_gram(gram[np.ix_(us, us)], gram[np.ix_(ut, ut)], gram[np.ix_(us, ut)],
                                                   ws, wt)

    def _kid(self, s: int, t: int, index: Sequence[np.ndarray]) -> np.ndarray:
        m, options = self.sizes[s], self.options
        if m == self.sizes[t] <= int(options["subset_size"]) and m >= 2:
            # every subset is the whole resample: the unbiased MMD² of the resampled rows (repeats are distinct
            # positions i ≠ j, so only each row's own kernel value, counted c times, leaves the sums)
            diagonal = [np.diag(self._block(u, u)) @ self._count_matrix(u, index).T for u in (s, t)]
            within = (self._quadratic(s, s, index) - diagonal[0] + self._quadratic(t, t, index) - diagonal[1])
            return within / (m * (m - 1)) - 2 * self._quadratic(s, t, index) / m**2
        kernel, offsets = self.kernel, self.offsets

        def one(r: int) -> float:
            pa, pb = offsets[s] + index[s][r], offsets[t] + index[t][r]

            def blocks(ja, jb):
                va, vb = pa[ja], pb[jb]
                return kernel[np.ix_(va, va)], kernel[np.ix_(vb, vb)], kernel[np.ix_(va, vb)]

            return formulas._kid_from_blocks(len(pa), len(pb), blocks, options["subsets"], options["subset_size"],
                                             options["seed"])[0]
        return _per_resample(one, index[s].shape[0])


_SHORTCUT_OPTIONS = {
    formulas.frechet_distance_from_features: ("fid", {}),
    formulas.mmd_rbf: ("cmmd", {"sigma": 10.0, "scale": 1000.0}),
    formulas.kernel_inception_distance: ("kid", {"subsets": 100, "subset_size": 1000, "degree": 3, "gamma": None,
                                                 "coef0": 1.0, "seed": 0}),
    formulas.inception_score: ("is", {"splits": 10, "min_split_size": 1}),
}


def _shortcut(metric_fn: Callable, arrays: Sequence[np.ndarray], comparisons: Sequence[tuple[int, ...]]
              ) -> _Shortcut | None:
    """A _Shortcut for FID, KID, CMMD (two sets per comparison) and IS (one set), else None."""
    fn, kwargs = _plain_function(metric_fn)
    if fn not in _SHORTCUT_OPTIONS:
        return None
    kind, defaults = _SHORTCUT_OPTIONS[fn]
    if set(kwargs) - set(defaults):
        return None
    options = {**defaults, **kwargs}
    width = 1 if kind == "is" else 2
    if any(len(c) != width for c in comparisons):
        return None
    if any(a.ndim != 2 or a.shape[1] != arrays[0].shape[1] or a.shape[0] < 2 or not np.isfinite(a).all()
           for a in arrays):
        return None  # let the metric itself raise its clear error
    if sum(a.shape[0] for a in arrays) > _FAST_MAX_ROWS:
        return None
    if kind == "fid" and min(a.shape[0] for a in arrays) >= arrays[0].shape[1]:
        return None  # many rows: the d×d path of the metric itself is cheaper
    if kind == "is":
        try:
            formulas._probabilities(np.concatenate(arrays))
        except ValueError:
            return None
    if kind == "kid":
        options["gamma"] = 1.0 / arrays[0].shape[1] if options["gamma"] is None else float(options["gamma"])
    return _Shortcut(kind, arrays, options)


def _resample_indices(rng: np.random.Generator, sizes: Sequence[int], n_bootstrap: int) -> list[np.ndarray]:
    """Per set an R×n matrix of row indices drawn with replacement; resample by resample, set by set."""
    index = [np.empty((n_bootstrap, n), dtype=np.int64) for n in sizes]
    for r in range(n_bootstrap):
        for s, n in enumerate(sizes):
            index[s][r] = rng.integers(0, n, n)
    return index


def _set_resamples(metric_fn: Callable, arrays: list[np.ndarray], comparisons: list[tuple[int, ...]],
                   n_bootstrap: int, seed: int) -> np.ndarray:
    """Metric values on n_bootstrap resamples: rows of every array resampled independently (shared by all
    comparisons of one resample); comparisons are (i,) for metric_fn(arrays[i]) or (i, j) for two sets."""
    index = _resample_indices(np.random.default_rng(seed), [len(a) for a in arrays], n_bootstrap)
    shortcut = _shortcut(metric_fn, arrays, comparisons)
    if shortcut is not None:
        return np.column_stack([shortcut.values(tuple(sets), index) for sets in comparisons])
    values = np.empty((n_bootstrap, len(comparisons)))
    for r in range(n_bootstrap):
        for k, sets in enumerate(comparisons):
            values[r, k] = _scalar(metric_fn(*(arrays[s][index[s][r]] for s in sets)))
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
def readable_number(value: float) -> str:
    """A number as a person reads it (the helper every metrics table and verdict shares): 3 significant digits
    and at most 4 decimals (no trailing zeros), so −6.971e-07 reads 0 and 0.83333 reads 0.833; thousands with
    separators; a real minus sign; never scientific notation."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) < 5e-5:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}".replace("-", "−")
    decimals = max(0, min(4, 2 - math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    if "." in text:  # 0.0100 reads 0.01, 1.00 reads 1
        text = text.rstrip("0").rstrip(".")
    return text.replace("-", "−")


_number = readable_number


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
