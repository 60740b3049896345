"""The Decision Transformer's action loss, the one definition every training path uses."""

from __future__ import annotations

import torch


def action_loss(preds: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared action error over real (unpadded) steps, without host synchronisation.

    Args:
        preds: predicted actions float [B, K, A] (any float dtype; the loss is computed in float32).
        actions: target actions float32 [B, K, A].
        mask: 1 at real steps, 0 at padding, float [B, K].

    Returns:
        float32 scalar: the squared error averaged over action dimensions, then over real steps.
    """
    err = ((preds.float() - actions) ** 2).mean(-1)  # (B, K)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)
