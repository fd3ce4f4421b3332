"""MAGA, our formulation (pipelines/storyboard/memory.py), on the tiny SD 1.5 pipeline through the diffusion core."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from pipelines.diffusion.generate import GenerateRequest, call_lock, generate
from pipelines.diffusion.models import load_pipeline
from pipelines.storyboard.memory import (
    FrameMemory,
    KeyValueBank,
    frame_attention,
    memory_frames,
    memory_layers,
    scaled_start_layer,
    scaled_start_step,
    transformer_block_order,
)

PROMPTS = ("1girl, silver hair, red scarf, standing", "1girl, silver hair, red scarf, sitting on a bench",
           "1girl, silver hair, red scarf, running, city")
STEPS, START_STEP, START_LAYER = 5, 2, 1


def request(seed: int = 7, prompts: tuple[str, ...] = PROMPTS, sampler: str = "Euler") -> GenerateRequest:
    return GenerateRequest(prompts=prompts, batch_size=len(prompts), width=64, height=64, steps=STEPS,
                           sampler=sampler, schedule="Automatic", seed=seed, cfg_scale=6.0)


def run(memory_on: bool, seed: int = 7, prompts: tuple[str, ...] = PROMPTS, scope: str = "all",
        trace: list | None = None, attention: dict | None = None, ratio: float = 1.0, sampler: str = "Euler",
        made: list | None = None, memory_preset: str = "auto") -> list[torch.Tensor]:
    """The latents after every step ([frames, 4, 8, 8] each), MAGA on or off (processors installed either way).
    `attention`, if given, receives each memory layer's self-attention output at the last step, cond half only."""
    pipe = load_pipeline("tiny:sd15", memory=memory_preset)
    layers = memory_layers(pipe.unet, START_LAYER)
    memory = FrameMemory(frames=len(prompts), guided=True, layers=layers, start_step=START_STEP, scope=scope,
                         trace=trace, sample_ratio=ratio, seed=seed) if memory_on else None
    if made is not None:
        made.append(memory)
    latents: list[torch.Tensor] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out, name=name: attention.__setitem__(
        name, out.detach().float()[len(prompts):])) for name, module in pipe.unet.named_modules()
        if attention is not None and name in layers]
    try:
        with call_lock(pipe), frame_attention(pipe.unet):
            generate(dataclasses.replace(request(seed, prompts, sampler), memory=memory_preset), state=memory,
                     cross_attention_kwargs={"memory": memory} if memory else None,
                     on_latents=lambda step, tensor: latents.append(tensor.float()))
    finally:
        for hook in hooks:
            hook.remove()
    return latents


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_block_order_and_layers_follow_the_unet_forward_order() -> None:
    pipe = load_pipeline("tiny:sd15")
    order = transformer_block_order(pipe.unet.attn_processors)
    assert order == ["down_blocks.0.attentions.0", "down_blocks.0.attentions.1", "mid_block.attentions.0",
                     "up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2"]
    layers = memory_layers(pipe.unet, 2)
    assert layers == {f"{block}.transformer_blocks.0.attn1" for block in order[2:]}
    assert scaled_start_step(50) == 24 and scaled_start_step(25) == 12
    assert scaled_start_layer(pipe.unet, 8) == 3 and scaled_start_layer(pipe.unet, 16) == 6  # 6 blocks here
    assert [memory_frames(2, scope) for scope in ("all", "previous", "first")] == [[0, 1], [1], [0]]


def test_off_is_plain_attention_and_frame_one_has_no_memory() -> None:
    """Tiny random weights carry an attention change only faintly to the final latents, so the frames' difference
    is checked where MAGA acts: the memory layers' attention outputs."""
    attention_on, attention_off = {}, {}
    on, off = run(True, attention=attention_on), run(False, attention=attention_off)
    plain: list[torch.Tensor] = []
    generate(request(), on_latents=lambda step, tensor: plain.append(tensor.float()))
    assert torch.equal(off[-1], plain[-1])  # installed processors without memory change nothing
    assert relative(on[-1][0], off[-1][0]) < 1e-5  # frame 1 attends only to itself
    for layer in attention_on:
        assert relative(attention_on[layer][0], attention_off[layer][0]) < 1e-5, layer
        assert min(relative(attention_on[layer][n], attention_off[layer][n]) for n in (1, 2)) > 1e-3, layer


def test_latents_before_the_start_step_are_bit_identical() -> None:
    off, on = run(False), run(True)
    for step in range(START_STEP):
        assert torch.equal(on[step], off[step]), f"step {step + 1} differs before memory starts"
    assert not torch.equal(on[START_STEP], off[START_STEP])


def chunked(chunk: int, scope: str = "all", ratio: float = 1.0, bank: KeyValueBank | None = None,
            seed: int = 7) -> list[torch.Tensor]:
    """The final latents of each frame drawn in chunks of `chunk` frames, each chunk reading the keys and values
    the earlier chunks kept in the bank (chunks of one: a user adding panels one at a time)."""
    pipe = load_pipeline("tiny:sd15")
    bank = KeyValueBank() if bank is None else bank
    layers, finals = memory_layers(pipe.unet, START_LAYER), []
    for first in range(0, len(PROMPTS), chunk):
        prompts = PROMPTS[first:first + chunk]
        memory = FrameMemory(frames=len(prompts), guided=True, layers=layers, start_step=START_STEP, scope=scope,
                             first_frame=first, keep=first + chunk < len(PROMPTS), bank=bank, sample_ratio=ratio,
                             seed=seed)
        latents: list[torch.Tensor] = []
        with call_lock(pipe), frame_attention(pipe.unet):
            generate(GenerateRequest(prompts=prompts, batch_size=len(prompts), width=64, height=64, steps=STEPS,
                                     sampler="Euler", schedule="Automatic", seed=seed + first, cfg_scale=6.0),
                     state=memory, cross_attention_kwargs={"memory": memory},
                     on_latents=lambda step, tensor, out=latents: out.append(tensor.float()))
        finals.extend(latents[-1])
    return finals


@pytest.mark.parametrize("chunk", [1, 2])
def test_lockstep_equals_generation_in_chunks_with_a_stored_memory(chunk: int) -> None:
    """Chunks of one are what a user gets who adds panels one at a time; chunks of two, the out-of-memory
    fallback. Both must give the lockstep frames."""
    lockstep = run(True)[-1]
    for frame, final in enumerate(chunked(chunk)):
        assert relative(final, lockstep[frame]) < 1e-4, f"frame {frame + 1} in chunks of {chunk}"


def test_the_first_scope_in_chunks_reads_only_the_first_frame_from_the_bank() -> None:
    lockstep = run(True, scope="first")[-1]
    for frame, final in enumerate(chunked(2, scope="first")):
        assert relative(final, lockstep[frame]) < 1e-4, f"frame {frame + 1}"


def mean_pairwise_cosine(latents: torch.Tensor) -> float:
    flat = torch.nn.functional.normalize(latents.flatten(1), dim=1)
    similarity = flat @ flat.T
    count = latents.shape[0]
    return float((similarity.sum() - count) / (count * (count - 1)))


def test_frames_are_more_alike_with_memory_than_without() -> None:
    """Mean pairwise cosine between the frames' attention outputs, averaged over the memory layers, per seed."""
    def likeness(memory_on: bool, seed: int) -> float:
        attention: dict = {}
        run(memory_on, seed, attention=attention)
        return sum(mean_pairwise_cosine(output) for output in attention.values()) / len(attention)

    gains = [likeness(True, seed) - likeness(False, seed) for seed in (1, 2, 3)]
    assert all(gain > 0.005 for gain in gains), gains


def test_scopes_give_the_memory_they_promise() -> None:
    for scope, expected in (("all", (0, 1)), ("previous", (1,)), ("first", (0,))):
        trace: list = []
        run(True, scope=scope, trace=trace)
        third = {entry[3] for entry in trace if entry[2] == 2}
        assert third == {expected}, scope
    # By effect: with "first", the third frame does not see the second, so changing the second prompt leaves it.
    changed = (PROMPTS[0], "1boy, black hair, at a desk", PROMPTS[2])
    for scope, unchanged in (("first", True), ("previous", False)):
        before, after = {}, {}
        run(True, scope=scope, attention=before)
        run(True, scope=scope, prompts=changed, attention=after)
        difference = max(relative(after[layer][2], before[layer][2]) for layer in before)
        assert (difference < 1e-5) if unchanged else (difference > 1e-3), (scope, difference)


def test_two_storyboards_at_once_do_not_mix() -> None:
    alone = {seed: run(True, seed)[-1] for seed in (11, 12)}
    together: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda seed=seed: together.__setitem__(seed, run(True, seed)[-1]))
               for seed in (11, 12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for seed in (11, 12):
        assert torch.equal(together[seed], alone[seed])


def test_bad_memory_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="scope"):
        FrameMemory(frames=2, guided=True, layers=frozenset(), start_step=0, scope="every")
    with pytest.raises(ValueError, match="ratio"):
        FrameMemory(frames=2, guided=True, layers=frozenset(), start_step=0, sample_ratio=0)


# ---- issue #22: tokens kept < 1, S in sampler steps, sliced attention kept; issue #19: a bounded bank ----------
RATIO = 0.5


def test_with_fewer_tokens_kept_chunks_equal_one_call() -> None:
    """The token subset of frame n is drawn from a generator keyed by (seed, n, layer, pass, branch), so drawing
    the frames in chunks (the out-of-memory fallback, or panels added one at a time) gives the one-call frames."""
    lockstep = run(True, ratio=RATIO)[-1]
    assert relative(lockstep[2], run(True)[-1][2]) > 1e-4  # the subset is used: not the all-tokens frames
    for frame, final in enumerate(chunked(2, ratio=RATIO)):  # chunks of 1: the added-panel test below
        assert relative(final, lockstep[frame]) < 1e-4, f"frame {frame + 1} in chunks of 2"


def test_with_fewer_tokens_kept_adding_a_panel_leaves_the_earlier_panels() -> None:
    three = run(True, ratio=RATIO)[-1]
    four = run(True, ratio=RATIO, prompts=(*PROMPTS, "1girl, silver hair, red scarf, waving goodbye"))[-1]
    for frame in range(3):
        assert relative(four[frame], three[frame]) < 1e-4, f"frame {frame + 1} changed when a panel was added"


def first_memory_pass(sampler: str) -> int:
    """The index of the first UNet pass in which the memory attention acted."""
    made: list = []
    passes: list[int] = []
    pipe = load_pipeline("tiny:sd15")
    hook = pipe.unet.register_forward_hook(lambda *_: passes.append(made[0].attended))
    try:
        run(True, sampler=sampler, made=made)
    finally:
        hook.remove()
    return next(index for index, attended in enumerate(passes) if attended)


def test_the_start_step_counts_sampler_steps_under_second_order_samplers() -> None:
    """Heun calls the UNet twice per step (closed form: step k starts at pass 2k), Euler once."""
    assert first_memory_pass("Euler") == START_STEP
    assert first_memory_pass("Heun") == 2 * START_STEP


def test_low_memory_presets_keep_sliced_attention_with_the_memory_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under "low" every attention call, memory or not, works on at most the preset's slice of heads at a time,
    and the frames are those of the unsliced memory attention."""
    from diffusers.models.attention_processor import SlicedAttnProcessor

    pipe = load_pipeline("tiny:sd15", memory="low")
    slice_sizes = {processor.slice_size for processor in pipe.unet.attn_processors.values()}
    assert all(isinstance(p, SlicedAttnProcessor) for p in pipe.unet.attn_processors.values())
    rows: list[int] = []
    sliced_calls: list[int] = []
    in_unet = [False]  # the text encoder's and the VAE's attention are not the UNet's
    sdpa, sliced = torch.nn.functional.scaled_dot_product_attention, SlicedAttnProcessor.__call__

    def counted_sdpa(query, *args, **kwargs):
        if in_unet[0]:
            rows.append(query.shape[0] * query.shape[1])
        return sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted_sdpa)
    monkeypatch.setattr(SlicedAttnProcessor, "__call__",
                        lambda self, *args, **kwargs: sliced_calls.append(1) or sliced(self, *args, **kwargs))
    hooks = [pipe.unet.register_forward_pre_hook(lambda *_: in_unet.__setitem__(0, True)),
             pipe.unet.register_forward_hook(lambda *_: in_unet.__setitem__(0, False))]
    made: list = []
    try:
        low = run(True, memory_preset="low", made=made)[-1]
    finally:
        monkeypatch.undo()
        for hook in hooks:
            hook.remove()
    assert made[0].attended and sliced_calls and rows  # memory attention ran, and so did the preset's slicing
    assert max(rows) <= max(slice_sizes), (max(rows), slice_sizes)
    assert relative(low, run(True, memory_preset="none")[-1]) < 1e-4


def test_a_bank_over_its_ram_budget_spills_to_disk_with_the_same_frames() -> None:
    in_ram = chunked(1)
    bank = KeyValueBank(ram_budget_mb=0)
    spilled = chunked(1, bank=bank)
    assert bank.disk_bytes > 0 and bank.ram_bytes == 0
    for frame, (ours, theirs) in enumerate(zip(spilled, in_ram, strict=True)):
        assert torch.equal(ours, theirs), f"frame {frame + 1}"
    folder = bank._folder
    bank.close()
    assert folder is not None and not folder.exists()


def test_the_bank_keeps_only_frames_a_later_chunk_reads() -> None:
    """In chunks of one over 3 frames, "all" must keep frames 1 and 2 for frame 3; "first" only frame 1 and
    "previous" only the frame just drawn: at most one frame's keys and values per layer and pass."""
    peak = {}
    for scope in ("all", "first", "previous"):
        bank = KeyValueBank()
        chunked(1, scope=scope, bank=bank)
        peak[scope] = bank.peak_ram_bytes
    assert peak["first"] > 0 and peak["all"] == 2 * peak["first"] and peak["previous"] == peak["first"]
