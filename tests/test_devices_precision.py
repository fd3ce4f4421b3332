""""auto" precision: bf16 only where the device computes it natively. A T4 (compute capability 7.5) emulates bf16,
although torch.cuda.is_bf16_supported() says True there, so it gets fp16; Ampere and later (8.x, 9.x) get bf16.
The GPUs are mocked: these machines have none."""

from __future__ import annotations

import pytest
import torch

from pipelines.core import devices


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA GPU of a given compute capability whose is_bf16_supported() is True (emulation counted)."""

    def install(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return install


# Compute capabilities from NVIDIA's CUDA GPU table: T4 7.5, V100 7.0, A100 8.0, A10G/L4 8.6/8.9, H100 9.0.
@pytest.mark.parametrize(("capability", "native"), [((7, 5), False), ((7, 0), False), ((6, 1), False),
                                                    ((8, 0), True), ((8, 6), True), ((8, 9), True), ((9, 0), True)])
def test_bf16_counts_as_supported_only_where_it_is_native(gpu, capability, native):
    gpu(capability)
    assert devices.bf16_supported(torch.device("cuda")) is native
    assert devices.bf16_supported("cuda:0") is native


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((8, 0), "bf16")])
def test_auto_precision_of_the_trainers_follows_the_native_check(gpu, capability, expected):
    from pipelines.style_finetune.train import autocast_for

    gpu(capability)
    assert autocast_for(torch.device("cuda"), "auto")[1] == expected
    assert autocast_for(torch.device("cuda"), "bf16")[1] == "bf16"  # an explicit choice is kept


def test_no_gpu_means_no_cuda_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.bf16_supported(torch.device("cuda")) is False
    assert devices.bf16_supported(torch.device("mps")) is False
