"""Training settings: the frozen TrainConfig (run params, resume check, CLI flags, History's re-run), its limits
and defaults, and `check` — importable without torch, so the tab can build its controls cheaply."""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pipelines.core.errors import NAME_PATTERN

METHODS = {
    "embedding+lora": "Embedding, then DreamBooth-LoRA (default; paper 000's combination)",
    "embedding": "Embedding only (textual inversion)",
    "lora": "DreamBooth-LoRA",
    "full": "DreamBooth, full UNet (needs a GPU with ≥ 24 GB)",
}
DEFAULT_LR = {"lora": 1e-4, "full": 2e-6, "embedding+lora": 1e-4, "embedding": 5e-4}  # diffusers examples
EMBEDDING_LR = 5e-4
LORA_TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
MAX_STEPS, MAX_RANK, MAX_VECTORS = 20_000, 128, 16
# Smallest intervals between checkpoints and between validation images. A checkpoint of the full UNet is ~3.4 GB
# (fp32) plus its optimizer state, written in seconds, and a validation renders images at `validation_steps` each:
# one per step would multiply a run's time and disk traffic many times over. At every 50 (checkpoints) and every
# 25 steps (validation) they cost a few percent of a run. A short run may go down to 5% of its steps, so a test or
# a 100-step trial can still checkpoint (resume) and preview more than once.
MIN_CHECKPOINT_EVERY, MIN_VALIDATION_EVERY, MIN_INTERVAL_SHARE = 50, 25, 0.05
PRECISIONS = ("auto", "no", "fp16", "bf16")
STATE_FILE = "state.json"
KEEP_CHECKPOINTS = 2
# Settings that change nothing the network learns: a resume may differ in them.
NOT_IN_DIGEST = ("name", "checkpoint_every", "validation_every", "validation_prompt", "validation_seeds",
                 "validation_steps")


# GPU memory presets (SD 1.5 at 512 px, batch 1): settings that bring LoRA training under each size, the usual
# recipe of the diffusers/kohya guides. The full UNet needs ≥ 24 GB whatever the preset.
MEMORY_PRESETS: dict[str, dict[str, Any]] = {
    "8 GB": {"mixed_precision": "fp16", "gradient_checkpointing": True, "adam_8bit": True, "batch_size": 1,
             "train_text_encoder": False},
    "12 GB": {"mixed_precision": "fp16", "gradient_checkpointing": True, "batch_size": 1},
    "16 GB": {"mixed_precision": "fp16", "gradient_checkpointing": False},
    "24 GB or more": {},
}


@dataclass(frozen=True)
class TrainConfig:
    name: str = "my_style"
    model: str = "tiny:sd15"
    method: str = "embedding+lora"
    steps: int = 0  # optimizer steps; 0: sized to the dataset (default_steps)
    embedding_share: float = 0.4  # embedding+lora: the fraction of the steps spent on the embedding
    joint: bool = False  # embedding+lora: train both together in one phase (each at its own rate) instead
    learning_rate: float = 0.0  # LoRA / full UNet; 0: the method's default (DEFAULT_LR)
    embedding_learning_rate: float = EMBEDDING_LR
    rank: int = 8
    alpha: float = 8.0
    train_text_encoder: bool = False  # LoRA on the text encoder too
    vectors: int = 1  # embedding vectors for the trigger word
    initializer: str = "illustration"  # the word whose embedding the new vectors start from
    batch_size: int = 1
    gradient_accumulation: int = 1
    prior_preservation: bool = False
    class_prompt: str = "illustration"
    class_images: int = 0  # 0: as many as there are training images
    prior_weight: float = 1.0
    mixed_precision: str = "auto"  # auto: fp16/bf16 on CUDA, bf16 on CPUs with AVX-512 BF16, else fp32
    gradient_checkpointing: bool = False
    adam_8bit: bool = False  # bitsandbytes' AdamW8bit when installed
    seed: int = 0
    checkpoint_every: int = 0  # 0: every 10% of the steps
    validation_every: int = 0  # 0: only at the end
    validation_prompt: str = ""  # "": "<trigger>, 1girl, solo"
    validation_seeds: tuple[int, ...] = (1, 2)
    validation_steps: int = 20

    def digest(self) -> str:
        data = {key: value for key, value in asdict(self).items() if key not in NOT_IN_DIGEST}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_steps(images: int) -> int:
    """About 100 steps per image (the common DreamBooth rule of thumb), 400–3000."""
    return int(min(3000, max(400, 100 * images)))


def resolved(config: TrainConfig, images: int) -> TrainConfig:
    """The config with its automatic values filled in (steps, learning rate, class images, intervals)."""
    steps = int(config.steps) or default_steps(images)
    return replace(config, steps=steps, learning_rate=float(config.learning_rate) or DEFAULT_LR[config.method],
                   class_images=int(config.class_images) or images,
                   checkpoint_every=int(config.checkpoint_every) or max(1, steps // 10),
                   validation_seeds=tuple(int(seed) for seed in config.validation_seeds))


def embedding_steps(config: TrainConfig) -> int:
    if config.method == "embedding":
        return config.steps
    if config.method == "embedding+lora":
        if config.joint:
            return config.steps
        return max(1, min(config.steps - 1, round(config.steps * float(config.embedding_share))))
    return 0


def phase_at(config: TrainConfig, step: int) -> str:
    """What optimizer step `step` (0-based) trains: "embedding", "lora", "full", or "joint" (embedding and LoRA
    together: embedding+lora with `joint`)."""
    if config.method == "embedding+lora" and config.joint:
        return "joint"
    if step < embedding_steps(config):
        return "embedding"
    return "full" if config.method == "full" else "lora"


def check(config: TrainConfig, images: int = 3) -> list[str]:
    """Plain messages for every problem; empty when the config can run. Loads nothing."""
    problems = []
    if config.method not in METHODS:
        problems.append(f"Unknown method {config.method!r}; choose one of {', '.join(METHODS)}.")
    if not re.fullmatch(NAME_PATTERN, str(config.name)):
        problems.append("The name must be 1–60 letters, digits, - or _ (it names the output files).")
    if not 0 <= int(config.steps) <= MAX_STEPS:
        problems.append(f"Steps must be between 1 and {MAX_STEPS} (0 = sized to the dataset), got {config.steps}.")
    for label, value in (("Learning rate", config.learning_rate),
                         ("Embedding learning rate", config.embedding_learning_rate)):
        if not (value == 0 and label == "Learning rate") and not 1e-7 <= float(value) <= 1e-2:
            problems.append(f"{label} must be between 1e-7 and 1e-2, got {value:g}.")
    if not 1 <= int(config.rank) <= MAX_RANK:
        problems.append(f"LoRA rank must be between 1 and {MAX_RANK}, got {config.rank}.")
    if not 0 < float(config.alpha) <= 4 * MAX_RANK:
        problems.append(f"LoRA alpha must be above 0 and at most {4 * MAX_RANK}, got {config.alpha}.")
    if not 1 <= int(config.vectors) <= MAX_VECTORS:
        problems.append(f"Embedding vectors must be between 1 and {MAX_VECTORS}, got {config.vectors}.")
    if config.joint and config.method != "embedding+lora":
        problems.append("Joint training is an option of 'Embedding, then DreamBooth-LoRA' only.")
    if not 0.05 <= float(config.embedding_share) <= 0.95:
        problems.append("The embedding phase must be 5–95% of the steps.")
    if not 1 <= int(config.batch_size) <= 16 or not 1 <= int(config.gradient_accumulation) <= 64:
        problems.append("Batch size must be 1–16 and gradient accumulation 1–64.")
    if config.mixed_precision not in PRECISIONS:
        problems.append(f"Mixed precision must be one of {', '.join(PRECISIONS)}.")
    if config.prior_preservation and not str(config.class_prompt).strip():
        problems.append("Prior preservation needs a class prompt (what the images show in general, e.g. "
                        "'illustration').")
    if not 0 <= int(config.class_images) <= 1000 or not 0 <= float(config.prior_weight) <= 10:
        problems.append("Class images must be 0–1000 and the prior weight 0–10.")
    if not str(config.initializer).strip():
        problems.append("Give an initializer word for the embedding (e.g. 'illustration').")
    if not 1 <= len(config.validation_seeds) <= 8 or not 1 <= int(config.validation_steps) <= 150:
        problems.append("Give 1–8 validation seeds and 1–150 validation sampling steps.")
    steps = int(config.steps) or default_steps(images)
    for label, value, floor, zero in (
            ("Checkpoint every", config.checkpoint_every, MIN_CHECKPOINT_EVERY, "every 10% of the steps"),
            ("Validation every", config.validation_every, MIN_VALIDATION_EVERY, "only at the end")):
        least = smallest_interval(floor, steps)
        if int(value) != 0 and not least <= int(value) <= MAX_STEPS:
            problems.append(f"{label} must be 0 ({zero}) or {least}–{MAX_STEPS} steps for a {steps}-step run, got "
                            f"{value}: more often would spend more time writing checkpoints and rendering than "
                            "training.")
    return problems


def smallest_interval(floor: int, steps: int) -> int:
    """The smallest checkpoint or validation interval for a run of `steps` steps: `floor`, or 5% of a short run."""
    return max(1, min(floor, math.ceil(steps * MIN_INTERVAL_SHARE)))


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    values = {key: value for key, value in data.items() if key in known}
    if "validation_seeds" in values:
        values["validation_seeds"] = tuple(values["validation_seeds"])
    return TrainConfig(**values)
