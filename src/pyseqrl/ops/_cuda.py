"""Access to the compiled CUDA entry points (``pyseqrl._core.cuda``), when they exist."""

from __future__ import annotations

from types import ModuleType

import torch

from pyseqrl._native import core as _core

DTYPE_CODES: dict[torch.dtype, int] = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def compiled_with_cuda() -> bool:
    """Whether ``pyseqrl._core`` was built with the CUDA kernels (``PYSEQRL_CUDA=AUTO|ON`` and nvcc found)."""
    return bool(getattr(_core, "with_cuda", False)) and hasattr(_core, "cuda")


def cuda_kernels_available() -> bool:
    """Whether the CUDA kernels can run here: compiled in and a CUDA device visible to torch."""
    return compiled_with_cuda() and torch.cuda.is_available()


def kernels() -> ModuleType:
    """The ``pyseqrl._core.cuda`` submodule; RuntimeError with the fix when it was not compiled."""
    if not compiled_with_cuda():
        raise RuntimeError(
            "pyseqrl was built without its CUDA kernels (pyseqrl._core.with_cuda is False). Rebuild with nvcc on "
            "PATH: PYSEQRL_CUDA=ON pip install --no-build-isolation -ve ."
        )
    return _core.cuda


def stream_handle(device: torch.device) -> int:
    """The raw cudaStream_t of torch's current stream on ``device``, as an integer."""
    return int(torch.cuda.current_stream(device).cuda_stream)


def device_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()
