"""One training loop for the four methods, as a resumable job.

    result = train(TrainConfig(name="ark", model="tiny:sd15", method="embedding+lora", steps=40), dataset)

Methods (switches in one loop, after diffusers' examples `textual_inversion`, `dreambooth/train_dreambooth_lora`
and `dreambooth/train_dreambooth`):
- "embedding": textual inversion. The trigger word becomes `vectors` new tokens whose rows of the token-embedding
  matrix start at the initializer word's row; the whole matrix gets gradients and after every optimizer step every
  other row is put back (as the diffusers example does), so only the new rows change.
- "lora": DreamBooth-LoRA, peft adapters on the UNet's attention projections (optionally the text encoder's).
- "full": the whole UNet (diffusers' full DreamBooth; needs a ≥ 24 GB GPU for SD 1.5).
- "embedding+lora" (default, seed 000's combination): phase 1 trains the embedding, phase 2 the LoRA with the
  embedding frozen. The LoRA is attached from the start: its up matrices are zero, so in phase 1 it changes nothing.
  With `joint`, one phase trains both, each at its own learning rate (two AdamW parameter groups).

Exact resume without pickled RNG states: every random draw of optimizer step s (batch, VAE sample, noise,
timesteps) comes from a CPU generator seeded with (seed, s, micro-step); a checkpoint holds the trained tensors
(adapter.safetensors), the optimizer and LR-scheduler states (our own .pt files, read with weights_only=True).
Layout (DESIGN.md): outputs/training/<name>/checkpoints/step-0000500/… and state.json, written last, atomically;
the newest two checkpoints are kept. Cancel or an exhausted time budget writes a checkpoint first.

The training copies of the UNet and text encoder are private deep copies: the cached pipeline that generation
shares is never changed. accelerate's Accelerator is not used in-process: its state is a process-wide singleton, so
two jobs with different precisions could not run in one server; autocast and gradient accumulation are a few
plain lines here (fp16 on CUDA gets a GradScaler).

Several GPUs: the CLI under `accelerate launch --multi_gpu --num_processes N -m pipelines.style_finetune train …`
(or torchrun). Each process joins the group through accelerate's PartialState, draws its own batch — process r's
micro-step m uses the generator of global micro-step r·accumulation + m — and the gradients are averaged before
every optimizer step, so N processes with accumulation k train exactly as one process with accumulation N·k.
Process 0 alone writes checkpoints, validation images, exports and the run record.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pipelines.core import devices, settings
from pipelines.core.errors import TrainingDiverged, UserError, checked_name
from pipelines.core.jobs import (
    CancelToken,
    JobCancelled,
    ProgressCallback,
    atomic_path,
    discard_checkpoints,
    read_step_state,
    write_step_checkpoint,
)
from pipelines.core.safeweights import load_safetensors, save_safetensors

from .config import (  # noqa: F401 - re-exported: train is where callers look for them
    DEFAULT_LR,
    EMBEDDING_LR,
    KEEP_CHECKPOINTS,
    LORA_TARGETS,
    MAX_RANK,
    MAX_STEPS,
    MAX_VECTORS,
    MEMORY_PRESETS,
    METHODS,
    NOT_IN_DIGEST,
    PRECISIONS,
    STATE_FILE,
    TEXT_LORA_TARGETS,
    TrainConfig,
    check,
    config_from_dict,
    default_steps,
    embedding_steps,
    phase_at,
    resolved,
)
from .data import Dataset

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    name: str
    method: str
    steps: int  # steps done (== config.steps when finished)
    total_steps: int
    losses: list[float]  # one per optimizer step, including those before a resume
    resumed_from: int
    finished: bool  # False: stopped by the time budget (a checkpoint holds the progress)
    seconds: float
    folder: Path  # outputs/training/<name>
    files: dict[str, Path] = field(default_factory=dict)  # exported files (see apply.export)
    validation: list[tuple[int, list[Path]]] = field(default_factory=list)  # (step, images at the fixed seeds)
    notes: list[str] = field(default_factory=list)
    test_model: bool = False

    @property
    def summary(self) -> str:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (float("nan"), float("nan"))
        state = "finished" if self.finished else "paused (time budget); press Train again to continue"
        text = (f"**{self.name}** ({METHODS[self.method]}): {self.steps}/{self.total_steps} steps, {state}, "
                f"{self.seconds:.0f} s" + (f", resumed from step {self.resumed_from}" if self.resumed_from else "")
                + f"; loss {first:.4g} → {last:.4g} (noisy: each step sees a random noise level).")
        return "\n\n".join([text, *self.notes])


def training_folder(name: str) -> Path:
    return settings.outputs_dir() / "training" / checked_name(name, "The training's name")


# ---------------------------------------------------------------------------------------------- processes
MAX_GLOBAL_MICRO_STEPS = 64  # step_generator keeps 64 micro-step streams per optimizer step


@dataclass(frozen=True)
class Processes:
    """This process's place in a launched multi-process run; on its own it is process 0 of 1."""

    rank: int = 0
    count: int = 1
    state: Any = None  # accelerate's PartialState when launched

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def main_first(self) -> Any:
        return self.state.main_process_first() if self.state is not None else nullcontext()

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.count == 1:
            return tensor
        from accelerate.utils import reduce

        return reduce(tensor, reduction="mean")

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on one (a stop must be taken together, or the others hang)."""
        if self.count == 1:
            return flag
        return bool(self.mean(torch.tensor([float(flag)], device=self.state.device)).item() > 0)


def launched_processes() -> Processes:
    """Process 0 of 1, unless a launcher (accelerate launch, torchrun) started several: then accelerate's
    PartialState joins the process group (NCCL on GPUs, gloo on CPUs) and this process's GPU becomes the device
    the core loader puts the models on."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.device.type == "cuda":
        os.environ["ASL_DEVICE"] = str(state.device)
    return Processes(state.process_index, state.num_processes, state)


# ---------------------------------------------------------------------------------------------- models
@dataclass
class TrainingModels:
    """The private training copies, and what the embedding phase needs to know."""

    unet: Any
    text_encoder: Any
    tokenizer: Any
    vae: Any  # shared with the cached pipeline; only read, under no_grad
    noise_scheduler: Any
    pipe: Any  # the cached base pipeline (for validation images' scheduler config and the test-model flag)
    device: Any
    new_ids: list[int] = field(default_factory=list)
    placeholder: str = ""  # what the trigger word is replaced with in captions ("<t_0> <t_1>")
    original_embeddings: Any = None  # the matrix before training; rows outside new_ids are restored from it
    unet_dtype: Any = None  # read once: ModelMixin.dtype walks every parameter on each access
    processes: Processes = field(default_factory=Processes)


def load_models(config: TrainConfig, trigger: str, notes: list[str],
                processes: Processes | None = None) -> TrainingModels:
    from diffusers import DDPMScheduler

    from pipelines.diffusion.generate import call_lock
    from pipelines.diffusion.models import base_of, load_pipeline

    processes = processes or Processes()
    if processes.count * int(config.gradient_accumulation) > MAX_GLOBAL_MICRO_STEPS:
        raise UserError(f"Processes × gradient accumulation must be at most {MAX_GLOBAL_MICRO_STEPS}, got "
                        f"{processes.count} × {config.gradient_accumulation}.")
    pipe = load_pipeline(config.model)
    if base_of(pipe) != "sd15":
        raise UserError("Fine-tuning runs on SD 1.5-family models for now; SDXL is not supported yet.")
    with call_lock(pipe):  # a generation may have LoRAs on the shared modules; copy them without
        unet, text_encoder = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
        tokenizer = copy.deepcopy(pipe.tokenizer)
    device = pipe.device
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    text_encoder.to(dtype=torch.float32)  # small; trained rows and LoRA stay in fp32
    if config.method == "full":
        unet.to(dtype=torch.float32)
    models = TrainingModels(unet, text_encoder, tokenizer, pipe.vae, DDPMScheduler.from_config(pipe.scheduler.config),
                            pipe, device, unet_dtype=unet.dtype, processes=processes)
    if f"{trigger.lower()}</w>" in tokenizer.get_vocab():
        notes.append(f"'{trigger}' is already a word the base model knows; a rare made-up word (e.g. "
                     f"'{trigger}style_x') keeps the style from mixing with that meaning.")
    if embedding_steps(config):
        _add_trigger_tokens(models, config, trigger)
    if config.method in ("lora", "embedding+lora"):
        _add_lora(models, config)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return models


def _add_trigger_tokens(models: TrainingModels, config: TrainConfig, trigger: str) -> None:
    """New tokens for the trigger word, their rows started from the initializer word (diffusers' example)."""
    tokens = [f"<{trigger}_{index}>" for index in range(int(config.vectors))]
    models.tokenizer.add_tokens(tokens)
    init_ids = models.tokenizer.encode(config.initializer, add_special_tokens=False)
    if not init_ids:
        raise UserError(f"The initializer word {config.initializer!r} gives no tokens; choose an ordinary word.")
    models.new_ids = models.tokenizer.convert_tokens_to_ids(tokens)
    models.text_encoder.resize_token_embeddings(len(models.tokenizer), mean_resizing=False)
    weight = models.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[models.new_ids] = weight[init_ids[0]].clone()
    models.original_embeddings = weight.detach().clone()
    models.placeholder = " ".join(tokens)


def _add_lora(models: TrainingModels, config: TrainConfig) -> None:
    from peft import LoraConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(config.seed))  # the down matrices' random start, the same on every run
        models.unet.add_adapter(LoraConfig(r=int(config.rank), lora_alpha=float(config.alpha),
                                           init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)))
        if config.train_text_encoder:
            models.text_encoder.add_adapter(LoraConfig(r=int(config.rank), lora_alpha=float(config.alpha),
                                                       init_lora_weights="gaussian",
                                                       target_modules=list(TEXT_LORA_TARGETS)))
    for module in (models.unet, models.text_encoder):
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()


def trainable_parameters(models: TrainingModels, phase: str) -> list[torch.nn.Parameter]:
    """Sets requires_grad for `phase` and returns the parameters the optimizer steps ("joint": the embedding
    matrix first, then the LoRA weights)."""
    models.unet.requires_grad_(False)
    models.text_encoder.requires_grad_(False)
    if phase == "full":
        models.unet.requires_grad_(True)
        return list(models.unet.parameters())
    params = []
    if phase in ("embedding", "joint"):
        params.append(models.text_encoder.get_input_embeddings().weight)
    if phase in ("lora", "joint"):
        params += [param for module in (models.unet, models.text_encoder)
                   for name, param in module.named_parameters() if "lora_" in name]
    for param in params:
        param.requires_grad_(True)
    return params


# ---------------------------------------------------------------------------------------------- data on device
@dataclass
class EncodedImages:
    """Each image's VAE posterior (mean, std), encoded once; a step samples from it with its own generator."""

    mean: torch.Tensor
    std: torch.Tensor
    input_ids: torch.Tensor


@torch.no_grad()
def encode_images(models: TrainingModels, images: Sequence[Any], captions: Sequence[str]) -> EncodedImages:
    import numpy as np

    vae = models.vae
    means, stds = [], []
    for image in images:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
        pixels = pixels.permute(2, 0, 1).unsqueeze(0).to(models.device, vae.dtype)
        dist = vae.encode(pixels).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    ids = models.tokenizer(list(captions), padding="max_length", truncation=True,
                           max_length=models.tokenizer.model_max_length, return_tensors="pt").input_ids
    return EncodedImages(torch.cat(means), torch.cat(stds), ids)


def _caption_text(caption: str, trigger: str, placeholder: str) -> str:
    if not placeholder:
        return caption
    return re.sub(rf"(?<![A-Za-z0-9_]){re.escape(trigger)}(?![A-Za-z0-9_])", placeholder, caption)


def step_generator(seed: int, step: int, micro: int = 0) -> torch.Generator:
    """The generator of optimizer step `step` (its micro-step `micro`): resuming repeats every draw."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step)) * 64 + int(micro))


def _batch_indices(generator: torch.Generator, count: int, batch_size: int) -> torch.Tensor:
    return torch.randint(0, count, (batch_size,), generator=generator)


def denoising_loss(models: TrainingModels, data: EncodedImages, indices: torch.Tensor, generator: torch.Generator,
                   autocast: Any = nullcontext) -> torch.Tensor:
    """The DreamBooth/textual-inversion objective on the images `indices`: sample the VAE posterior, add noise at
    a random timestep, predict the noise (or v) — per-image MSE, shape [len(indices)]."""
    scale = float(models.vae.config.scaling_factor)
    mean, std = data.mean[indices], data.std[indices]
    latents = (mean + std * torch.randn(mean.shape, generator=generator)) * scale
    noise = torch.randn(latents.shape, generator=generator)
    steps = models.noise_scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (len(indices),), generator=generator)
    noisy = models.noise_scheduler.add_noise(latents, noise, timesteps)
    if models.noise_scheduler.config.prediction_type == "v_prediction":
        target = models.noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    device, dtype = models.device, models.unet_dtype
    with autocast():
        hidden = models.text_encoder(data.input_ids[indices].to(device))[0]
        prediction = models.unet(noisy.to(device, dtype), timesteps.to(device), hidden.to(dtype)).sample
    error = F.mse_loss(prediction.float(), target.to(device).float(), reduction="none")
    return error.mean(dim=(1, 2, 3))


# ---------------------------------------------------------------------------------------------- precision
def autocast_for(device: Any, mixed_precision: str) -> tuple[Callable[[], Any], str]:
    """(autocast context factory, the precision used). "auto" picks bf16 on GPUs that compute it natively (compute
    capability ≥ 8.0), fp16 on older ones (a T4), and bf16 on CPUs
    whose AVX-512 has BF16 instructions (autocast on other CPUs emulates it slowly); otherwise fp32."""
    kind = getattr(device, "type", str(device))
    choice = mixed_precision
    if choice == "auto":
        choice = "bf16" if devices.bf16_supported(device) else ("fp16" if kind == "cuda" else "no")
    if choice == "no":
        return nullcontext, "fp32"
    dtype = torch.bfloat16 if choice == "bf16" else torch.float16
    return (lambda: torch.autocast(kind, dtype=dtype)), choice


def _optimizer(groups: list[dict[str, Any]], adam_8bit: bool, notes: list[str]) -> Any:
    """AdamW (or bitsandbytes' 8-bit AdamW) over parameter groups, each with its own "lr"."""
    settings = {"lr": groups[0]["lr"], "betas": (0.9, 0.999), "weight_decay": 1e-2, "eps": 1e-8}
    if adam_8bit:
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(groups, **settings)
        except ImportError:
            note = "8-bit Adam needs bitsandbytes, which is not installed; plain AdamW is used."
            if note not in notes:
                notes.append(note)
    return torch.optim.AdamW(groups, **settings)


# ---------------------------------------------------------------------------------------------- checkpoints
def trained_tensors(models: TrainingModels, config: TrainConfig) -> dict[str, torch.Tensor]:
    """What a checkpoint (and the exports) hold: the new embedding rows, the LoRA weights or the whole UNet."""
    from peft.utils import get_peft_model_state_dict

    tensors: dict[str, torch.Tensor] = {}
    if models.new_ids:
        weight = models.text_encoder.get_input_embeddings().weight
        tensors["embedding"] = weight[models.new_ids].detach().float().cpu().clone()
    if config.method in ("lora", "embedding+lora"):
        tensors.update({f"unet.{k}": v.detach().cpu().clone()
                        for k, v in get_peft_model_state_dict(models.unet).items()})
        if config.train_text_encoder:
            tensors.update({f"text_encoder.{k}": v.detach().cpu().clone()
                            for k, v in get_peft_model_state_dict(models.text_encoder).items()})
    if config.method == "full":
        tensors.update({f"unet_full.{k}": v.detach().cpu().clone() for k, v in models.unet.state_dict().items()})
    return tensors


def _restore_tensors(models: TrainingModels, tensors: dict[str, torch.Tensor]) -> None:
    from peft.utils import set_peft_model_state_dict

    if "embedding" in tensors:
        with torch.no_grad():
            models.text_encoder.get_input_embeddings().weight[models.new_ids] = tensors["embedding"].to(models.device)
    for prefix, module in (("unet.", models.unet), ("text_encoder.", models.text_encoder)):
        part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if part:
            set_peft_model_state_dict(module, part)
    full = {k.removeprefix("unet_full."): v for k, v in tensors.items() if k.startswith("unet_full.")}
    if full:
        models.unet.load_state_dict(full)


@dataclass
class TrainingJob:
    """One run's moving parts: what the optimizer steps, and the history written into state.json."""

    phase: str
    optimizer: Any
    lr_scheduler: Any
    scaler: Any
    losses: list[float]
    validation: list[tuple[int, list[str]]]


def _write_checkpoint(folder: Path, step: int, models: TrainingModels, config: TrainConfig, job: TrainingJob,
                      data_digest: str) -> None:
    """step-NNNNNNN/ is built in a temporary folder and renamed into place, then state.json (atomically), then
    older step folders beyond the newest KEEP_CHECKPOINTS are removed. Process 0 writes; the others wait for it."""
    if not models.processes.main:
        models.processes.wait()
        return
    def write(files: Path) -> None:
        save_safetensors(trained_tensors(models, config), files / "adapter.safetensors",
                         {"step": str(step), "method": config.method, "phase": job.phase})
        torch.save({"step": step, "phase": job.phase, "optimizer": job.optimizer.state_dict(),
                    "scaler": job.scaler.state_dict() if job.scaler is not None else None}, files / "optimizer.pt")
        torch.save(job.lr_scheduler.state_dict(), files / "lr_scheduler.pt")

    state = {"config_digest": config.digest(), "data_digest": data_digest, "method": config.method,
             "total_steps": config.steps, "losses": job.losses[:step], "validation": job.validation,
             "config": asdict(config)}
    write_step_checkpoint(folder / "checkpoints", step, write, state, keep=KEEP_CHECKPOINTS)
    models.processes.wait()


def read_state(name: str) -> dict[str, Any] | None:
    """The last checkpoint's state.json of training `name` (step, losses, config…), or None."""
    return read_step_state(training_folder(name) / "checkpoints", "adapter.safetensors")


def _resume(folder: Path, state: dict[str, Any], models: TrainingModels, job: TrainingJob) -> None:
    checkpoint = folder / "checkpoints" / state["folder"]
    tensors, _ = load_safetensors(checkpoint / "adapter.safetensors")
    _restore_tensors(models, tensors)
    saved = torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True)  # our own file
    if saved["phase"] == job.phase:  # at a phase boundary the next phase starts with a fresh optimizer
        job.optimizer.load_state_dict(saved["optimizer"])
        job.lr_scheduler.load_state_dict(torch.load(checkpoint / "lr_scheduler.pt", weights_only=True))
        if job.scaler is not None and saved.get("scaler"):
            job.scaler.load_state_dict(saved["scaler"])
    job.losses = list(state.get("losses", []))[: int(state["step"])]
    job.validation = [tuple(item) for item in state.get("validation", []) if item[0] <= int(state["step"])]


# ---------------------------------------------------------------------------------------------- the loop
def start_phase(models: TrainingModels, config: TrainConfig, phase: str, notes: list[str]) -> TrainingJob:
    from diffusers.optimization import get_scheduler

    params = trainable_parameters(models, phase)
    if phase == "joint":  # the embedding matrix at its rate, the LoRA at its own
        groups = [{"params": params[:1], "lr": float(config.embedding_learning_rate)},
                  {"params": params[1:], "lr": float(config.learning_rate)}]
    else:
        lr = config.embedding_learning_rate if phase == "embedding" else config.learning_rate
        groups = [{"params": params, "lr": float(lr)}]
    optimizer = _optimizer(groups, config.adam_8bit, notes)
    scheduler = get_scheduler("constant", optimizer=optimizer)
    scaler = None
    if config.mixed_precision in ("auto", "fp16") and models.device.type == "cuda":
        _, precision = autocast_for(models.device, config.mixed_precision)
        if precision == "fp16":
            scaler = torch.amp.GradScaler("cuda")
    return TrainingJob(phase, optimizer, scheduler, scaler, [], [])


def optimizer_step(models: TrainingModels, config: TrainConfig, data: EncodedImages,
                   class_data: EncodedImages | None, step: int, job: TrainingJob, autocast: Any) -> float:
    """One optimizer step over `gradient_accumulation` micro-batches; returns the mean loss."""
    total = 0.0
    accumulation = int(config.gradient_accumulation)
    processes = models.processes
    for micro in range(accumulation):
        generator = step_generator(config.seed, step, processes.rank * accumulation + micro)
        indices = _batch_indices(generator, len(data.mean), int(config.batch_size))
        loss = denoising_loss(models, data, indices, generator, autocast).mean()
        if class_data is not None:
            class_indices = _batch_indices(generator, len(class_data.mean), int(config.batch_size))
            prior = denoising_loss(models, class_data, class_indices, generator, autocast).mean()
            loss = loss + float(config.prior_weight) * prior
        if not torch.isfinite(loss.detach()):
            raise TrainingDiverged(f"The loss became {loss.item()} at step {step + 1}; lower the learning rate.")
        scaled = loss / accumulation
        (job.scaler.scale(scaled) if job.scaler is not None else scaled).backward()
        total += loss.item() / accumulation
    if processes.count > 1:  # what DDP does, without wrapping the modules the rest of the loop reads
        for group in job.optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.copy_(processes.mean(param.grad))
        total = float(processes.mean(torch.tensor([total], device=processes.state.device)).item())
    if job.scaler is not None:
        job.scaler.step(job.optimizer)
        job.scaler.update()
    else:
        job.optimizer.step()
    job.lr_scheduler.step()
    job.optimizer.zero_grad(set_to_none=True)
    if job.phase in ("embedding", "joint"):
        _restore_other_rows(models)
    return total


@torch.no_grad()
def _restore_other_rows(models: TrainingModels) -> None:
    """Put back every embedding row but the new ones (AdamW's weight decay moves them otherwise)."""
    weight = models.text_encoder.get_input_embeddings().weight
    keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    keep[models.new_ids] = False
    weight[keep] = models.original_embeddings[keep]


def train(config: TrainConfig, dataset: Dataset, *, callback: ProgressCallback | None = None,
          cancel: CancelToken | None = None, resume: bool = True, time_budget_s: float | None = None,
          on_step: Callable[[int, float], None] | None = None,
          on_validation: Callable[[int, list[Any]], None] | None = None, export: bool = True) -> TrainResult:
    """Train `dataset`'s style into `config.model` (see the module docstring); returns a TrainResult.

    Pressing Train again with the same settings and data resumes from the last checkpoint (resume=True). One
    training of a name runs at a time (a file lock, so also across processes): two would overwrite each other's
    checkpoints and exports."""
    processes = launched_processes()
    with _only_training_named(config.name) if processes.main else nullcontext():
        return _train(processes, config, dataset, callback=callback, cancel=cancel, resume=resume,
                      time_budget_s=time_budget_s, on_step=on_step, on_validation=on_validation, export=export)


@contextmanager
def _only_training_named(name: str) -> Iterator[None]:
    from filelock import FileLock, Timeout

    folder = training_folder(name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder.parent / f".{folder.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout as err:
        raise UserError(f"A training named '{name}' is running already (here or in another window); wait for it "
                        "to finish or choose another name.") from err
    try:
        yield
    finally:
        lock.release()


def _train(processes: Processes, config: TrainConfig, dataset: Dataset, *, callback: ProgressCallback | None,
           cancel: CancelToken | None, resume: bool, time_budget_s: float | None,
           on_step: Callable[[int, float], None] | None,
           on_validation: Callable[[int, list[Any]], None] | None, export: bool) -> TrainResult:
    from pipelines.core.loader import is_test_model, marked_test_model

    config = resolved(config, len(dataset))
    problems = check(config, len(dataset))
    if problems:
        raise UserError(" ".join(problems))
    started = time.perf_counter()
    notes: list[str] = []
    folder = training_folder(config.name)

    def report(step: int, message: str) -> None:
        if callback is not None:
            callback(step, config.steps, message)

    report(0, "Loading the base model")
    # Process 0 builds or downloads the model first, the others then read it: under torch.distributed,
    # transformers' save_pretrained writes weights on rank 0 only, so a tiny model built by another rank would
    # lack them.
    with processes.main_first():
        models = load_models(config, dataset.trigger, notes, processes)
    autocast, precision = autocast_for(models.device, config.mixed_precision)
    captions = [_caption_text(caption, dataset.trigger, models.placeholder) for caption in dataset.captions]
    report(0, "Encoding the training images")
    data = encode_images(models, dataset.images, captions)
    class_data = None
    if config.prior_preservation:
        with processes.main_first():  # process 0 generates the class images, the others then read them
            class_data = _class_latents(models, config, dataset, folder, report)
    data_digest = dataset.digest()

    state = read_state(config.name) if resume else None
    if state is not None and (state.get("config_digest"), state.get("data_digest")) != (config.digest(),
                                                                                        data_digest):
        notes.append("A checkpoint of this name was trained with other settings or images; training started afresh.")
        state = None
    start = min(int(state["step"]), config.steps) if state else 0
    job = start_phase(models, config, phase_at(config, min(start, config.steps - 1)), notes)
    if state is not None:
        _resume(folder, state, models, job)
        report(start, f"Resuming from step {start}")
    elif processes.main:
        discard_checkpoints(folder / "checkpoints")
    processes.wait()
    models.unet.train()
    models.text_encoder.train()
    step = start
    try:
        while step < config.steps:
            cancelled = processes.any(cancel is not None and cancel.cancelled)
            if cancelled:
                raise JobCancelled(f"Training cancelled at step {step} of {config.steps}; its checkpoint is saved: "
                                   "press Train again with the same settings to resume.")
            # Every call makes at least one step, so that slices always progress (a ZeroGPU slot spent on loading).
            if step > start and processes.any(time_budget_s is not None
                                              and time.perf_counter() - started > time_budget_s):
                break
            phase = phase_at(config, step)
            if phase != job.phase:
                losses, validation = job.losses, job.validation
                job = start_phase(models, config, phase, notes)
                job.losses, job.validation = losses, validation
            loss = optimizer_step(models, config, data, class_data, step, job, autocast)
            step += 1
            job.losses.append(loss)
            if on_step is not None:
                on_step(step, loss)
            report(step, f"{phase} step {step}/{config.steps}: loss {loss:.4g}")
            if config.validation_every and step % int(config.validation_every) == 0 and step < config.steps:
                _validate(models, config, dataset.trigger, folder, step, job, on_validation, dataset.resolution)
            if step % config.checkpoint_every == 0 and step < config.steps:
                _write_checkpoint(folder, step, models, config, job, data_digest)
    except JobCancelled:
        _write_checkpoint(folder, step, models, config, job, data_digest)
        raise
    except Exception as err:
        if _is_out_of_memory(err):
            _write_checkpoint(folder, step, models, config, job, data_digest)
            raise UserError(f"The device ran out of memory at step {step} (its checkpoint is kept). Choose a "
                            "smaller memory preset (8/12/16 GB: fp16, gradient checkpointing, 8-bit Adam), a "
                            "smaller batch, or LoRA instead of the full UNet, then press Train to resume.") from err
        raise
    _write_checkpoint(folder, step, models, config, job, data_digest)
    finished = step >= config.steps
    test_model = is_test_model(config.model) or marked_test_model(models.pipe.unet)
    result = TrainResult(config.name, config.method, step, config.steps, list(job.losses), start, finished,
                         0.0, folder, notes=notes, test_model=test_model)
    result.notes.insert(0, f"Precision: {precision}; device: {models.device}.")
    if finished:
        _validate(models, config, dataset.trigger, folder, step, job, on_validation, dataset.resolution)
        if export and processes.main:
            from .apply import export_training

            report(step, "Exporting")
            result.files = export_training(models, config, dataset.trigger, folder, result.notes)
    result.validation = [(s, [Path(p) for p in paths]) for s, paths in job.validation]
    result.seconds = time.perf_counter() - started
    return result


def _is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


# ---------------------------------------------------------------------------------------------- extras
def _class_latents(models: TrainingModels, config: TrainConfig, dataset: Dataset, folder: Path,
                   report: Callable[[int, str], None]) -> EncodedImages:
    """Prior preservation: class images from the base model (through the diffusion core, seeds 0…k-1), made
    once and kept in the training folder so that a resume uses the same ones."""
    from PIL import Image

    from pipelines.diffusion.generate import GenerateRequest, generate

    class_folder = folder / "class_images"
    count = int(config.class_images)
    paths = [class_folder / f"{index:04d}.png" for index in range(count)]
    for index, path in enumerate(paths):
        if path.is_file():
            continue
        report(0, f"Generating class image {index + 1}/{count} with the base model")
        image = generate(GenerateRequest(prompt=config.class_prompt, model=config.model, seed=index,
                                         width=dataset.resolution, height=dataset.resolution)).images[0]
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return encode_images(models, images, [config.class_prompt] * count)


def validation_prompt(config: TrainConfig, trigger: str) -> str:
    return config.validation_prompt.strip() or f"{trigger}, 1girl, solo"


@torch.no_grad()
def _validate(models: TrainingModels, config: TrainConfig, trigger: str, folder: Path, step: int, job: TrainingJob,
              on_validation: Callable[[int, list[Any]], None] | None, size: int) -> None:
    """Images at the fixed validation seeds from the model as it is now (diffusers' log_validation), `size` px
    square (the training resolution); process 0's."""
    if not models.processes.main:
        return
    models.unet.eval()
    models.text_encoder.eval()
    try:
        images = validation_images(models, config, trigger, size)
    finally:
        models.unet.train()
        models.text_encoder.train()
    paths = []
    for seed, image in zip(config.validation_seeds, images, strict=True):
        path = folder / "validation" / f"step-{step:07d}_seed-{seed}.png"
        with atomic_path(path) as tmp:
            image.save(tmp, format="PNG")
        paths.append(str(path))
    job.validation = [item for item in job.validation if item[0] != step] + [(step, paths)]
    if on_validation is not None:
        on_validation(step, images)


@torch.no_grad()
def validation_images(models: TrainingModels, config: TrainConfig, trigger: str, size: int) -> list[Any]:
    """The validation prompt at each validation seed, right in any mix of precisions by construction: the text
    encoder (kept in fp32) runs in its own dtype, its output is cast to the UNet's dtype, the UNet's latents to the
    VAE's (the full method's UNet is fp32 beside a half-precision VAE), all under the training's autocast."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    autocast, _ = autocast_for(models.device, config.mixed_precision)
    prompt = _caption_text(validation_prompt(config, trigger), trigger, models.placeholder)
    with autocast():
        cond, uncond = (_text_states(models, text).to(models.unet_dtype) for text in (prompt, ""))
    # No text encoder in this pipeline: it then keeps the given embeddings in the UNet's dtype.
    pipe = StableDiffusionPipeline(vae=models.vae, text_encoder=None, tokenizer=models.tokenizer, unet=models.unet,
                                   scheduler=DPMSolverMultistepScheduler.from_config(models.pipe.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    images = []
    for seed in config.validation_seeds:
        generator = torch.Generator().manual_seed(int(seed))
        with autocast():
            latents = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, generator=generator, height=size,
                           width=size, num_inference_steps=int(config.validation_steps), output_type="latent").images
            pixels = models.vae.decode(latents.to(models.vae.dtype) / models.vae.config.scaling_factor).sample
        images += pipe.image_processor.postprocess(pixels.float(), output_type="pil")
    return images


def _text_states(models: TrainingModels, text: str) -> torch.Tensor:
    ids = models.tokenizer([text], padding="max_length", truncation=True, max_length=models.tokenizer.model_max_length,
                           return_tensors="pt").input_ids
    return models.text_encoder(ids.to(models.device))[0]


def lora_scale(config: TrainConfig) -> float:
    return float(config.alpha) / float(config.rank)


__all__ = ["METHODS", "TrainConfig", "TrainResult", "check", "default_steps", "read_state", "train",
           "training_folder"]
