"""Metrics / A-B: trustworthy image-quality comparisons (FID, KID, IS, CMMD, CLIP score, SSIM, PSNR, LPIPS…).

    from pipelines.metrics import compare
    report = compare("a.zip", "b.zip", reference="real/", pairs="name", metrics=["fid", "kid", "ssim"])
    for row in report.rows: print(row.name, row.a, row.b, row.low, row.high, row.verdict)

Also `python -m pipelines.metrics A_DIR B_DIR --ref DIR --metrics fid,kid,ssim --json out.json`.
Importing this package is cheap; numpy, scipy and torch load on first use.
"""

from __future__ import annotations

from pipelines.core.loader import register_architecture
from pipelines.core.methods import MethodCard, Reference, lazy, lazy_exports
from pipelines.core.runs import register_rerunner
from pipelines.core.tiny_models import TinySpec, register_tiny

TAB = "Metrics / A-B"
# Architectures this package's networks name in their safetensors metadata (registered at the end of this file).
FID_INCEPTION_ARCHITECTURE = "fid_inception_v3"
LPIPS_ARCHITECTURE = "lpips"
NIMA_ARCHITECTURE = "nima"

# Public names and the submodule that defines each (loaded on first use, so the app starts fast).
_EXPORTS = {
    "compare": "comparison", "default_metrics": "comparison", "DEFAULT_MODELS": "comparison",
    "ComparisonReport": "report", "MetricRow": "report",
    "ImageSet": "imagesets", "load_image_set": "imagesets",
    "frechet_distance": "formulas", "kernel_inception_distance": "formulas", "inception_score": "formulas",
    "ssim": "formulas", "psnr": "formulas", "per_image_fid": "formulas", "per_image_kl": "formulas",
    "clip_score": "formulas", "mmd_rbf": "formulas", "METRIC_INFO": "formulas",
    "bootstrap_ci": "stats", "difference_ci": "stats", "verdict": "stats",
    "run_compare": "runs",
    "preference_result": "preference", "PreferenceResult": "preference", "Vote": "preference",
    "JudgingStore": "judging", "run_create_study": "judging", "export_study": "judging",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


METHOD_CARD = MethodCard(
    name="Image-quality metrics and A/B comparison",
    tab=TAB,
    summary=(
        "How do you know one method's anime images are better than another's? Every source document judges its "
        "method with image metrics: distribution distances to real images (FID, KID, CMMD), how recognisable "
        "and varied images are (IS), how well images match their prompts (CLIP score), and, for paired images, "
        "how close each is to its ground truth (SSIM, PSNR, LPIPS). This tab computes them the careful way — "
        "clean resizing, stable matrix square roots, the right input ranges — and says, with 95% confidence "
        "intervals, whether a difference is real or noise."
    ),
    inputs="two sets of images (A and B), optionally real reference images, prompts and a pairing",
    model="feature networks: FID Inception v3 (FID, KID, IS, per-image FID/KL), CLIP (CMMD, CLIP score, CLIP-I), "
          "DINOv2 (DINO-I), LPIPS (AlexNet); none for SSIM/PSNR",
    output="a table with A, B, the difference and its 95% interval, a verdict in plain words, charts, the "
           "per-image table, seed 000's FID–KL scatter, CSV and JSON; or, judged by eye and blind, B's win rate "
           "with a verdict from one two-way cluster-robust test over judges and pairs, for the study's owner",
    good_at=(
        "telling a real improvement from noise: bootstrap intervals and verdicts only when they exclude 0",
        "sharing features between metrics and comparisons (computed once per set and network)",
        "catching common mistakes: wrong LPIPS input range, bicubic resizing, FID on too few images",
        "answering on its defaults: no reference runs the metrics that need none; matching file names pair",
    ),
    bad_at=(
        "FID needs thousands of images to be unbiased; on small sets prefer KID or CMMD",
        "no metric equals human judgement of anime style; CLIP and Inception were trained on photos",
        "per-image FID and KL (seed 000) are defined here by choice; the paper leaves them open",
    ),
    references=(
        Reference("Heusel et al., GANs Trained by a Two Time-Scale Update Rule (FID), 2017",
                  "https://arxiv.org/abs/1706.08500"),
        Reference("Bińkowski et al., Demystifying MMD GANs (KID), 2018", "https://arxiv.org/abs/1801.01401"),
        Reference("Parmar et al., On Aliased Resizing and Surprising Subtleties in GAN Evaluation (clean-fid), 2022",
                  "https://github.com/GaParmar/clean-fid"),
        Reference("Jayasumana et al., Rethinking FID: Towards a Better Evaluation Metric (CMMD), 2024",
                  "https://arxiv.org/abs/2401.09603"),
        Reference("Hessel et al., CLIPScore, 2021", "https://arxiv.org/abs/2104.08718"),
        Reference("Zhang et al., The Unreasonable Effectiveness of Deep Features as a Perceptual Metric (LPIPS), 2018",
                  "https://arxiv.org/abs/1801.03924"),
        Reference("pytorch-fid", "https://github.com/mseitzer/pytorch-fid"),
        Reference("torchmetrics image metrics", "https://lightning.ai/docs/torchmetrics/stable/"),
    ),
    seed_document="000, 003, 004",
)


# ---------------------------------------------------------------------------------------------- registrations
# What this method adds to the core's registries (the modules named here import torch: they load on first use).
register_architecture(FID_INCEPTION_ARCHITECTURE, lazy(f"{__name__}.fid_inception", "make_fid_inception"))
register_architecture(LPIPS_ARCHITECTURE, lazy(f"{__name__}.features", "make_lpips"))
register_architecture(NIMA_ARCHITECTURE, lazy(f"{__name__}.nima", "make_nima"))
register_tiny(TinySpec("lpips", "torch_module", "LPIPS (AlexNet)", 1, lazy(f"{__name__}.features", "build_tiny_lpips")))
register_tiny(TinySpec("dino", "transformers", "DINOv2", 1, lazy(f"{__name__}.features", "build_tiny_dino"),
                       {"class_name": "Dinov2Model"}))
register_tiny(TinySpec("nima", "torch_module", "NIMA aesthetic model", 1, lazy(f"{__name__}.nima", "build_tiny_nima")))
register_rerunner(TAB, lazy(f"{__name__}.judging", "rerun_metrics_run"))  # comparisons; a judging says why not
