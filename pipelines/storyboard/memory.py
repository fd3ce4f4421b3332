"""Cross-frame memory attention: our reading of the thesis's Multi-Aggregation Attention (MAGA, seed 001).

The thesis's equations take the values from the current frame, so no history could flow; issue #9 fixes a
formulation, which this module implements. In the self-attention of the UNet's transformer blocks from block index
L on (0-based over the blocks in forward order: SD 1.5 has 16) and from denoising step S on, frame n's queries
attend to its own keys and values concatenated with those of its memory frames (all earlier frames, the previous
one, or the first) at the same layer and step, separately in the unconditional and conditional halves of a
classifier-free-guidance batch. Optionally only a random fraction of the memory tokens is used (as StoryDiffusion
does) to bound the cost.

All frames denoise together in one batch ("lockstep"); frame n only ever sees frames < n, so the result is what
generating the frames one after another with a stored key/value memory gives, without storing it. The stored
form is here too, for chunks: a call may draw frames `first_frame`… of the storyboard, reading the earlier
frames' keys and values from `FrameMemory.bank` and adding its own when `keep` is set. Chunks of one frame are
sequential generation (a panel added later); smaller chunks are the fallback when a lockstep batch does not fit
in memory.

The bank is bounded (issue #19): only the frames a later chunk reads are kept ("previous" the last frame drawn,
"first" only frame 1, "all" every one), and past `KeyValueBank.ram_budget_mb` the entries go to a temporary
folder on disk (safetensors, read back when a later chunk needs them, removed when the call ends). The frames
stay exactly the same; a spilled bank costs disk writes and reads (bench/bench_storyboard.py measures them).

Steps: S counts sampler steps, not UNet passes (Heun, DPM2 and DPM++ SDE call the UNet twice a step): the step hook
moves `step` (sampler steps) and `unet_pass` (UNet passes, which key the bank and the token subsets) on.

With "tokens kept" below 1, the subset of memory tokens for frame n at a layer and UNet pass is drawn from a
generator keyed by (seed, n, layer, pass, CFG branch), so it is the same whether frame n is drawn in one batch, in
chunks, or with more panels after it.

Under a memory preset that slices attention ("low", "lowest"), the processor keeps the pipeline's own processor
for every call it does not change and computes its memory attention in the same slices of heads.

Nothing here is global. The processor holds only its layer's name; everything about one call lives in a
`FrameMemory` that the caller creates, passes as `cross_attention_kwargs={"memory": memory}` and moves on with
the step hook (`memory.step`). With `memory=None` the processor is plain SDPA attention.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SCOPES = ("all", "previous", "first")
SD15_TRANSFORMER_BLOCKS = 16
DEFAULT_START_LAYER = 8
DEFAULT_START_STEP_OF_50 = 24
# RAM the chunked fallback may give earlier frames' keys and values before it spills them to disk. SD 1.5 at 512 px
# keeps ~52 MB per frame and sampler step (fp16, layers 8-15, both CFG branches): 2 GiB holds ~1.5 frames of 26
# steps, beside the models on a small Space.
DEFAULT_BANK_RAM_MB = 2048
_SECTION_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def memory_frames(frame: int, scope: str) -> list[int]:
    """The earlier frames whose keys and values frame `frame` attends to."""
    if scope not in SCOPES:
        raise ValueError(f"Unknown memory scope {scope!r}; use one of {', '.join(SCOPES)}.")
    if frame == 0:
        return []
    return {"all": list(range(frame)), "previous": [frame - 1], "first": [0]}[scope]


def transformer_block_order(processor_names: Any) -> list[str]:
    """The transformer blocks' attention modules ("down_blocks.0.attentions.1") in the UNet's forward order."""
    blocks = set()
    for name in processor_names:
        match = re.match(r"((down_blocks|up_blocks)\.(\d+)|mid_block)\.attentions\.(\d+)\.", name)
        if match:
            blocks.add(match.group(0).rstrip("."))

    def forward_position(block: str) -> tuple[int, int, int]:
        parts = block.split(".")
        if parts[0] == "mid_block":
            return _SECTION_ORDER["mid_block"], 0, int(parts[2])
        return _SECTION_ORDER[parts[0]], int(parts[1]), int(parts[3])

    return sorted(blocks, key=forward_position)


def memory_layers(unet: Any, start_layer: int) -> frozenset[str]:
    """The self-attention layers (attn1) of the transformer blocks from index `start_layer` on."""
    blocks = transformer_block_order(unet.attn_processors)
    chosen = tuple(block + "." for block in blocks[start_layer:])
    return frozenset(name.removesuffix(".processor") for name in unet.attn_processors
                     if name.startswith(chosen) and ".attn1." in name)


def scaled_start_layer(unet: Any, start_of_16: int) -> int:
    """L is given over SD 1.5's 16 transformer blocks; another UNet (SDXL, the tiny test one) gets the block at the
    same fraction of its depth, so the setting means the same on every model."""
    blocks = len(transformer_block_order(unet.attn_processors))
    return round(start_of_16 * blocks / SD15_TRANSFORMER_BLOCKS)


def scaled_start_step(steps: int, start_of_50: int = DEFAULT_START_STEP_OF_50) -> int:
    """The issue's default S = 24 of 50 steps, scaled to another step count."""
    return round(start_of_50 * steps / 50)


def needed_later(frame: int, chunk_end: int, scope: str) -> bool:
    """Whether a frame before `chunk_end` is read by any frame from `chunk_end` on (then a chunk must keep it)."""
    return {"all": True, "previous": frame == chunk_end - 1, "first": frame == 0}[scope]


class KeyValueBank:
    """Earlier chunks' keys and values: (layer, UNet pass) -> per storyboard frame, one (keys, values) per CFG
    branch, or None for a frame no later chunk reads. Up to `ram_budget_mb` in memory (on `device`), the rest in a
    temporary folder that goes when the bank is closed or dropped."""

    def __init__(self, ram_budget_mb: float = DEFAULT_BANK_RAM_MB, device: str | None = None) -> None:
        self.ram_budget_bytes = int(ram_budget_mb * 2**20)
        self.device = device  # where kept keys/values wait (e.g. "cpu" to spare a GPU); None: where made
        self.ram_bytes = self.disk_bytes = self.peak_ram_bytes = 0  # disk: bytes ever written
        self._entries: dict[tuple[str, int], list[Any]] = {}
        self._folder: Path | None = None
        self._spilled = 0
        self._cleanup: Any = None

    def count(self, layer: str, unet_pass: int) -> int:
        return len(self._entries.get((layer, unet_pass), []))

    def add(self, layer: str, unet_pass: int, branches: list[tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """The next frame's keys and values (None: not needed later)."""
        entries = self._entries.setdefault((layer, unet_pass), [])
        if branches is None:
            entries.append(None)
            return
        kept = [(key.detach().to(self.device) if self.device else key.detach(),
                 value.detach().to(self.device) if self.device else value.detach()) for key, value in branches]
        size = sum(key.numel() * key.element_size() + value.numel() * value.element_size() for key, value in kept)
        if self.ram_bytes + size <= self.ram_budget_bytes:
            entries.append(kept)
            self.ram_bytes += size
            self.peak_ram_bytes = max(self.peak_ram_bytes, self.ram_bytes)
            return
        entries.append(self._spill(kept))
        self.disk_bytes += size

    def release(self, layer: str, unet_pass: int, frame: int) -> None:
        """Forget a frame no later frame reads (its RAM or its file)."""
        entries = self._entries.get((layer, unet_pass), [])
        entry = entries[frame] if frame < len(entries) else None
        if isinstance(entry, Path):
            entry.unlink(missing_ok=True)
        elif entry is not None:
            self.ram_bytes -= sum(key.numel() * key.element_size() + value.numel() * value.element_size()
                                  for key, value in entry)
        if entry is not None:
            entries[frame] = None

    def get(self, layer: str, unet_pass: int, frame: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        entry = self._entries.get((layer, unet_pass), [])[frame] if frame < self.count(layer, unet_pass) else None
        if entry is None:
            raise RuntimeError(f"The memory bank holds no keys for frame {frame + 1} at {layer}, pass {unet_pass}")
        if isinstance(entry, Path):
            from safetensors.torch import load_file

            tensors = load_file(entry)
            return [(tensors[f"key{branch}"], tensors[f"value{branch}"]) for branch in range(len(tensors) // 2)]
        return entry

    def _spill(self, kept: list[tuple[torch.Tensor, torch.Tensor]]) -> Path:
        from safetensors.torch import save_file

        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="asl-frame-memory-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._folder, True)
        tensors = {}
        for branch, (key, value) in enumerate(kept):
            tensors[f"key{branch}"] = key.to("cpu").contiguous()
            tensors[f"value{branch}"] = value.to("cpu").contiguous()
        self._spilled += 1
        path = self._folder / f"{self._spilled}.safetensors"
        save_file(tensors, str(path))
        return path

    def close(self) -> None:
        """Drop everything (the spill folder too)."""
        self._entries.clear()
        if self._cleanup is not None:
            self._cleanup()


def _subset_seed(seed: int, frame: int, layer: str, unet_pass: int, branch: int) -> int:
    """A seed for one frame's token subset at one layer and UNet pass (stable across runs and processes)."""
    digest = hashlib.blake2b(f"{seed}|{frame}|{layer}|{unet_pass}|{branch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class FrameMemory:
    """One storyboard call's memory state (created per call, dropped when it returns)."""

    frames: int  # frames in this call's batch
    guided: bool  # the batch is [uncond frames | cond frames] under classifier-free guidance
    layers: frozenset[str]  # attention layers where memory is used (see memory_layers)
    start_step: int  # from this sampler step on (0-based)
    scope: str = "all"
    sample_ratio: float = 1.0  # fraction of memory tokens kept (1 = all)
    seed: int = 0  # the storyboard's seed: token subsets are drawn from generators keyed by it (module doc)
    step: int = 0  # sampler steps done, moved on by the step hook, never counted in here
    unet_pass: int = 0  # UNet passes done (two per step for Heun, DPM2), moved on by the step hook
    # Chunks: this call's batch is the storyboard's frames first_frame, first_frame + 1, …; frames before it are
    # read from `bank`, and with `keep` this call's frames are added to it for the chunks after it (those frames
    # up to `chunk_end`). One lockstep batch needs neither.
    first_frame: int = 0
    keep: bool = False
    bank: KeyValueBank = field(default_factory=KeyValueBank)
    trace: list[tuple[str, int, int, tuple[int, ...]]] | None = None  # (layer, step, frame, memory frames) if kept
    attended: int = 0  # memory attention calls made (the caller checks that the memory acted)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"Unknown memory scope {self.scope!r}; use one of {', '.join(SCOPES)}.")
        if not 0 < self.sample_ratio <= 1:
            raise ValueError(f"The memory sampling ratio must be in (0, 1], got {self.sample_ratio}.")

    def active(self, layer: str) -> bool:
        return layer in self.layers and self.step >= self.start_step


class CrossFrameAttention:
    """An attention processor that holds only the name of its layer and the processor it stands in for (the
    pipeline's own: plain SDPA, or sliced attention under a low-memory preset), which does every call the memory
    does not change."""

    def __init__(self, layer: str, original: Any = None) -> None:
        self.layer = layer
        self.original = original
        self.slice_size = getattr(original, "slice_size", None)  # SlicedAttnProcessor's heads per slice

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 memory: FrameMemory | None = None) -> torch.Tensor:
        if memory is None or encoder_hidden_states is not None or not memory.active(self.layer):
            return self._as_before(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        memory.attended += 1
        return _frame_attention(attn, hidden_states, memory, self.layer, self.slice_size)

    def _as_before(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any, attention_mask: Any,
                   temb: Any) -> torch.Tensor:
        original = self.original
        if original is None:
            from diffusers.models.attention_processor import AttnProcessor2_0

            original = AttnProcessor2_0()
        extra = {"temb": temb} if temb is not None else {}  # SlicedAttnProcessor takes no temb
        return original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                        attention_mask=attention_mask, **extra)


def _heads(attn: Any, tensor: torch.Tensor) -> torch.Tensor:
    batch, tokens, inner = tensor.shape
    return tensor.view(batch, tokens, attn.heads, inner // attn.heads).transpose(1, 2)


def _frame_attention(attn: Any, hidden_states: torch.Tensor, memory: FrameMemory, layer: str,
                     slice_size: int | None = None) -> torch.Tensor:
    """Self-attention where each frame also attends to its memory frames' keys and values (per CFG branch)."""
    import torch

    residual, spatial = hidden_states, hidden_states.ndim == 4
    if spatial:
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = _heads(attn, attn.to_q(hidden_states))
    key = _heads(attn, attn.to_k(hidden_states))
    value = _heads(attn, attn.to_v(hidden_states))
    branches = 2 if memory.guided else 1
    frames = query.shape[0] // branches
    outputs = [_attend_frame(query, key, value, memory, layer, branch, frame, frames, slice_size)
               for branch in range(branches) for frame in range(frames)]
    if memory.keep:
        _keep(key, value, memory, layer, branches, frames)
    out = torch.cat(outputs).transpose(1, 2).reshape(query.shape[0], -1, attn.heads * query.shape[-1])
    out = attn.to_out[1](attn.to_out[0](out.to(query.dtype)))
    if spatial:
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


def _attend_frame(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, memory: FrameMemory, layer: str,
                  branch: int, frame: int, frames: int, slice_size: int | None = None) -> torch.Tensor:
    """One frame of the batch. Its keys are its own plus its memory frames' (from the batch, or from the bank for
    frames of earlier chunks). When those are the frames just before it in the batch ("all" and "previous" in
    one lockstep batch) they are one slice of the branch's frames: a view, no copy (key order does not matter)."""
    first = memory.first_frame
    chosen = memory_frames(first + frame, memory.scope)
    index = branch * frames + frame
    if memory.trace is not None and branch == (2 if memory.guided else 1) - 1:
        memory.trace.append((layer, memory.step, first + frame, tuple(chosen)))
    if memory.sample_ratio == 1 and chosen == list(range(first + frame - len(chosen), first + frame)) and \
            (not chosen or chosen[0] >= first):
        start, tokens = index - len(chosen), key.shape[2]
        keys = _as_token_rows(key)[:, :, start * tokens:(index + 1) * tokens]
        values = _as_token_rows(value)[:, :, start * tokens:(index + 1) * tokens]
    else:
        keys, values = _with_memory((key[index], value[index]),
                                    _remembered(key, value, memory, layer, branch, chosen, frames), memory,
                                    _subset_seed(memory.seed, first + frame, layer, memory.unet_pass, branch))
    return _attention(query[index:index + 1], keys, values, slice_size)


def _attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, slice_size: int | None) -> torch.Tensor:
    """SDPA over [1, heads, tokens, dim]; with `slice_size`, that many heads at a time (as SlicedAttnProcessor)."""
    import torch
    import torch.nn.functional as F

    heads = query.shape[1]
    if not slice_size or slice_size >= heads:
        return F.scaled_dot_product_attention(query, keys, values)
    return torch.cat([F.scaled_dot_product_attention(query[:, start:start + slice_size],
                                                     keys[:, start:start + slice_size],
                                                     values[:, start:start + slice_size])
                      for start in range(0, heads, slice_size)], dim=1)


def _remembered(key: torch.Tensor, value: torch.Tensor, memory: FrameMemory, layer: str, branch: int,
                chosen: list[int], frames: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (keys, values) of the storyboard frames `chosen`: earlier chunks' from the bank, this batch's own."""
    first = memory.first_frame
    remembered = []
    for earlier in chosen:
        if earlier < first:
            kept_key, kept_value = memory.bank.get(layer, memory.unet_pass, earlier)[branch]
            remembered.append((kept_key.to(key.device, key.dtype), kept_value.to(value.device, value.dtype)))
        else:
            row = branch * frames + earlier - first
            remembered.append((key[row], value[row]))
    return remembered


def _as_token_rows(tensor: torch.Tensor) -> torch.Tensor:
    """[batch, heads, tokens, dim] (as _heads makes it, a view of [batch, tokens, heads, dim]) -> a view
    [1, heads, batch * tokens, dim]: consecutive frames' tokens are then one slice."""
    batch, heads, tokens, dim = tensor.shape
    return tensor.transpose(1, 2).reshape(1, batch * tokens, heads, dim).transpose(1, 2)


def _keep(key: torch.Tensor, value: torch.Tensor, memory: FrameMemory, layer: str, branches: int,
          frames: int) -> None:
    """Add this batch's frames' keys and values to the bank, for the chunks after it (only those a later frame
    reads; the others as None)."""
    stored = memory.bank.count(layer, memory.unet_pass)
    if stored != memory.first_frame:
        raise RuntimeError(f"Chunk from frame {memory.first_frame + 1} found {stored} frames in the memory "
                           f"bank at {layer}, pass {memory.unet_pass}: chunks must run in frame order")
    chunk_end = memory.first_frame + frames
    for earlier in range(memory.first_frame):  # read by this batch for the last time ("previous" scope)
        if not needed_later(earlier, chunk_end, memory.scope):
            memory.bank.release(layer, memory.unet_pass, earlier)
    for frame in range(frames):
        needed = needed_later(memory.first_frame + frame, chunk_end, memory.scope)
        memory.bank.add(layer, memory.unet_pass, [(key[branch * frames + frame], value[branch * frames + frame])
                                                  for branch in range(branches)] if needed else None)


def _with_memory(own: tuple[torch.Tensor, torch.Tensor], remembered: list[tuple[torch.Tensor, torch.Tensor]],
                 memory: FrameMemory, subset_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, heads, own + memory tokens, dim] keys and values; memory tokens optionally subsampled (the subset drawn
    from a generator seeded with `subset_seed`, so it depends only on the frame, layer, pass and branch)."""
    import torch

    if not remembered:
        return own[0].unsqueeze(0), own[1].unsqueeze(0)
    keys = torch.cat([item[0] for item in remembered], dim=1)
    values = torch.cat([item[1] for item in remembered], dim=1)
    if memory.sample_ratio < 1:
        keep = max(1, round(keys.shape[1] * memory.sample_ratio))
        from pipelines.core.seeds import cpu_generator

        chosen = torch.randperm(keys.shape[1], generator=cpu_generator(subset_seed))[:keep].to(keys.device)
        keys, values = keys[:, chosen], values[:, chosen]
    return (torch.cat([own[0], keys], dim=1).unsqueeze(0), torch.cat([own[1], values], dim=1).unsqueeze(0))


@contextmanager
def frame_attention(unet: Any) -> Iterator[None]:
    """Put CrossFrameAttention on every attention layer for the block, and the original processors back after
    (also on errors). Each keeps the processor it replaces for the calls it does not change (sliced attention under
    a low-memory preset). Hold the pipeline's call lock around it: the processors live on the shared cached UNet."""
    original = unet.attn_processors
    unet.set_attn_processor({name: CrossFrameAttention(name.removesuffix(".processor"), processor)
                             for name, processor in original.items()})
    try:
        yield
    finally:
        unet.set_attn_processor(original)
