"""Bootstrap intervals, A/B differences, verdicts and warnings on simulated data whose truth is known."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from pipelines.metrics import formulas, stats

INFO = formulas.METRIC_INFO
TRIALS = 50


# ------------------------------------------------------------------------------------------ bootstrap_ci
def test_bootstrap_ci_brackets_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(5, 2, 50), rng.normal(5, 2, 2000)
    estimate, low, high = stats.bootstrap_ci(small, seed=1)
    assert estimate == pytest.approx(small.mean()) and low < estimate < high
    assert stats.bootstrap_ci(small, seed=1) == (estimate, low, high)  # the seed fixes it
    _, low_l, high_l = stats.bootstrap_ci(large, seed=1)
    assert (high_l - low_l) < 0.3 * (high - low)  # ~ 1/√n: √(50/2000) ≈ 0.16
    # the width is about 2 × 1.96 standard errors
    assert (high_l - low_l) == pytest.approx(2 * 1.96 * large.std() / math.sqrt(len(large)), rel=0.15)


def test_bootstrap_ci_other_statistics_and_edge_cases():
    values = np.arange(1.0, 101.0)
    estimate, low, high = stats.bootstrap_ci(values, statistic=np.median)
    assert estimate == 50.5 and low < 50.5 < high
    estimate, low, high = stats.bootstrap_ci(values, n_bootstrap=200, statistic=lambda v: np.percentile(v, 90))
    assert estimate == pytest.approx(90.1) and low <= estimate <= high
    estimate, low, high = stats.bootstrap_ci([3.0])
    assert estimate == 3.0 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="infinite"):
        stats.bootstrap_ci([1.0, float("inf")])
    with pytest.raises(ValueError, match="no values"):
        stats.bootstrap_ci([])


# ------------------------------------------------------------------------------------------ difference_ci
def _paired_trial(seed: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image scores of A and B on the same 80 reference images: a shared per-image level plus noise."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0.6, 0.1, 80)
    return level + rng.normal(0, 0.03, 80), level + effect + rng.normal(0, 0.03, 80)


def _unpaired_trial(seed: int, effect: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.6, 0.1, 80), rng.normal(0.6 + effect, 0.1, 90)


@pytest.mark.parametrize(("paired", "trial", "effect"), [(True, _paired_trial, 0.015), (False, _unpaired_trial, 0.05)])
def test_interval_of_the_difference_covers_the_truth_when_b_is_better(paired, trial, effect):
    covered = b_wins = 0
    for seed in range(TRIALS):
        a, b = trial(seed, effect)
        diff = stats.difference_ci(a, b, paired=paired, seed=seed)
        assert diff.paired is paired and diff.difference == pytest.approx(b.mean() - a.mean())
        covered += diff.low <= effect <= diff.high
        b_wins += stats.verdict(INFO["ssim"], diff).startswith("B is closer to the reference than A on SSIM")
    assert covered >= 0.9 * TRIALS, covered
    assert b_wins >= 0.7 * TRIALS, b_wins  # the effect is large enough to be found most of the time


@pytest.mark.parametrize(("paired", "trial"), [(True, _paired_trial), (False, _unpaired_trial)])
def test_same_distribution_gets_no_verdict_in_most_trials(paired, trial):
    no_difference = 0
    for seed in range(TRIALS):
        a, b = trial(1000 + seed, 0.0)
        text = stats.verdict(INFO["psnr"], stats.difference_ci(a, b, paired=paired, seed=seed))
        no_difference += text.startswith("No clear difference on PSNR")
    assert no_difference >= 0.8 * TRIALS, no_difference


def test_difference_ci_intervals_and_input_checks():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1, 1, 60), rng.normal(2, 1, 60)
    diff = stats.difference_ci(a, b, paired=False, n_bootstrap=500)
    assert diff.a_interval[0] < diff.a < diff.a_interval[1] and diff.b_interval[0] < diff.b < diff.b_interval[1]
    assert diff.low < diff.difference < diff.high and diff.excludes_zero and diff.n_bootstrap == 500
    with pytest.raises(ValueError, match="equal counts"):
        stats.difference_ci(a, b[:10], paired=True)
    single = stats.difference_ci([1.0], [2.0], paired=True)
    assert math.isnan(single.low) and not single.excludes_zero
    assert stats.verdict(INFO["ssim"], single).startswith("No verdict on SSIM")


# ------------------------------------------------------------------------------------------ verdict
def _diff(low: float, high: float, a: float = 1.0) -> stats.DifferenceCI:
    return stats.DifferenceCI(a=a, b=a + (low + high) / 2, difference=(low + high) / 2, low=low, high=high,
                              paired=False)


def test_verdict_names_a_winner_only_when_the_interval_excludes_zero():
    assert stats.verdict(INFO["kid"], _diff(-0.02, -0.01)).startswith(
        "B is closer to the reference than A on KID (lower is better): the difference is outside the noise")
    assert stats.verdict(INFO["kid"], _diff(0.01, 0.02)).startswith("A is closer to the reference than B on KID")
    assert stats.verdict(INFO["is"], _diff(0.5, 1.5)).startswith("B is better than A on IS (higher is better)")
    assert stats.verdict(INFO["clip_score"], _diff(-3.0, -1.0)).startswith("A is better than B on CLIP score")
    assert stats.verdict(INFO["ssim"], _diff(0.01, 0.03)).startswith("B is closer to the reference than A on SSIM")
    text = stats.verdict(INFO["ssim"], _diff(-0.01, 0.02))
    assert text == "No clear difference on SSIM: the 95% interval of the difference (B − A: −0.01 to 0.02) includes 0."
    assert stats.verdict(INFO["fid"], _diff(0.0, 0.0)).startswith("No clear difference on FID")


# ------------------------------------------------------------------------------------------ set metrics
def _features(rng: np.random.Generator, n: int, shift: float, d: int = 128) -> np.ndarray:
    return np.abs(rng.normal(size=(n, d))) + shift


def test_set_difference_finds_the_set_closer_to_the_reference():
    rng = np.random.default_rng(4)
    reference = _features(rng, 60, 0.0)
    a, b = _features(rng, 60, 0.4), _features(rng, 60, 0.1)  # B is closer to the reference
    diff = stats.set_difference_ci(formulas.frechet_distance_from_features, a, b, reference, n_bootstrap=200)
    assert diff.a == pytest.approx(formulas.frechet_distance_from_features(a, reference))
    assert diff.high < 0 and diff.excludes_zero and not diff.paired
    assert stats.verdict(INFO["fid"], diff).startswith("B is closer to the reference than A on FID")
    # the bias-corrected intervals of each set sit around its own value
    assert diff.a_interval[0] < diff.a < diff.a_interval[1] and diff.b_interval[0] < diff.b < diff.b_interval[1]
    kid = stats.set_difference_ci(functools.partial(formulas.kernel_inception_distance, subsets=10), a, b, reference,
                                  n_bootstrap=200)
    assert kid.high < 0


def test_set_difference_of_the_same_distribution_includes_zero():
    rng = np.random.default_rng(5)
    reference, a, b = (_features(rng, 60, 0.2) for _ in range(3))
    diff = stats.set_difference_ci(formulas.frechet_distance_from_features, a, b, reference, n_bootstrap=200)
    assert diff.low < 0 < diff.high
    assert stats.verdict(INFO["fid"], diff).startswith("No clear difference on FID")


@pytest.mark.parametrize("metric", [
    formulas.frechet_distance_from_features,
    formulas.mmd_rbf,
    functools.partial(formulas.mmd_rbf, sigma=3.0),
    functools.partial(formulas.kernel_inception_distance, subsets=4),  # equal sizes: whole resamples
    functools.partial(formulas.kernel_inception_distance, subsets=4, subset_size=15),  # random subsets
], ids=["fid", "cmmd", "cmmd-sigma", "kid", "kid-subsets"])
def test_shared_gram_shortcut_equals_recomputing_the_metric(metric):
    rng = np.random.default_rng(6)
    a, b, reference = _features(rng, 30, 0.1, 40), _features(rng, 30, 0.3, 40), _features(rng, 30, 0.0, 40)
    assert stats._shortcut(metric, [a, b, reference], [(0, 2), (1, 2)]) is not None

    def plain(*sets):  # hides the metric from the shortcut
        return metric(*sets)

    fast = stats.set_difference_ci(metric, a, b, reference, n_bootstrap=40, seed=3)
    slow = stats.set_difference_ci(plain, a, b, reference, n_bootstrap=40, seed=3)
    for x, y in ((fast.low, slow.low), (fast.high, slow.high), (fast.a_interval[1], slow.a_interval[1]),
                 (fast.b_interval[0], slow.b_interval[0])):
        assert x == pytest.approx(y, rel=1e-8, abs=1e-12)
    # every resample's value, in order, not only the percentiles
    arrays, comparisons = [a, b, reference], [(0, 2), (1, 2)]
    np.testing.assert_allclose(stats._set_resamples(metric, arrays, comparisons, 25, seed=5),
                               stats._set_resamples(plain, arrays, comparisons, 25, seed=5), rtol=1e-8, atol=1e-12)


def test_inception_score_shortcut_equals_recomputing_it():
    rng = np.random.default_rng(8)
    confident = np.eye(10)[rng.integers(0, 10, 40)] * 0.9 + 0.01
    vague = rng.dirichlet(np.ones(10) * 5, 40)
    vague[0, :3] = 0.0  # zero probabilities: 0·log 0 = 0 on both paths
    vague[0] /= vague[0].sum()
    for options in ({"splits": 1}, {"splits": 3}, {"splits": 10}, {"splits": 10, "min_split_size": 15}):
        metric = functools.partial(formulas.inception_score, **options)  # 40 rows in 3 splits: unequal sizes
        assert stats._shortcut(metric, [confident, vague], [(0,), (1,)]) is not None

        def plain(p, metric=metric):
            return metric(p)

        np.testing.assert_allclose(stats._set_resamples(metric, [confident, vague], [(0,), (1,)], 20, seed=1),
                                   stats._set_resamples(plain, [confident, vague], [(0,), (1,)], 20, seed=1),
                                   rtol=1e-10)

        fast = stats.set_difference_ci(metric, confident, vague, n_bootstrap=60, seed=2)
        slow = stats.set_difference_ci(plain, confident, vague, n_bootstrap=60, seed=2)
        for x, y in ((fast.low, slow.low), (fast.high, slow.high), (fast.a_interval[0], slow.a_interval[0]),
                     (fast.b_interval[1], slow.b_interval[1])):
            assert x == pytest.approx(y, rel=1e-10, abs=1e-12)


def test_resamples_spread_over_threads_give_the_serial_values(monkeypatch):
    rng = np.random.default_rng(10)
    a, b, reference = _features(rng, 25, 0.1, 40), _features(rng, 25, 0.3, 40), _features(rng, 25, 0.0, 40)
    metric = formulas.frechet_distance_from_features
    monkeypatch.setattr(stats, "_worker_count", lambda: 1)
    serial = stats._set_resamples(metric, [a, b, reference], [(0, 2), (1, 2)], 30, seed=4)
    monkeypatch.setattr(stats, "_worker_count", lambda: 3)
    threaded = stats._set_resamples(metric, [a, b, reference], [(0, 2), (1, 2)], 30, seed=4)
    np.testing.assert_allclose(threaded, serial, rtol=1e-12)  # one BLAS thread per worker: rounding at most


def test_set_metric_without_reference_compares_each_set_alone():
    rng = np.random.default_rng(7)
    confident = np.eye(10)[rng.integers(0, 10, 100)] * 0.9 + 0.01  # confident and varied: high IS
    vague = rng.dirichlet(np.ones(10) * 5, 100)  # every image looks alike to the classifier: IS near 1

    def inception_score(p):
        return formulas.inception_score(p, splits=1)

    diff = stats.set_difference_ci(inception_score, confident, vague, n_bootstrap=200)
    assert diff.a > 5 > 1.5 > diff.b and diff.high < 0
    assert stats.verdict(INFO["is"], diff).startswith("A is better than B on IS")
    estimate, low, high = stats.bootstrap_set_metric(inception_score, confident, n_bootstrap=100)
    assert estimate == pytest.approx(diff.a) and low < estimate < high


def test_single_image_sets_get_a_value_but_no_interval():
    rng = np.random.default_rng(9)
    reference = _features(rng, 5, 0.0)
    diff = stats.set_difference_ci(formulas.frechet_distance_from_features, _features(rng, 1, 0.1),
                                   _features(rng, 1, 0.5), reference, n_bootstrap=20)
    assert math.isfinite(diff.a) and math.isfinite(diff.b) and math.isnan(diff.low) and not diff.excludes_zero
    assert stats.verdict(INFO["fid"], diff).startswith("No verdict on FID")
    estimate, low, high = stats.bootstrap_set_metric(formulas.frechet_distance_from_features, reference[:1], reference)
    assert math.isfinite(estimate) and math.isnan(low) and math.isnan(high)


# ------------------------------------------------------------------------------------------ warnings
def test_warnings_in_plain_words():
    small = stats.warnings_for(100, 100, ["fid", "ssim"], resized=False)
    assert len(small) == 1 and "fewer than 2048 images" in small[0] and "rank-deficient" in small[0]
    assert "KID" in small[0] and "CMMD" in small[0]
    assert stats.warnings_for(3000, 3000, ["fid", "kid"], resized=False) == []
    assert stats.warnings_for(100, 100, ["kid", "ssim"], resized=False) == []
    assert any("2048" in w for w in stats.warnings_for(3000, 3000, ["fid"], resized=False, n_reference=500))
    sizes = stats.warnings_for(3000, 2500, ["kid"], resized=False)
    assert len(sizes) == 1 and "different sizes (3000 and 2500 images)" in sizes[0] and "KID" in sizes[0]
    assert any("resized" in w for w in stats.warnings_for(3000, 3000, ["ssim"], resized=True))
    assert any("fewer than 2 images" in w for w in stats.warnings_for(1, 5, ["ssim"], resized=False))
    assert any("intervals will be wide" in w for w in stats.warnings_for(8, 8, ["ssim"], resized=False))
