"""compare(): every chosen metric for set A against set B, with confidence intervals and plain verdicts.

Features are computed once per network and set (features.FeatureCache) and shared by every metric that
needs them. A metric whose network cannot be loaded is skipped with "needs model X: reason"; pixel
metrics still run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from pipelines.core.jobs import ProgressCallback
from pipelines.core.loader import ModelLoadError, is_test_model

from . import features, formulas, stats
from .imagesets import ImageSet, as_image_set, pair_indices
from .report import TEST_NETWORK_NOTE, ComparisonReport, MetricRow

DEFAULT_MODELS = {"inception": "fid-inception", "clip": "openai/clip-vit-base-patch32", "lpips": "lpips-alex",
                  "dino": "facebook/dinov2-small"}
EMBEDDING_SIMILARITY_METRICS = ("clip_i", "dino_i")  # each image against its paired reference, or the set's
REFERENCE_METRICS = {"fid", "kid", "cmmd", "clip_fid", "clip_i", "dino_i", "fid_per_image", "kl_per_image",
                     "ssim", "psnr", "lpips", "patch_nn"}
PAIRED_PIXEL_METRICS = ("ssim", "psnr", "lpips")
# Distribution metrics need a covariance or a kernel mean over each set: at least two images in every set.
IS_SPLITS = 10
IS_MIN_SPLIT_SIZE = 50  # a split of a few images scores near 1 whatever they are
DISTRIBUTION_METRICS = {"fid", "kid", "cmmd", "clip_fid", "fid_per_image"}


def default_models() -> dict[str, str]:
    """DEFAULT_MODELS and the host's NIMA model ("" when none is configured: NIMA is then skipped, with why)."""
    from .nima import configured_source

    return {**DEFAULT_MODELS, "nima": configured_source() or ""}


def default_metrics() -> list[str]:
    return [key for key, info in formulas.METRIC_INFO.items() if info.default]


# With no reference the defaults are the metrics that need none: how varied each set is, how recognisable and
# varied to Inception, and (with prompts) how well the images follow them.
NO_REFERENCE_DEFAULTS = ("lpips_diversity", "is", "clip_score")
REFERENCE_ADDS = ("A reference set of real images would add how close each set is to real images (FID, KID, CMMD, "
                  "CLIP-I) and, paired by file name, per-image similarity to its own reference (SSIM, PSNR, LPIPS).")


def metrics_for(reference: bool, prompts: bool) -> tuple[list[str], list[str]]:
    """The default metrics for these inputs and the sentences that say what was chosen and why."""
    if reference:
        return default_metrics(), []
    chosen = [key for key in NO_REFERENCE_DEFAULTS if key != "clip_score" or prompts]
    names = ", ".join(formulas.METRIC_INFO[key].name for key in chosen)
    notes = [f"No reference set: the metrics that need none were computed ({names})."
             + ("" if prompts else " With prompts, CLIP score would say how well each set follows them."),
             REFERENCE_ADDS]
    return chosen, notes


def auto_pairs(sets: dict[str, ImageSet]) -> tuple[str | None, list[str]]:
    """Pairing "auto": by file name when A's and B's names match the reference's, and the sentence saying so."""
    from .judging import names_match

    if "reference" not in sets:
        return None, []
    reference = sets["reference"].names
    matched = {label: len(set(sets[label].names) & set(reference)) for label in ("A", "B")}
    if all(names_match(sets[label].names, reference) for label in ("A", "B")):
        return "name", [f"Paired with the reference by file name, as the names match ({matched['A']} images of A "
                        f"and {matched['B']} of B have a namesake in the reference)."]
    return None, ["The file names of A and B do not match the reference's, so SSIM, PSNR and LPIPS (which compare "
                  "each image with its own reference image) were not computed: give the images the same names, or "
                  "choose “Pair by order” under Options."]


class _Context:
    """The sets, options and lazily extracted features of one comparison."""

    def __init__(self, sets: dict[str, ImageSet], models: dict[str, str], prompts: list[str] | None,
                 pairs: dict[str, list[tuple[int, int]]], n_bootstrap: int, seed: int) -> None:
        self.sets, self.models, self.prompts, self.pairs = sets, models, prompts, pairs
        self.n_bootstrap, self.seed = n_bootstrap, seed
        # Set metrics recompute a distance per resample: capped (per-image means use n_bootstrap as given).
        self.set_bootstrap = min(n_bootstrap, stats.SET_METRIC_BOOTSTRAP)
        self.resized = False
        self.truncated_prompts: list[int] = []
        self.notes: list[str] = []  # plain facts found while computing (identical images …) for the warnings

    def inception(self, label: str) -> tuple[np.ndarray, np.ndarray]:
        image_set = self.sets[label]
        pool, probabilities, resized = features.inception_features(image_set.images, self.models["inception"],
                                                                   content_hash=image_set.content_hash())
        self.resized |= resized
        return pool, probabilities

    def clip_images(self, label: str) -> np.ndarray:
        image_set = self.sets[label]
        return features.clip_image_embeddings(image_set.images, self.models["clip"],
                                              content_hash=image_set.content_hash())

    def dino_images(self, label: str) -> np.ndarray:
        image_set = self.sets[label]
        return features.dino_image_embeddings(image_set.images, self.models["dino"],
                                              content_hash=image_set.content_hash())

    def nima(self, label: str) -> np.ndarray:
        image_set = self.sets[label]
        return features.nima_scores(image_set.images, self.models["nima"], content_hash=image_set.content_hash())

    def clip_texts(self, count: int) -> np.ndarray:
        prompts = self.prompts if len(self.prompts) != 1 else self.prompts * count
        if len(prompts) != count:
            raise ValueError(f"Give one prompt for every image ({count}) or a single prompt for all; got "
                             f"{len(self.prompts)}.")
        embeddings, truncated = features.clip_text_embeddings(list(prompts), self.models["clip"])
        self.truncated_prompts = [index for index, flag in enumerate(truncated) if flag]
        return embeddings


def _row(key: str, diff: stats.DifferenceCI | None, *, model: str = "", a=None, b=None,
         a_interval=None, b_interval=None) -> MetricRow:
    info = formulas.METRIC_INFO[key]
    row = MetricRow(key=key, name=info.name, definition=info.definition, higher_is_better=info.higher_is_better,
                    a=a, b=b, a_interval=a_interval, b_interval=b_interval, model=model,
                    test_model=bool(model) and is_test_model(model))
    if diff is not None:
        row.a, row.b, row.difference, row.low, row.high, row.paired = (diff.a, diff.b, diff.difference, diff.low,
                                                                       diff.high, diff.paired)
        row.a_interval, row.b_interval = diff.a_interval, diff.b_interval
        row.verdict = stats.verdict(info, diff)
        if diff.excludes_zero:  # the same test the verdict text uses
            b_higher = diff.low > 0
            row.better = "B" if b_higher == info.higher_is_better else "A"
    if row.test_model:
        row.verdict = f"{TEST_NETWORK_NOTE}. {row.verdict}".strip()
    return row


# ------------------------------------------------------------------------------------------ metric families
def _reference_set_metric(ctx: _Context, key: str, extract: Callable[[str], np.ndarray],
                          metric: Callable[[np.ndarray, np.ndarray], float], model: str) -> MetricRow:
    fa, fb, fr = extract("A"), extract("B"), extract("reference")
    diff = stats.set_difference_ci(metric, fa, fb, reference_feats=fr, n_bootstrap=ctx.set_bootstrap, seed=ctx.seed)
    return _row(key, diff, model=model)


# A partial of the formula itself (not a wrapper) lets the bootstrap use its shared-Gram shortcut.
_kid = functools.partial(formulas.kernel_inception_distance, subsets=20)


# The usual 10 splits (fewer on small sets, each split keeping IS_MIN_SPLIT_SIZE images) for the row's value and
# for every resample, so A, B, B − A and each interval describe the same number; a partial, so the bootstrap's
# shortcut recognises it.
_inception_score = functools.partial(formulas.inception_score, splits=IS_SPLITS, min_split_size=IS_MIN_SPLIT_SIZE)


def _is_row(ctx: _Context) -> MetricRow:
    pa, pb = ctx.inception("A")[1], ctx.inception("B")[1]
    diff = stats.set_difference_ci(_inception_score, pa, pb, n_bootstrap=ctx.set_bootstrap, seed=ctx.seed)
    return _row("is", diff, model=ctx.models["inception"])


def _per_image_inception(ctx: _Context) -> dict[str, dict[str, np.ndarray]]:
    pool_r, prob_r = ctx.inception("reference")
    mu, sigma = formulas.gaussian_stats(pool_r)
    values = {}
    for label in ("A", "B"):
        pool, prob = ctx.inception(label)
        values[label] = {"fid_per_image": formulas.per_image_fid(pool, mu, sigma),
                         "kl_per_image": formulas.per_image_kl(prob, prob_r)}
    return values


def _similarity_values(embed: Callable[[str], np.ndarray], ctx: _Context) -> dict[str, np.ndarray]:
    """CLIP-I / DINO-I: cosine of unit embeddings, each image against its paired reference or the set's."""
    reference = embed("reference")
    values = {}
    for label in ("A", "B"):
        embeddings = embed(label)
        if ctx.pairs.get(label):  # each image against its own reference image
            values[label] = np.array([embeddings[i] @ reference[j] for i, j in ctx.pairs[label]])
        else:  # against the reference set's centroid direction (the style it shares)
            centroid = reference.mean(axis=0)
            values[label] = embeddings @ (centroid / np.linalg.norm(centroid))
    return values


def _clip_score_values(ctx: _Context, key: str) -> dict[str, np.ndarray]:
    definition = "hessel" if key == "clip_score_hessel" else "clip"
    values = {}
    for label in ("A", "B"):
        images = ctx.clip_images(label)
        texts = ctx.clip_texts(len(images))
        values[label] = formulas.clip_score(np.sum(images * texts, axis=1), definition)
    return values


def _lpips_values(ctx: _Context) -> dict[str, np.ndarray]:
    reference, pairs, source = ctx.sets["reference"].images, ctx.pairs, ctx.models["lpips"]
    candidates = {label: [ctx.sets[label].images[i] for i, _ in pairs[label]] for label in ("A", "B")}
    ref_a, ref_b = ([j for _, j in pairs[label]] for label in ("A", "B"))
    if ref_a == ref_b:  # both paired with the same reference images: their backbone pass is shared
        shared = features.lpips_distances_to([candidates["A"], candidates["B"]], [reference[j] for j in ref_a], source)
        return dict(zip(("A", "B"), shared, strict=True))
    return {label: features.lpips_distances_to([candidates[label]], [reference[j] for _, j in pairs[label]], source,
                                               labels=(label,))[0]
            for label in ("A", "B")}


DIVERSITY_ALL_PAIRS_UP_TO = 50  # images per set; larger sets compare each image with this many random others


def _diversity_values(ctx: _Context) -> dict[str, np.ndarray]:
    """Each image's mean LPIPS distance to the other images of its set (their mean: the mean pairwise distance)."""
    values = {}
    for label in ("A", "B"):
        images = ctx.sets[label].images
        pairs = _diversity_pairs(len(images), ctx.seed)
        distances = features.lpips_distances_to([[images[i] for i, _ in pairs]], [images[j] for _, j in pairs],
                                                ctx.models["lpips"], labels=(label,), reference_label=label)[0]
        totals, counts = np.zeros(len(images)), np.zeros(len(images))
        for (i, j), distance in zip(pairs, distances, strict=True):
            totals[[i, j]] += distance
            counts[[i, j]] += 1
        values[label] = totals / np.maximum(counts, 1)
    return values


def _diversity_pairs(count: int, seed: int) -> list[tuple[int, int]]:
    if count <= DIVERSITY_ALL_PAIRS_UP_TO:
        return [(i, j) for i in range(count) for j in range(i + 1, count)]
    rng = np.random.default_rng(seed)
    others = DIVERSITY_ALL_PAIRS_UP_TO - 1
    return sorted({tuple(sorted((i, int(j)))) for i in range(count)
                   for j in rng.choice(np.delete(np.arange(count), i), others, replace=False)})


def _patch_nn_values(ctx: _Context) -> dict[str, np.ndarray]:
    """Each image's patch-NN distance to the reference images' patches, pooled (repeats counted once)."""
    from .patches import patch_nn_distance

    unique = list({np.asarray(image).tobytes() + str(np.asarray(image).shape).encode(): image
                   for image in ctx.sets["reference"].images}.values())
    return {label: np.array([patch_nn_distance(image, unique) for image in ctx.sets[label].images])
            for label in ("A", "B")}


def _pixel_values(ctx: _Context, key: str) -> dict[str, np.ndarray]:
    if key == "lpips":
        return _lpips_values(ctx)
    reference = ctx.sets["reference"].images
    fn = formulas.ssim if key == "ssim" else formulas.psnr
    return {label: np.array([fn(ctx.sets[label].images[i], reference[j]) for i, j in ctx.pairs[label]])
            for label in ("A", "B")}


def _per_image_row(ctx: _Context, key: str, values: dict[str, np.ndarray], model: str = "") -> MetricRow:
    paired = key in PAIRED_PIXEL_METRICS or (key in EMBEDDING_SIMILARITY_METRICS and bool(ctx.pairs.get("A")))
    a, b = values["A"], values["B"]
    if paired:  # align both on the reference images they share
        shared = sorted({j for _, j in ctx.pairs["A"]} & {j for _, j in ctx.pairs["B"]})
        by_ref_a = {j: a[n] for n, (_, j) in enumerate(ctx.pairs["A"])}
        by_ref_b = {j: b[n] for n, (_, j) in enumerate(ctx.pairs["B"])}
        a, b = np.array([by_ref_a[j] for j in shared]), np.array([by_ref_b[j] for j in shared])
    infinite = {"A": int(np.count_nonzero(~np.isfinite(a))), "B": int(np.count_nonzero(~np.isfinite(b)))}
    if paired:  # PSNR of an image identical to its reference is +inf: leave such pairs out of the mean
        finite = np.isfinite(a) & np.isfinite(b)
        kept_a, kept_b = a[finite], b[finite]
    else:
        kept_a, kept_b = a[np.isfinite(a)], b[np.isfinite(b)]
    if infinite["A"] or infinite["B"]:
        ctx.notes.append(_identical_note(key, infinite, (len(a), len(b)), bool(len(kept_a) and len(kept_b))))
    if not len(kept_a) or not len(kept_b):
        return _identical_row(key, a, b, model)
    diff = stats.difference_ci(kept_a, kept_b, paired=paired, n_bootstrap=ctx.n_bootstrap, seed=ctx.seed)
    return _row(key, diff, model=model)


def _identical_note(key: str, infinite: dict[str, int], counts: tuple[int, int], compared: bool) -> str:
    name = formulas.METRIC_INFO[key].name
    parts = [f"{count} of {total} images of {label}" for (label, count), total in zip(infinite.items(), counts,
                                                                                      strict=True) if count]
    what = " and ".join(parts)
    tail = ("they are left out of its mean and interval (paired: with their pair in the other set)" if compared
            else "no pair is left with a finite value on both sides, so it has no interval")
    return (f"{name}: {what} are identical to their reference image ({name} is infinite for an exact copy); "
            f"{tail}.")


def _identical_row(key: str, a: np.ndarray, b: np.ndarray, model: str) -> MetricRow:
    """A row for a metric infinite on every pair of a set (exact copies of the reference): no interval, but the
    plain fact, and the winner when only one set is identical."""
    info = formulas.METRIC_INFO[key]

    def value(values: np.ndarray) -> float | None:
        finite = values[np.isfinite(values)]
        return float(finite.mean()) if len(finite) else float(values[0]) if len(values) else None

    row = _row(key, None, model=model, a=value(a), b=value(b))
    identical = [label for label, values in (("A", a), ("B", b)) if len(values) and not np.isfinite(values).any()]
    if len(identical) == 2:
        row.verdict = f"A and B are both identical to the reference images ({info.name} infinite): no difference."
    elif identical:
        winner, other = identical[0], "B" if identical[0] == "A" else "A"
        row.better = winner
        row.verdict = (f"{winner}'s images are identical to their reference images ({info.name} infinite), so "
                       f"{winner} is closer to the reference than {other}; there is no interval for an exact copy.")
    else:
        row.verdict = (f"No verdict on {info.name}: no pair has a finite value for both A and B (see the "
                       "per-image values).")
    return row


# ------------------------------------------------------------------------------------------ compare
def _needs_reason(key: str, ctx: _Context) -> str | None:
    has_reference = "reference" in ctx.sets
    if key in REFERENCE_METRICS and not has_reference:
        return "needs a reference set of real images"
    if key in PAIRED_PIXEL_METRICS and not (ctx.pairs.get("A") and ctx.pairs.get("B")):
        return "needs pairing (by file name or order) between A, B and the reference"
    if key in ("clip_score", "clip_score_hessel") and not ctx.prompts:
        return "needs prompts"
    if key == "lpips_diversity":
        return _diversity_needs(ctx)
    if key in DISTRIBUTION_METRICS and min(len(image_set) for image_set in ctx.sets.values()) < 2:
        smallest = min(ctx.sets.values(), key=len)
        return f"needs at least 2 images in every set (set {smallest.label} has {len(smallest)})"
    return None


def _diversity_needs(ctx: _Context) -> str | None:
    for label in ("A", "B"):
        images = ctx.sets[label].images
        if len(images) < 2:
            return f"needs at least 2 images in set {label} (it has {len(images)})"
        if len({np.asarray(image).shape[:2] for image in images}) > 1:
            return f"needs images of one size within each set (set {label}'s differ)"
    return None


def _compute(key: str, ctx: _Context, per_image: dict[str, dict[str, np.ndarray]]) -> MetricRow:
    models = ctx.models
    if key == "fid":
        return _reference_set_metric(ctx, key, lambda s: ctx.inception(s)[0],
                                     formulas.frechet_distance_from_features, models["inception"])
    if key == "kid":
        return _reference_set_metric(ctx, key, lambda s: ctx.inception(s)[0], _kid, models["inception"])
    if key == "cmmd":
        return _reference_set_metric(ctx, key, ctx.clip_images, formulas.mmd_rbf, models["clip"])
    if key == "clip_fid":
        return _reference_set_metric(ctx, key, ctx.clip_images, formulas.frechet_distance_from_features,
                                     models["clip"])
    if key == "is":
        return _is_row(ctx)
    if key in ("fid_per_image", "kl_per_image"):
        if "fid_per_image" not in per_image.get("A", {}):
            for label, values in _per_image_inception(ctx).items():
                per_image.setdefault(label, {}).update(values)
        return _per_image_row(ctx, key, {s: per_image[s][key] for s in ("A", "B")}, models["inception"])
    if key in EMBEDDING_SIMILARITY_METRICS:
        values = _similarity_values(ctx.clip_images if key == "clip_i" else ctx.dino_images, ctx)
    elif key in ("clip_score", "clip_score_hessel"):
        values = _clip_score_values(ctx, key)
    elif key == "nima":
        values = {label: ctx.nima(label) for label in ("A", "B")}
    elif key == "lpips_diversity":
        values = _diversity_values(ctx)
    elif key == "patch_nn":
        values = _patch_nn_values(ctx)
    else:
        values = _pixel_values(ctx, key)
    model = models.get(formulas.METRIC_INFO[key].needs or "", "")
    paired = key in PAIRED_PIXEL_METRICS or (key in EMBEDDING_SIMILARITY_METRICS and bool(ctx.pairs.get("A")))
    for label in ("A", "B"):
        per_image.setdefault(label, {})[key] = _aligned(values[label], ctx.pairs[label] if paired else None,
                                                        len(ctx.sets[label]))
    return _per_image_row(ctx, key, values, model)


def _aligned(values: np.ndarray, pairs: list[tuple[int, int]] | None, count: int) -> np.ndarray:
    """Values in the set's image order; values computed per pair go to the pair's image (NaN if unpaired)."""
    if not pairs:
        return values
    aligned = np.full(count, np.nan)
    for n, (i, _) in enumerate(pairs or []):
        aligned[i] = values[n]
    return aligned


def _per_image_table(sets: dict[str, ImageSet], per_image: dict[str, dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    table = []
    for label in ("A", "B"):
        for index, name in enumerate(sets[label].names):
            entry: dict[str, Any] = {"set": label, "image": name}
            for key, values in per_image.get(label, {}).items():
                value = float(values[index])
                entry[key] = None if np.isnan(value) else value
            table.append(entry)
    return table


def compare(set_a, set_b, reference=None, prompts: list[str] | None = None,
            pairs: str | list[tuple[int, int]] | None = None, metrics: list[str] | None = None,
            n_bootstrap: int = 1000, seed: int = 0, *, models: dict[str, str] | None = None,
            allow_folders: bool | None = None, callback: ProgressCallback | None = None) -> ComparisonReport:
    """Compare set A with set B (image paths, zips, "run:ID", folders when allowed, arrays or ImageSets).

    reference: real images (needed by FID, KID, CMMD, CLIP-FID, CLIP-I, per-image FID/KL and, with pairs,
    SSIM/PSNR/LPIPS). pairs: "name" or "order" pairs A and B each with the reference (paired metrics),
    "auto" by name when the names match, or explicit (i, j) index pairs used for both. metrics None: the
    defaults for the inputs (metrics_for: with no reference, the ones that need none); what the defaults chose is
    said in `notes`. Every metric that cannot run is listed in `skipped`.
    """
    sets = {"A": as_image_set(set_a, "A", allow_folders), "B": as_image_set(set_b, "B", allow_folders)}
    if reference is not None:
        sets["reference"] = as_image_set(reference, "reference", allow_folders)
    notes: list[str] = []
    if metrics:
        chosen = list(dict.fromkeys(metrics))
    else:  # the defaults answer: without a reference, the metrics that need none
        chosen, notes = metrics_for("reference" in sets, bool(prompts))
    unknown = [key for key in chosen if key not in formulas.METRIC_INFO]
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; choose from {sorted(formulas.METRIC_INFO)}.")
    if pairs == "auto":
        pairs, pairing_notes = auto_pairs(sets)
        notes += pairing_notes
    pair_map = {}
    if pairs is not None and "reference" in sets:
        pair_map = {label: pair_indices(sets[label], sets["reference"], pairs) for label in ("A", "B")}
    ctx = _Context(sets, {**default_models(), **(models or {})}, list(prompts) if prompts else None, pair_map,
                   int(n_bootstrap), int(seed))
    rows, skipped, per_image = [], {}, {}
    for step, key in enumerate(chosen, start=1):
        if callback is not None:
            callback(step, len(chosen), f"Computing {formulas.METRIC_INFO[key].name}")
        reason = _needs_reason(key, ctx)
        if reason:
            skipped[key] = reason
            continue
        try:
            rows.append(_compute(key, ctx, per_image))
        except ModelLoadError as err:
            skipped[key] = str(err)
    warnings = stats.warnings_for(len(sets["A"]), len(sets["B"]), [row.key for row in rows], ctx.resized,
                                  n_reference=len(sets["reference"]) if "reference" in sets else None)
    warnings += ctx.notes
    warnings += [f"Set {s.label}: skipped {item}" for s in sets.values() for item in s.skipped]
    warnings += [f"Set {s.label}: {s.downscaled} images larger than the limit were downscaled"
                 for s in sets.values() if s.downscaled]
    if ctx.truncated_prompts:
        warnings.append(f"{len(ctx.truncated_prompts)} prompts are longer than CLIP's 77 tokens and were cut.")
    scatter = {label: {"kl": values["kl_per_image"].tolist(), "fid": values["fid_per_image"].tolist()}
               for label, values in per_image.items() if {"kl_per_image", "fid_per_image"} <= set(values)}
    models_used = sorted({row.model for row in rows if row.model})
    return ComparisonReport(rows=rows, per_image=_per_image_table(sets, per_image), warnings=warnings,
                            skipped=skipped, scatter=scatter, sizes={k: len(v) for k, v in sets.items()},
                            models=[{"id": m, "test_model": is_test_model(m)} for m in models_used], notes=notes)
