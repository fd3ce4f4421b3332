"""Style fine-tuning (seed 000): teach an SD 1.5 anime checkpoint an art style through a trigger word, with a
textual-inversion embedding, DreamBooth (LoRA or the full UNet) or seed 000's combination (embedding, then LoRA),
and judge the result against the base model on the same seeds.

    from pipelines.style_finetune import TrainConfig, build_dataset, train, CompareRequest, compare_base_tuned
    dataset = build_dataset(["my_images.zip"], trigger="arkstyle", resolution=512, caption_model=None)
    result = train(TrainConfig(name="ark", model="models/anything-v5", method="embedding+lora"), dataset)
    ab = compare_base_tuned(CompareRequest(tuned="ark", prompt="arkstyle, 1girl, smile", count=4))

Stages: `data.py` (images, checks, crops, captions), `train.py` (one loop, four methods, resumable job),
`apply.py` (exports for diffusers and A1111/kohya, base-vs-tuned generation through the diffusion core),
`evaluate.py` (the seed's experiment through pipelines.metrics.compare), `runs.py` (History), `__main__.py` (CLI).
Importing this package is cheap: torch and diffusers load on first use.
"""

from __future__ import annotations

from pipelines.core.methods import MethodCard, Reference, lazy, lazy_exports
from pipelines.core.runs import register_rerunner

TAB = "Style fine-tuning"

_EXPORTS = {
    "Dataset": "data", "build_dataset": "data", "save_dataset": "data", "load_dataset": "data",
    "TrainConfig": "config", "TrainResult": "train", "train": "train", "METHODS": "config", "read_state": "train",
    "CompareRequest": "apply", "CompareOutput": "apply", "compare_base_tuned": "apply", "list_tuned": "apply",
    "load_tuned": "apply", "evaluate": "evaluate", "EvaluateRequest": "evaluate", "run_train": "runs",
}

__getattr__ = lazy_exports(__name__, _EXPORTS)

METHOD_CARD = MethodCard(
    name="Style fine-tuning: DreamBooth, textual-inversion embeddings and both combined",
    tab=TAB,
    summary=(
        "Seed 000 teaches a Stable Diffusion anime checkpoint the art style of a game through a trigger word, "
        "combining DreamBooth with a textual-inversion embedding, and judges the result with FID and a per-image "
        "KL/FID scatter against the real images. The paper gives no recipe; this tab fixes one from the diffusers "
        "training examples: the trigger word's embedding is trained first (only its new rows of the embedding "
        "matrix change), then a LoRA on the UNet's attention with the embedding frozen (or both jointly). Embedding "
        "only, LoRA only and the full UNet are switches of the same loop, which also runs on several GPUs under "
        "`accelerate launch`. Base and tuned images are drawn on the same seeds, with a 4-step LCM-LoRA preview "
        "for CPUs."
    ),
    inputs="3–200 images of one style (files or a zip), a trigger word, optional BLIP captions you can edit",
    model="an SD 1.5-family checkpoint; trains an embedding (new token rows), a LoRA (peft) or the whole UNet",
    output=("a LoRA (diffusers and A1111/kohya files), an embedding (diffusers and A1111 files) or a tuned model "
            "folder; base-vs-tuned grids; an evaluation with intervals and a verdict"),
    good_at=("a consistent style from a few dozen images, called by one word",
             "small files: an embedding is a few KB, a LoRA a few MB, both load in A1111/ComfyUI",
             "resuming: a stopped training continues exactly where it was"),
    bad_at=("slow without a GPU (the CPU path exists for tests and tiny models)",
            "overfitting with few images (the seed reports it too): watch the validation images",
            "full UNet fine-tuning needs a GPU with ≥ 24 GB",
            "SD 1.5-family models only: SDXL is not supported"),
    references=(Reference("DreamBooth (Ruiz et al. 2022)", "https://arxiv.org/abs/2208.12242"),
                Reference("Textual inversion (Gal et al. 2022)", "https://arxiv.org/abs/2208.01618"),
                Reference("LoRA (Hu et al. 2021)", "https://arxiv.org/abs/2106.09685"),
                Reference("diffusers training examples", "https://github.com/huggingface/diffusers/tree/main/examples")),
    seed_document="000",
)



def unavailable_models() -> list[tuple[str, str]]:
    """For the app's status banner (no network call): nothing real to fine-tune when no SD 1.5 checkpoint is on
    this machine and the Hub is known to be unreachable."""
    from pipelines.core.network import known_offline
    from pipelines.diffusion.models import local_checkpoints

    status = known_offline()
    if local_checkpoints() or status is None or not status.offline:
        return []
    return [("Style fine-tuning base models", f"no SD 1.5 checkpoint in models/ and {status.reason}; only the "
             "tiny test model can be trained (its output is noise)")]


register_rerunner(TAB, lazy(f"{__name__}.runs", "rerun_any"))
