"""A Decision-Transformer training step (sample, forward, backward, clip, optimizer) replayed as one CUDA graph.

Small DTs are bound by kernel launches and host work, not arithmetic. :class:`TrainStep` runs the whole step with
no host synchronisation -- the batch comes from :class:`~pyseqrl.ops.gpu_sampler.GPUSegmentSampler`, the
learning-rate warmup is computed on the device, the optimizer is a capturable AdamW -- so it can be captured once
and replayed with a single launch per step. :meth:`TrainStep.eager` runs the very same code without the graph and
is the reference (tests compare the two; bench/bench_gpu_dt.py times them).

    step = TrainStep(loss_fn=lambda b: dt_action_loss(model, b), params=list(model.parameters()),
                     optimizer=make_capturable_adamw(model, lr=1e-4, weight_decay=1e-4),
                     sampler=GPUSegmentSampler(ds, context_len=20, batch_size=64), warmup_steps=10_000)
    step.capture()                 # a few eager warm-up steps, then the capture
    for _ in range(100_000):
        loss = step()              # one graph replay; ``loss`` is a device scalar (read it rarely)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from pyseqrl.models.losses import action_loss

logger = logging.getLogger(__name__)

__all__ = ["TrainStep", "dt_action_loss", "make_capturable_adamw", "set_warmup_lr", "use_pyseqrl_attention"]


def dt_action_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], padding: str = "left") -> torch.Tensor:
    """:func:`pyseqrl.models.losses.action_loss` of ``model`` on ``batch``; no host synchronisation.

    Args:
        model: a DecisionTransformer: ``model(states, actions, returns_to_go, timesteps, attention_mask)`` ->
            action predictions float [B, K, A].
        batch: a SegmentSampler batch of tensors (see :class:`~pyseqrl.ops.gpu_sampler.GPUSegmentSampler`).
        padding: the sampler's padding; ``"right"`` lets attention run with no mask tensor (see
            :class:`~pyseqrl.models.DecisionTransformer`).

    Returns:
        float32 scalar tensor.
    """
    mask = batch["attention_mask"]  # (B, K)
    preds = model(
        batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"], mask, padding=padding
    )  # (B, K, A)
    return action_loss(preds, batch["actions"], mask)


def set_warmup_lr(
    optimizer: torch.optim.Optimizer, base_lrs: list[float], step: int | torch.Tensor, warmup_steps: int
) -> None:
    """Linear learning-rate warmup: optimizer step ``step`` (0-based) runs at ``lr * min(1, (step + 1) / warmup)``.

    ``step`` may be a device tensor: tensor learning rates (a capturable optimizer) are then updated in place on
    the device, so the schedule can live in a CUDA graph. ``warmup_steps`` <= 1 means the full rate at once.
    """
    if warmup_steps <= 1:
        factor: float | torch.Tensor = 1.0
    elif torch.is_tensor(step):
        factor = torch.clamp((step + 1.0) / warmup_steps, max=1.0)
    else:
        factor = min(1.0, (step + 1) / warmup_steps)
    for group, base in zip(optimizer.param_groups, base_lrs):
        if torch.is_tensor(group["lr"]):
            group["lr"].copy_(base * factor)
        else:
            group["lr"] = base * float(factor)


def make_capturable_adamw(
    model: torch.nn.Module,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW that can live in a CUDA graph: device-side step counts and a tensor learning rate.

    Weight decay applies to parameters with >= 2 dimensions only (the rule pyseqrl.algos.dt uses).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    capturable = device.type == "cuda"
    lr_value: float | torch.Tensor = torch.tensor(lr, device=device) if capturable else lr
    return torch.optim.AdamW(groups, lr=lr_value, betas=betas, capturable=capturable)


def use_pyseqrl_attention(model: torch.nn.Module) -> torch.nn.Module:
    """Switch a DecisionTransformer's backbone to the fused kernel (``attn_implementation="pyseqrl"``).

    The kernel takes the 2-D key padding mask (padded queries output zeros); outputs at real steps are those of
    the other implementations, and padded positions never reach the loss. Falls back to SDPA on the CPU.
    """
    import pyseqrl.ops.attention  # noqa: F401  (registers "pyseqrl" with transformers)

    model.lm.set_attn_implementation("pyseqrl")
    model.cfg.attn_implementation = "pyseqrl"
    return model


class TrainStep:
    """sample -> loss -> backward -> clip -> lr warmup -> optimizer step, eager or replayed from a CUDA graph.

    Args:
        loss_fn: batch dict -> scalar loss tensor, without host synchronisation (no ``.item()``, no boolean
            indexing).
        params: the parameters whose gradients are clipped.
        optimizer: built with ``capturable=True`` (see :func:`make_capturable_adamw`); a tensor ``lr`` is needed
            for ``warmup_steps > 0`` under a graph.
        sampler: has ``empty_batch()`` and ``sample_into(batch)`` (GPUSegmentSampler).
        grad_clip: max global gradient norm (0 disables clipping).
        warmup_steps: linear learning-rate warmup ``lr * min(1, (step + 1) / warmup_steps)``, computed on the
            device (0 disables it).
        base_lrs: the rates the warmup scales, one per parameter group (default: the groups' current ``lr``; pass
            them when resuming, since a restored optimizer holds warmed-up rates).
        start_step: steps already taken (a resumed run's step count).
    """

    def __init__(
        self,
        loss_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        params: list[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        sampler: Any,
        grad_clip: float = 0.25,
        warmup_steps: int = 0,
        base_lrs: list[float] | None = None,
        start_step: int = 0,
    ):
        self.loss_fn, self.params, self.optimizer, self.sampler = loss_fn, list(params), optimizer, sampler
        self.grad_clip, self.warmup_steps = float(grad_clip), int(warmup_steps)
        device = self.params[0].device
        self.batch = sampler.empty_batch()  # static input buffers
        self.loss = torch.zeros((), device=device)  # static outputs
        self.grad_norm = torch.zeros((), device=device)
        # steps taken, on the device (float for the schedule)
        self.step_count = torch.full((), float(start_step), device=device)
        if base_lrs is None:
            base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        if len(base_lrs) != len(optimizer.param_groups):
            raise ValueError(
                f"base_lrs: expected one rate per parameter group ({len(optimizer.param_groups)}), got {len(base_lrs)}"
            )
        self.base_lrs = [float(lr) for lr in base_lrs]
        tensor_lrs = all(torch.is_tensor(g["lr"]) for g in optimizer.param_groups)
        if self.warmup_steps > 0 and device.type == "cuda" and not tensor_lrs:
            raise ValueError("warmup_steps > 0 on a GPU needs tensor learning rates (make_capturable_adamw)")
        self.graph: torch.cuda.CUDAGraph | None = None

    def _step(self) -> None:
        self.sampler.sample_into(self.batch)
        loss = self.loss_fn(self.batch)
        loss.backward()
        if self.grad_clip > 0:
            self.grad_norm.copy_(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        if self.warmup_steps > 0:
            # a host float on the CPU reference path, in place on the device under a graph
            step = self.step_count if self.step_count.is_cuda else int(self.step_count)
            set_warmup_lr(self.optimizer, self.base_lrs, step, self.warmup_steps)
        self.optimizer.step()
        self.step_count.add_(1.0)
        self.loss.copy_(loss.detach())

    def eager(self) -> torch.Tensor:
        """One step without a graph (the reference). Returns the loss as a device scalar."""
        self.optimizer.zero_grad(set_to_none=True)
        self._step()
        return self.loss

    def capture(self, warmup_iters: int = 3) -> None:
        """Run ``warmup_iters`` eager steps on a side stream (real training steps), then capture one step."""
        if not torch.cuda.is_available() or self.params[0].device.type != "cuda":
            raise RuntimeError("TrainStep.capture needs the model on a CUDA device; use eager() on the CPU")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_iters):
                self.eager()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates the static .grad tensors
        with torch.cuda.graph(self.graph):
            self._step()
        logger.info("captured the training step in a CUDA graph after %d warm-up steps", warmup_iters)

    def __call__(self) -> torch.Tensor:
        """One step: a graph replay when captured, else :meth:`eager`."""
        if self.graph is None:
            return self.eager()
        self.graph.replay()
        return self.loss
