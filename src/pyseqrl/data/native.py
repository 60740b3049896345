"""Typed Python facades of the native data core: ``returns_to_go``, ``SegmentSampler`` and ``ReplayBuffer``.

The heavy lifting happens in C++ (csrc/core); these classes validate arguments once, hand the core the flat
arrays of a dataset (it borrows them, no copy), and add what is easier in Python (saving, loading, torch
hand-off). They read datasets through the :class:`EpisodeArrays` protocol, which
:class:`~pyseqrl.data.EpisodeDataset` implements, so this module does not depend on the dataset module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pyseqrl._native import core as _core

__all__ = ["EpisodeArrays", "returns_to_go", "SegmentSampler", "ReplayBuffer"]


@runtime_checkable
class EpisodeArrays(Protocol):
    """What the native core reads of a dataset: flat transition arrays and episode boundaries
    (:class:`~pyseqrl.data.EpisodeDataset` is one)."""

    observations: np.ndarray  # float32 [N, S]
    actions: np.ndarray  # float32 [N, A]
    rewards: np.ndarray  # float32 [N]
    episode_ends: np.ndarray  # int64 [E], exclusive end of each episode


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Per-episode discounted return-to-go over a flat reward array.

    ``out[t] = sum_{u=t}^{end-1} gamma**(u-t) * rewards[u]`` within each episode; accumulated in float64, returned
    as float32, computed in parallel over episodes.

    Args:
        rewards: float32 [N], all episodes back to back.
        episode_ends: int64 [E], exclusive end offset of each episode; strictly increasing, the last equals N.
        gamma: discount in [0, 1].

    Returns:
        float32 [N].

    Example:
        >>> returns_to_go(np.array([1, 1, 1, 2], np.float32), np.array([3, 4]))
        array([3., 2., 1., 2.], dtype=float32)
    """
    return _core.returns_to_go(rewards, episode_ends, float(gamma))


class SegmentSampler:
    """Decision-Transformer batches of K-step windows, drawn natively with background prefetch.

    Each call to :meth:`sample` returns a dict of numpy arrays named like the inputs of Hugging Face's
    ``DecisionTransformerModel``: ``states`` float32 [B,K,S] (normalised when ``state_mean``/``state_std`` are
    given), ``actions`` float32 [B,K,A], ``rewards`` float32 [B,K,1], ``returns_to_go`` float32 [B,K,1] (divided by
    ``return_scale``), ``timesteps`` int64 [B,K] (clipped to ``max_ep_len - 1``) and ``attention_mask`` float32
    [B,K] (1 real, 0 padding). Windows shorter than K (near an episode's end) are padded like the original DT
    pipeline: states ``(0 - mean) / std``, actions ``pad_action`` (-10), everything else 0. The padding goes before
    the real steps by default, as in the DT paper; ``padding="right"`` puts the real steps first, so that a causal
    attention mask alone hides the padding (``DecisionTransformer(..., padding="right")`` then runs attention with
    no mask tensor, which lets fused flash/cuDNN kernels run on a GPU).

    Batch ``b`` depends only on ``(seed, b)``: the same seed gives the same batches with any thread count, and
    :meth:`state_dict` / :meth:`load_state_dict` resume the stream exactly.

    Args:
        dataset: an :class:`~pyseqrl.data.EpisodeDataset`.
        context_len: K, steps per window.
        batch_size: B, windows per batch.
        seed: stream seed.
        return_scale: returns-to-go are divided by this.
        gamma: discount of the return-to-go (1.0 as in DT).
        max_ep_len: timesteps are clipped to ``max_ep_len - 1``.
        state_mean, state_std: float32 [S] normalisation statistics, or None for raw states.
        sample_by: ``"length"`` (episodes with probability proportional to length, as DT) or ``"uniform"``.
        pad_action: value of padded actions.
        padding: ``"left"`` (padding before the real steps, as DT) or ``"right"`` (real steps first).
        prefetch: batches prepared ahead by a background thread (0 disables it).
        num_threads: threads filling one batch (1 is right for small batches).

    Example:
        >>> sampler = SegmentSampler(dataset, context_len=20, batch_size=64, seed=0)
        >>> batch = sampler.sample()
        >>> batch["states"].shape
        (64, 20, 17)
    """

    def __init__(
        self,
        dataset: EpisodeArrays,
        context_len: int = 20,
        batch_size: int = 64,
        seed: int = 0,
        return_scale: float = 1000.0,
        gamma: float = 1.0,
        max_ep_len: int = 1000,
        state_mean: np.ndarray | None = None,
        state_std: np.ndarray | None = None,
        sample_by: str = "length",
        pad_action: float = -10.0,
        padding: str = "left",
        prefetch: int = 2,
        num_threads: int = 1,
    ):
        if not isinstance(dataset, EpisodeArrays):
            raise TypeError(
                "dataset: expected an EpisodeDataset (observations, actions, rewards and episode_ends arrays), "
                f"got {type(dataset).__name__}"
            )
        if sample_by not in ("length", "uniform"):
            raise ValueError(f"sample_by: expected 'length' or 'uniform', got {sample_by!r}")
        if padding not in ("left", "right"):
            raise ValueError(f"padding: expected 'left' or 'right', got {padding!r}")
        for name, v in (("context_len", context_len), ("batch_size", batch_size), ("max_ep_len", max_ep_len)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        if num_threads < 1:
            raise ValueError(f"num_threads: expected >= 1, got {num_threads}")

        def stat(name: str, v: np.ndarray | None) -> np.ndarray | None:
            return None if v is None else np.ascontiguousarray(np.asarray(v, dtype=np.float32).reshape(-1))

        self.dataset = dataset
        self.return_scale = float(return_scale)
        self.gamma = float(gamma)
        self.max_ep_len = int(max_ep_len)
        self.sample_by = sample_by
        self.padding = padding
        self.pad_action = float(pad_action)
        self.state_mean = stat("state_mean", state_mean)
        self.state_std = stat("state_std", state_std)
        self._native = _core.SegmentSampler(
            dataset.observations,
            dataset.actions,
            dataset.rewards,
            dataset.episode_ends,
            self.state_mean,
            self.state_std,
            context_len=int(context_len),
            batch_size=int(batch_size),
            seed=int(seed),
            return_scale=self.return_scale,
            gamma=self.gamma,
            max_ep_len=self.max_ep_len,
            sample_by_length=sample_by == "length",
            pad_action=float(pad_action),
            pad_right=padding == "right",
            prefetch=int(prefetch),
            num_threads=int(num_threads),
        )
        # hot path: bind the native methods directly
        self.sample = self._native.sample  # type: ignore[method-assign]
        self.sample_into = self._native.sample_into  # type: ignore[method-assign]

    def sample(self) -> dict[str, np.ndarray]:  # replaced per instance by the native method
        """The next batch of the stream."""
        return self._native.sample()

    def sample_into(self, out: dict[str, np.ndarray]) -> None:  # replaced per instance by the native method
        """Write the next batch into preallocated C-contiguous arrays with the shapes/dtypes of :meth:`sample`."""
        self._native.sample_into(out)

    def batch_at(self, index: int) -> dict[str, np.ndarray]:
        """Batch ``index`` of the stream computed directly; does not move the stream."""
        return self._native.batch_at(index)

    def draws(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode index [B], start offset within the episode [B]) of each row of batch ``index``."""
        return self._native.draws(index)

    @property
    def context_len(self) -> int:
        return self._native.context_len

    @property
    def batch_size(self) -> int:
        return self._native.batch_size

    @property
    def seed(self) -> int:
        return self._native.seed

    @property
    def position(self) -> int:
        """Index of the next batch :meth:`sample` returns."""
        return self._native.position

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"sampler state: seed {state.get('seed')!r} does not match this sampler's {self.seed}")
        self._native.position = int(state["position"])

    def empty_batch(self) -> dict[str, np.ndarray]:
        """Zeroed arrays with the shapes and dtypes of one batch (targets for :meth:`sample_into`)."""
        B, K, S, A = self.batch_size, self.context_len, self._native.state_dim, self._native.action_dim
        return {
            "states": np.zeros((B, K, S), np.float32),
            "actions": np.zeros((B, K, A), np.float32),
            "rewards": np.zeros((B, K, 1), np.float32),
            "returns_to_go": np.zeros((B, K, 1), np.float32),
            "timesteps": np.zeros((B, K), np.int64),
            "attention_mask": np.zeros((B, K), np.float32),
        }

    def __iter__(self):
        while True:
            yield self.sample()

    def __repr__(self) -> str:
        return (
            f"SegmentSampler(episodes={self._native.num_episodes}, steps={len(self.dataset.rewards)}, "
            f"context_len={self.context_len}, batch_size={self.batch_size}, seed={self.seed}, "
            f"sample_by={self.sample_by!r}, padding={self.padding!r}, prefetch={self._native.prefetch})"
        )


_RB_FORMAT = "pyseqrl.ReplayBuffer/1"


class ReplayBuffer(_core.ReplayBuffer):
    """A native ring buffer of transitions with uniform or prioritized (sum-tree) sampling.

    ``add`` takes a batch of n transitions, as one vectorised-environment step yields them; ``sample`` returns a
    dict with ``observations``, ``actions``, ``rewards``, ``next_observations`` and ``terminals`` (float32; plus
    ``indices`` and ``weights`` when prioritized). Adding from one thread while another samples is safe. ``save`` /
    ``load`` restore the contents and the sampling RNG exactly.

    Args:
        capacity: maximum number of transitions; the oldest are overwritten.
        obs_shape: shape of one observation, e.g. ``(17,)``.
        action_shape: shape of one action, e.g. ``(6,)``.
        seed: seed of the sampling RNG.
        prioritized: proportional prioritized replay (Schaul et al. 2016).
        alpha, beta, eps: priority exponent, importance-weight exponent, priority offset.

    Example:
        >>> rb = ReplayBuffer(1000, obs_shape=(3,), action_shape=(1,), seed=0)
        >>> rb.add(np.zeros((4, 3)), np.zeros((4, 1)), np.ones(4), np.zeros((4, 3)), np.zeros(4, bool))
        >>> rb.sample(2)["rewards"]
        array([1., 1.], dtype=float32)
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...] | int,
        action_shape: tuple[int, ...] | int,
        seed: int = 0,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta: float = 0.4,
        eps: float = 1e-6,
    ):
        obs_shape = (obs_shape,) if isinstance(obs_shape, (int, np.integer)) else tuple(obs_shape)
        action_shape = (action_shape,) if isinstance(action_shape, (int, np.integer)) else tuple(action_shape)
        if not isinstance(capacity, (int, np.integer)) or isinstance(capacity, bool):
            raise ValueError(f"capacity: expected a positive integer, got {capacity!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        super().__init__(int(capacity), obs_shape, action_shape, int(seed), bool(prioritized), alpha, beta, eps)

    def add_dataset(self, dataset: Any) -> int:
        """Add every transition of an EpisodeDataset (see ``EpisodeDataset.transitions``); returns how many."""
        t = dataset.transitions()
        n = len(t["rewards"])
        if n:
            self.add(t["observations"], t["actions"], t["rewards"], t["next_observations"], t["terminals"])
        return n

    def state_dict(self) -> dict[str, Any]:
        """Contents, position and RNG state (numpy arrays), enough to resume exactly."""
        state = self.get_state()
        state.update(
            format=_RB_FORMAT,
            capacity=self.capacity,
            obs_shape=self.obs_shape,
            action_shape=self.action_shape,
            seed=self.seed,
            prioritized=self.prioritized,
            alpha=self.alpha,
            beta=self.beta,
            eps=self.eps,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("capacity", "obs_shape", "action_shape", "prioritized"):
            if key in state and _plain(state[key]) != _plain(getattr(self, key)):
                raise ValueError(
                    f"replay buffer state: {key} is {_plain(state[key])!r} but this buffer has "
                    f"{_plain(getattr(self, key))!r}"
                )
        self.set_state(state)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ReplayBuffer:
        try:
            rb = cls(
                int(state["capacity"]),
                tuple(int(x) for x in state["obs_shape"]),
                tuple(int(x) for x in state["action_shape"]),
                seed=int(state["seed"]),
                prioritized=bool(state["prioritized"]),
                alpha=float(state["alpha"]),
                beta=float(state["beta"]),
                eps=float(state["eps"]),
            )
        except KeyError as e:
            raise ValueError(f"replay buffer state: missing key {e.args[0]!r}") from None
        rb.set_state(state)
        return rb

    def save(self, path: str | os.PathLike) -> Path:
        """Write the buffer to an ``.npz`` file atomically (contents + RNG)."""
        from pyseqrl.utils.checkpoint import atomic_write

        state = self.state_dict()
        arrays: dict[str, Any] = {k: np.asarray(v) for k, v in state.items()}
        return atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ReplayBuffer:
        """Read a buffer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"replay buffer file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except Exception as e:
            raise ValueError(f"replay buffer file {str(path)!r} is corrupt or not an .npz file: {e}") from e
        if str(state.get("format", "")) != _RB_FORMAT:
            raise ValueError(f"{str(path)!r} is not a pyseqrl replay buffer file (format {state.get('format')!r})")
        state = {k: (v.item() if v.ndim == 0 else v) for k, v in state.items()}
        return cls.from_state_dict(state)

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(size={len(self)}, capacity={self.capacity}, obs_shape={self.obs_shape}, "
            f"action_shape={self.action_shape}, prioritized={self.prioritized})"
        )


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist() if v.ndim else v.item()
    if isinstance(v, tuple):
        return list(v)
    return v
