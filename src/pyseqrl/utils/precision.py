"""The training precision rule of every trainer: fp32, or bf16 autocast where the hardware has bf16 matmuls.

Under bf16 autocast the matmuls run in bf16 while weights, optimizer state, losses and checkpoints stay fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "auto"]


def bf16_supported(device: torch.device) -> bool:
    """bf16 matmuls in hardware: a CUDA device that supports them, or a CPU with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_bf16(precision: str, device: torch.device) -> bool:
    """Whether to train under bf16 autocast: ``"bf16"`` requires hardware support (ValueError without it),
    ``"auto"`` uses it where supported, ``"fp32"`` never."""
    if precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {precision!r}")
    supported = bf16_supported(device)
    if precision == "bf16" and not supported:
        raise ValueError(
            f"precision 'bf16' needs bf16 support on {device.type}; this "
            f"{'GPU' if device.type == 'cuda' else 'CPU'} has none (use 'fp32' or 'auto')"
        )
    use = precision == "bf16" or (precision == "auto" and supported)
    log.info("training precision: %s", "bf16 autocast" if use else "fp32")
    return use
