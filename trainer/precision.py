"""Mixed precision and accelerator memory for training and evaluation."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any


def autocast_dtype(setting: str, device: str) -> Any:
    """The torch dtype the forward passes autocast to, or None for full precision."""
    import torch

    cuda = device.startswith("cuda")
    if setting == "off" or (setting == "auto" and not cuda):
        return None
    if setting == "fp16" and not cuda:
        raise ValueError("AION_TRAIN_AUTOCAST=fp16 needs CUDA (it relies on loss scaling); use bf16 or off on CPU")
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


@contextlib.contextmanager
def autocast(device: str, dtype: Any) -> Iterator[None]:
    """Run the enclosed forward passes in `dtype` where it is safe (torch.autocast); no-op for None."""
    if dtype is None:
        yield
        return
    import torch

    with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
        yield


def grad_scaler(device: str, dtype: Any) -> Any:
    """Loss scaling for fp16 (whose small gradients underflow); a disabled scaler otherwise."""
    import torch

    return torch.amp.GradScaler(device.split(":")[0], enabled=dtype == torch.float16)


def release_memory() -> None:
    """Between jobs: free what the last job's model and optimizer held, on the GPU too."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
