"""SegmentSampler batches as torch tensors.

On the CPU the tensors share memory with the sampler's numpy batches (no copy). For a CUDA device, batches are
written straight into a ring of pinned host buffers (``sample_into``) and copied to the device asynchronously,
so each batch crosses memory exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from pyseqrl.data.native import SegmentSampler


def torch_batches(
    sampler: SegmentSampler, device: str | torch.device = "cpu", pin_memory: bool | None = None, ring: int = 3
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield batches of ``sampler`` as dicts of torch tensors, forever.

    Args:
        sampler: a :class:`~pyseqrl.data.SegmentSampler`.
        device: where the tensors live.
        pin_memory: stage batches in pinned host memory (default: True for CUDA devices).
        ring: number of pinned staging buffers (a buffer is reused only after ``ring - 1`` more batches, by
            which time its asynchronous copy has finished: each copy is synchronised before its buffer is refilled).

    Example:
        >>> batches = torch_batches(sampler, device="cpu")
        >>> batch = next(batches)
        >>> batch["states"].dtype
        torch.float32
    """
    import torch

    device = torch.device(device)
    if pin_memory is None:
        pin_memory = device.type == "cuda"
    if not pin_memory:
        while True:
            batch = {k: torch.from_numpy(v) for k, v in sampler.sample().items()}
            yield batch if device.type == "cpu" else {k: v.to(device) for k, v in batch.items()}
    if ring < 2:
        raise ValueError(f"ring: expected at least 2 staging buffers, got {ring}")
    template = sampler.empty_batch()
    staging = [{k: torch.from_numpy(v).pin_memory() for k, v in template.items()} for _ in range(ring)]
    events: list = [None] * ring
    i = 0
    while True:
        slot = staging[i]
        if events[i] is not None:
            events[i].synchronize()  # the previous copy out of this buffer has finished
        sampler.sample_into({k: t.numpy() for k, t in slot.items()})
        out = {k: t.to(device, non_blocking=True) for k, t in slot.items()}
        if device.type == "cuda":
            events[i] = torch.cuda.Event()
            events[i].record()
        yield out
        i = (i + 1) % ring
