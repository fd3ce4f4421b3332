"""Device and dtype choice: cuda fp16, mps, or cpu fp32, overridable by ASL_DEVICE / ASL_DTYPE."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import settings

if TYPE_CHECKING:
    import torch

_DTYPES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
           "fp32": "float32", "float32": "float32"}


def resolve_device(preference: str | None = None) -> torch.device:
    import torch

    choice = preference or settings.device_preference()
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(device: torch.device, preference: str | None = None) -> torch.dtype:
    """fp16 on CUDA (halves memory, the usual choice for SD), fp32 elsewhere (CPU half is slow)."""
    import torch

    choice = preference or settings.dtype_preference()
    if choice:
        if choice not in _DTYPES:
            raise ValueError(f"Unknown dtype {choice!r}; use one of {sorted(_DTYPES)}")
        return getattr(torch, _DTYPES[choice])
    return torch.float16 if device.type == "cuda" else torch.float32


def describe(device: torch.device, dtype: torch.dtype) -> str:
    return f"{device.type} {str(dtype).removeprefix('torch.')}"


def attention_backend() -> str:
    """Name of the scaled-dot-product attention backend in use, recorded with every run."""
    import torch

    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return "torch-sdpa"
    return "eager"


def bf16_supported(device: Any) -> bool:
    """Whether bf16 autocast pays off on `device`: a CUDA GPU with native bf16 (compute capability ≥ 8.0: Ampere,
    Ada, Hopper), or a CPU with native bf16 (AVX-512 BF16 / AMX); elsewhere it is emulated and slower (a T4 is 7.5:
    there fp16 is the half precision to use). The one check every CPU/GPU trainer uses.

    `torch.cuda.is_bf16_supported()` alone is not enough: it also says True where bf16 is only emulated."""
    import torch

    device = torch.device(device) if isinstance(device, str) else device
    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        if not torch.cuda.is_available():
            return False
        index = getattr(device, "index", None)
        major, _ = torch.cuda.get_device_capability(torch.cuda.current_device() if index is None else index)
        return major >= 8
    if kind != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
