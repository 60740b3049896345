"""Decision-Transformer batches gathered on the GPU from a device-resident copy of the dataset.

:class:`GPUSegmentSampler` produces the same stream as :class:`pyseqrl.SegmentSampler` (batch ``b`` of seed ``s``
is identical, bit for bit), but the dataset lives on the GPU and one kernel launch (csrc/kernels/segment_gather.cu)
writes a whole batch: no host work, no host-to-device copy per step. The batch index is a device scalar advanced
by a captured increment, so :meth:`GPUSegmentSampler.sample_into` can be replayed inside a CUDA graph.

Without a GPU (or without the compiled kernels) it wraps the CPU sampler and hands over torch tensors, so code
written against it runs anywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

import pyseqrl
from pyseqrl.ops import _cuda

logger = logging.getLogger(__name__)

__all__ = ["GPUSegmentSampler"]


class GPUSegmentSampler:
    """SegmentSampler batches as torch tensors, gathered on ``device`` by a CUDA kernel when possible.

    Batches are dicts of tensors: ``states`` float32 [B,K,S], ``actions`` float32 [B,K,A], ``rewards`` float32
    [B,K,1], ``returns_to_go`` float32 [B,K,1], ``timesteps`` int64 [B,K], ``attention_mask`` float32 [B,K] --
    exactly :meth:`pyseqrl.SegmentSampler.sample` (same seed, same batch index, same values).

    Args:
        dataset: a :class:`pyseqrl.data.EpisodeDataset`.
        device: where batches are produced. A CUDA device uses the gather kernel; anything else the CPU sampler.
        **options: the sampling options of :class:`pyseqrl.SegmentSampler` (``context_len``, ``batch_size``,
            ``seed``, ``return_scale``, ``gamma``, ``max_ep_len``, ``state_mean``, ``state_std``, ``sample_by``,
            ``pad_action``, ``padding``), with the same defaults and checks.

    Example:
        >>> sampler = GPUSegmentSampler(dataset, context_len=20, batch_size=256, device="cuda")
        >>> batch = sampler.sample()          # tensors on the GPU, nothing done on the host
        >>> batch["states"].shape
        torch.Size([256, 20, 17])
    """

    def __init__(self, dataset: Any, *, device: str | torch.device = "cuda", **options: Any):
        self.device = torch.device(device)
        # The CPU sampler validates every option (and the dataset's values) once; it is also the fallback, and
        # the settings below are read back from it.
        self._cpu = pyseqrl.SegmentSampler(dataset, **{**options, "prefetch": 0})
        cpu = self._cpu
        self.context_len, self.batch_size, self.seed = cpu.context_len, cpu.batch_size, cpu.seed
        self.state_dim, self.action_dim = int(dataset.observation_dim), int(dataset.action_dim)
        self.on_gpu = self.device.type == "cuda" and _cuda.cuda_kernels_available()
        if self.device.type == "cuda" and not self.on_gpu:
            raise RuntimeError(
                f"GPUSegmentSampler(device={self.device}): the CUDA gather kernel is unavailable "
                f"(torch.cuda.is_available()={torch.cuda.is_available()}, "
                f"compiled with CUDA={_cuda.compiled_with_cuda()}); pass device='cpu' to use the CPU sampler"
            )
        if not self.on_gpu:
            return

        S = self.state_dim
        dev = self.device
        f32 = {"device": dev, "dtype": torch.float32}
        self._obs = torch.as_tensor(np.ascontiguousarray(dataset.observations, np.float32)).to(**f32)  # (N, S)
        self._act = torch.as_tensor(np.ascontiguousarray(dataset.actions, np.float32)).to(**f32)  # (N, A)
        rewards = np.ascontiguousarray(dataset.rewards, np.float32)
        ends = np.ascontiguousarray(dataset.episode_ends, np.int64)
        self._rew = torch.as_tensor(rewards).to(**f32)  # (N,)
        # Same native routine (and float32 result) as the CPU sampler's return-to-go.
        self._rtg = torch.as_tensor(pyseqrl.returns_to_go(rewards, ends, cpu.gamma)).to(**f32)  # (N,)
        self._ends = torch.as_tensor(ends).to(device=dev)  # (E,)
        self._mean = self._inv_std = None
        if cpu.state_mean is not None:
            mean, std = cpu.state_mean, cpu.state_std
            if mean.shape != (S,) or std.shape != (S,):
                raise ValueError(f"state_mean/state_std: expected shape ({S},), got {mean.shape} and {std.shape}")
            self._mean = torch.as_tensor(mean).to(**f32)
            self._inv_std = torch.as_tensor(np.float32(1.0) / std).to(**f32)  # 1/std in float32, as the core
        self._scalars = {
            "N": int(self._obs.shape[0]),
            "S": S,
            "A": self.action_dim,
            "E": int(self._ends.shape[0]),
            "batch_size": self.batch_size,
            "context_len": self.context_len,
            "max_ep_len": cpu.max_ep_len,
            "seed": self.seed,
            "sample_by_length": cpu.sample_by == "length",
            "inv_return_scale": float(np.float32(1.0 / cpu.return_scale)),
            "pad_action": cpu.pad_action,
            "pad_right": cpu.padding == "right",
        }
        self._index = torch.zeros((), dtype=torch.int64, device=dev)  # next batch of the stream
        logger.info(
            "GPUSegmentSampler: %d steps, %d episodes resident on %s (%.1f MB)",
            self._scalars["N"],
            self._scalars["E"],
            dev,
            sum(t.numel() * t.element_size() for t in (self._obs, self._act, self._rew, self._rtg, self._ends)) / 1e6,
        )

    # ------------------------------------------------------------------ batches
    def empty_batch(self) -> dict[str, torch.Tensor]:
        """Uninitialised tensors with the shapes and dtypes of one batch, on ``device`` (targets of sample_into)."""
        B, K, S, A = self.batch_size, self.context_len, self.state_dim, self.action_dim
        kw = {"device": self.device, "dtype": torch.float32}
        return {
            "states": torch.empty(B, K, S, **kw),
            "actions": torch.empty(B, K, A, **kw),
            "rewards": torch.empty(B, K, 1, **kw),
            "returns_to_go": torch.empty(B, K, 1, **kw),
            "timesteps": torch.empty(B, K, dtype=torch.int64, device=self.device),
            "attention_mask": torch.empty(B, K, **kw),
        }

    def _gather(self, index: torch.Tensor, out: dict[str, torch.Tensor]) -> None:
        _cuda.kernels().segment_gather(
            observations=self._obs.data_ptr(),
            actions=self._act.data_ptr(),
            rewards=self._rew.data_ptr(),
            rtg=self._rtg.data_ptr(),
            episode_ends=self._ends.data_ptr(),
            state_mean=0 if self._mean is None else self._mean.data_ptr(),
            state_inv_std=0 if self._inv_std is None else self._inv_std.data_ptr(),
            batch_index=index.data_ptr(),
            out_states=out["states"].data_ptr(),
            out_actions=out["actions"].data_ptr(),
            out_rewards=out["rewards"].data_ptr(),
            out_rtg=out["returns_to_go"].data_ptr(),
            out_timesteps=out["timesteps"].data_ptr(),
            out_mask=out["attention_mask"].data_ptr(),
            stream=_cuda.stream_handle(self.device),
            device=_cuda.device_index(self.device),
            **self._scalars,
        )

    def _check_out(self, out: dict[str, torch.Tensor]) -> None:
        for name, ref in self.empty_batch().items():
            t = out.get(name)
            if t is None or t.shape != ref.shape or t.dtype != ref.dtype or t.device != ref.device:
                got = None if t is None else f"{tuple(t.shape)} {t.dtype} on {t.device}"
                raise ValueError(f"out[{name!r}]: expected {tuple(ref.shape)} {ref.dtype} on {ref.device}, got {got}")
            if not t.is_contiguous():
                raise ValueError(f"out[{name!r}]: expected a contiguous tensor")

    def sample_into(self, out: dict[str, torch.Tensor]) -> None:
        """Write the next batch into ``out`` (from :meth:`empty_batch`) and advance the stream; capturable."""
        if not self.on_gpu:
            for name, arr in self._cpu.sample().items():
                out[name].copy_(torch.from_numpy(arr))
            return
        self._check_out(out)
        self._gather(self._index, out)
        self._index.add_(1)

    def sample(self) -> dict[str, torch.Tensor]:
        """The next batch of the stream, as new tensors on ``device``."""
        if not self.on_gpu:
            return {k: torch.from_numpy(v).to(self.device) for k, v in self._cpu.sample().items()}
        out = self.empty_batch()
        self._gather(self._index, out)
        self._index.add_(1)
        return out

    def batch_at(self, index: int) -> dict[str, torch.Tensor]:
        """Batch ``index`` of the stream; does not move the stream."""
        if not self.on_gpu:
            return {k: torch.from_numpy(v).to(self.device) for k, v in self._cpu.batch_at(int(index)).items()}
        out = self.empty_batch()
        self._gather(torch.tensor(int(index), dtype=torch.int64, device=self.device), out)
        return out

    def __iter__(self):
        while True:
            yield self.sample()

    # ------------------------------------------------------------------ resume
    @property
    def position(self) -> int:
        """Index of the next batch (reading it synchronises with the GPU)."""
        return int(self._index.item()) if self.on_gpu else self._cpu.position

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"sampler state: seed {state.get('seed')!r} does not match this sampler's {self.seed}")
        if self.on_gpu:
            self._index.fill_(int(state["position"]))
        else:
            self._cpu.load_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"GPUSegmentSampler(device={self.device}, on_gpu={self.on_gpu}, context_len={self.context_len}, "
            f"batch_size={self.batch_size}, seed={self.seed}, padding={self._cpu.padding!r})"
        )
