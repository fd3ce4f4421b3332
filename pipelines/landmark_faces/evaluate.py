"""How well a landmark U-Net's faces follow the landmarks asked for, on held-out synthetic faces.

The landmark error of a generated face is synthetic.landmark_error: its parts (eyes, mouth, face sides, chin)
read back by colour from the image, against where the requested landmarks put them, in image widths. The same
figure is given for the untrained network of the same shape (the floor the training must beat), for the model
with its landmarks withheld (text/tags only), and for the real synthetic drawings (the read-back's own error).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import synthetic
from .generate import sample
from .train import TrainConfig
from .unet import LandmarkUNet, build

HELD_OUT_SEED = 1_000_003  # far from any training seed: these faces were never trained on


def held_out_faces(config: TrainConfig, count: int) -> list[synthetic.SyntheticFace]:
    fixed = {key: value for key, value in (("hair", config.synthetic_hair), ("eyes", config.synthetic_eyes))
             if value}
    return synthetic.make_faces(count, config.image_size, seed=HELD_OUT_SEED, **fixed)


def sample_errors(model: LandmarkUNet, faces: list[synthetic.SyntheticFace], *, steps: int = 50,
                  guidance: float = 2.0, seed: int = 0, use_landmarks: bool = True) -> tuple[list[float], list[Any]]:
    output = sample(model, np.stack([f.points for f in faces]), [list(f.tags) for f in faces], steps=steps,
                    guidance=guidance, seed=seed, count=len(faces), use_landmarks=use_landmarks)
    errors = [synthetic.landmark_error(np.asarray(image), f.points, f.hair, f.eyes)
              for image, f in zip(output.images, faces, strict=True)]
    return errors, output.images


def landmark_error_report(model: LandmarkUNet, config: TrainConfig, *, faces: int = 32, steps: int = 50,
                          guidance: float = 2.0) -> dict[str, Any]:
    held_out = held_out_faces(config, faces)
    trained, _ = sample_errors(model, held_out, steps=steps, guidance=guidance)
    untrained_model = build(model.config, seed=config.seed)
    untrained_model.train_config = getattr(model, "train_config", None)
    untrained, _ = sample_errors(untrained_model, held_out, steps=steps, guidance=guidance)
    text_only, _ = sample_errors(model, held_out, steps=steps, guidance=guidance, use_landmarks=False)
    drawings = [synthetic.landmark_error(f.image, f.points, f.hair, f.eyes) for f in held_out]
    mean = lambda values: round(float(np.mean(values)), 4)  # noqa: E731
    return {"faces": faces, "sampling_steps": steps, "guidance": guidance,
            "landmark_error_trained": mean(trained), "landmark_error_untrained": mean(untrained),
            "landmark_error_tags_only": mean(text_only), "landmark_error_real_drawings": mean(drawings),
            "reduction_vs_untrained": round(1 - float(np.mean(trained)) / float(np.mean(untrained)), 4),
            "unit": "mean distance in image widths between parts read back by colour and the requested landmarks"}
