"""Dropout whose CPU keep-mask comes from the native core.

torch draws a CPU dropout mask one Bernoulli variate at a time from a Mersenne Twister, about 8 ns per element on
one core; in the 128 x 3 Decision Transformer that is ~22% of a bf16 training step. :func:`dropout` draws the mask
with :func:`pyseqrl._core.dropout_keep_mask` (a counter-based generator, ~0.8 ns per element) seeded from torch's
default generator, so ``torch.manual_seed`` and a restored RNG state reproduce it exactly. On other devices it is
``torch.nn.functional.dropout`` (CUDA's Philox dropout is already fast, and graph-capturable).

The statistics are those of dropout: each element is kept with probability ``1 - p`` (to within 2^-32) and kept
elements are scaled by ``1 / (1 - p)``; only the random stream differs from torch's.

:func:`use_native_dropout` swaps a model's ``nn.Dropout`` modules for :class:`Dropout`; the Decision Transformer
does it for its backbone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyseqrl._native import core

__all__ = ["Dropout", "dropout", "use_native_dropout"]

_SEED_BOUND = 2**63 - 1


def _keep_mask(shape: torch.Size, keep_prob: float, seed: int) -> torch.Tensor:
    mask = torch.empty(shape, dtype=torch.uint8)
    core.dropout_keep_mask(mask.view(-1).numpy(), keep_prob, seed)
    return mask


class _NativeDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        seed = int(torch.randint(0, _SEED_BOUND, (), dtype=torch.int64).item())
        mask = _keep_mask(x.shape, 1.0 - p, seed)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        return x * mask * ctx.scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with the native keep-mask for CPU tensors (see the module docstring)."""
    _check_probability(p)
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p == 1.0 or not x.is_floating_point():
        return F.dropout(x, p, training)
    return _NativeDropout.apply(x, float(p))


class Dropout(nn.Module):
    """``nn.Dropout`` (same ``p`` attribute, no parameters) using :func:`dropout`."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        _check_probability(p)
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_native_dropout(module: nn.Module) -> int:
    """Replace every ``nn.Dropout`` inside ``module`` with :class:`Dropout` of the same ``p``; returns how many.

    The model's parameters, state dict and outputs in eval mode are unchanged. In-place dropouts are replaced by
    out-of-place ones (same values).
    """
    swapped = 0
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
                swapped += 1
    return swapped
