"""Device choice and mixed precision. V100s (compute capability 7.0) have no fast bf16: fp16
autocast with a grad scaler there; bf16 (no scaler needed) on Ampere and newer; none on CPU."""
from __future__ import annotations

import contextlib

import torch

from common.config import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device={name} but no CUDA GPU is visible; use run.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"run.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def set_cpu_threads(threads: int) -> None:
    """`run.cpu_threads`: 0 keeps torch's default (one thread per core)."""
    if threads > 0:
        torch.set_num_threads(threads)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for `device`, or None when mixed precision is off or pointless (CPU)."""
    if not enabled or device.type != "cuda":
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only; a disabled scaler is a no-op with the same API."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
