"""Plain numpy reference implementations of the native data core.

They define the semantics the C++ core must reproduce and are the baselines of bench/bench_data.py:

- :func:`discount_cumsum` and :func:`returns_to_go_loop`: the per-step Python loop of the original Decision
  Transformer code (gym/experiment.py).
- :func:`returns_to_go_numpy`: the fastest numpy version (vectorised within each episode).
- :func:`dt_get_batch`: DT's ``get_batch``, one window at a time, for given (episode, start) draws.
- :func:`segment_batch_numpy`: the same batch built with vectorised numpy gathers.
- :class:`NumpyReplayBuffer`: a numpy ring buffer.
"""

from __future__ import annotations

import numpy as np


def discount_cumsum(x: np.ndarray, gamma: float) -> np.ndarray:
    """DT's discount_cumsum: reverse discounted cumulative sum of one episode (float64 accumulation)."""
    out = np.zeros(x.shape[0], np.float64)
    out[-1] = x[-1]
    for t in reversed(range(x.shape[0] - 1)):
        out[t] = x[t] + gamma * out[t + 1]
    return out


def returns_to_go_loop(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Return-to-go with DT's per-step Python loop, episode by episode."""
    out = np.empty(rewards.shape[0], np.float32)
    start = 0
    for end in episode_ends:
        out[start:end] = discount_cumsum(rewards[start:end].astype(np.float64), gamma)
        start = end
    return out


def returns_to_go_numpy(rewards: np.ndarray, episode_ends: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Return-to-go vectorised within each episode: a reversed cumsum (gamma = 1) or, for gamma < 1, the
    linear filter ``y[t] = r[t] + gamma * y[t+1]`` of scipy.signal.lfilter (the rllab/Spinning Up idiom)."""
    r = rewards.astype(np.float64)
    out = np.empty(r.shape[0], np.float32)
    start = 0
    if gamma != 1.0:
        from scipy.signal import lfilter
    for end in episode_ends:
        ep = r[start:end]
        if gamma == 1.0:
            out[start:end] = np.cumsum(ep[::-1])[::-1]
        else:
            out[start:end] = lfilter([1.0], [1.0, -gamma], ep[::-1])[::-1]
        start = end
    return out


def dt_get_batch(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    episode_ends: np.ndarray,
    episodes: np.ndarray,
    starts: np.ndarray,
    K: int,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    scale: float,
    max_ep_len: int = 1000,
    gamma: float = 1.0,
) -> dict[str, np.ndarray]:
    """The original DT ``get_batch`` loop (gym/experiment.py), for the given draws of (episode, start)."""
    starts_of = np.concatenate([[0], episode_ends[:-1]])
    S, A = observations.shape[1], actions.shape[1]
    s, a, r, rtg, timesteps, mask = [], [], [], [], [], []
    for ep, si in zip(episodes, starts):
        lo, hi = starts_of[ep], episode_ends[ep]
        traj_obs, traj_act, traj_rew = observations[lo:hi], actions[lo:hi], rewards[lo:hi]
        s.append(traj_obs[si : si + K].reshape(1, -1, S))
        a.append(traj_act[si : si + K].reshape(1, -1, A))
        r.append(traj_rew[si : si + K].reshape(1, -1, 1))
        timesteps.append(np.arange(si, si + s[-1].shape[1]).reshape(1, -1))
        timesteps[-1][timesteps[-1] >= max_ep_len] = max_ep_len - 1
        rtg.append(discount_cumsum(traj_rew[si:], gamma)[: s[-1].shape[1] + 1].reshape(1, -1, 1))
        if rtg[-1].shape[1] <= s[-1].shape[1]:
            rtg[-1] = np.concatenate([rtg[-1], np.zeros((1, 1, 1))], axis=1)
        tlen = s[-1].shape[1]
        s[-1] = np.concatenate([np.zeros((1, K - tlen, S)), s[-1]], axis=1)
        s[-1] = (s[-1] - state_mean) / state_std
        a[-1] = np.concatenate([np.ones((1, K - tlen, A)) * -10.0, a[-1]], axis=1)
        r[-1] = np.concatenate([np.zeros((1, K - tlen, 1)), r[-1]], axis=1)
        rtg[-1] = np.concatenate([np.zeros((1, K - tlen, 1)), rtg[-1]], axis=1) / scale
        timesteps[-1] = np.concatenate([np.zeros((1, K - tlen)), timesteps[-1]], axis=1)
        mask.append(np.concatenate([np.zeros((1, K - tlen)), np.ones((1, tlen))], axis=1))
    return {
        "states": np.concatenate(s).astype(np.float32),
        "actions": np.concatenate(a).astype(np.float32),
        "rewards": np.concatenate(r).astype(np.float32),
        "returns_to_go": np.concatenate(rtg)[:, :-1].astype(np.float32),  # DT trains on rtg[:, :-1]
        "timesteps": np.concatenate(timesteps).astype(np.int64),
        "attention_mask": np.concatenate(mask).astype(np.float32),
    }


def segment_batch_numpy(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    rtg: np.ndarray,
    episode_ends: np.ndarray,
    episodes: np.ndarray,
    starts: np.ndarray,
    K: int,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    scale: float,
    max_ep_len: int = 1000,
    padding: str = "left",
) -> dict[str, np.ndarray]:
    """The same batch as :func:`dt_get_batch` with vectorised numpy gathers (``rtg`` precomputed once, [N]).

    ``padding="right"`` puts the real steps of each window first and the padding after them (same values).
    """
    starts_of = np.concatenate([[0], episode_ends[:-1]])
    base = starts_of[episodes] + starts  # [B] first real step
    tlen = np.minimum(K, episode_ends[episodes] - base)  # [B]
    pad = K - tlen if padding == "left" else np.zeros_like(tlen)  # [B] position of the first real step
    k = np.arange(K)[None, :]  # [1, K]
    real = (k >= pad[:, None]) & (k < (pad + tlen)[:, None])  # [B, K]
    idx = np.where(real, base[:, None] + k - pad[:, None], 0)  # [B, K] dataset rows (0 where padded)
    states = np.where(real[..., None], observations[idx], 0.0)
    states = ((states - state_mean) / state_std).astype(np.float32)
    acts = np.where(real[..., None], actions[idx], -10.0).astype(np.float32)
    rews = np.where(real, rewards[idx], 0.0).astype(np.float32)[..., None]
    rtgs = (np.where(real, rtg[idx], 0.0) / scale).astype(np.float32)[..., None]
    ts = np.where(real, np.minimum(starts[:, None] + k - pad[:, None], max_ep_len - 1), 0).astype(np.int64)
    return {
        "states": states,
        "actions": acts,
        "rewards": rews,
        "returns_to_go": rtgs,
        "timesteps": ts,
        "attention_mask": real.astype(np.float32),
    }


class NumpyReplayBuffer:
    """A plain numpy ring buffer with uniform sampling (the baseline of the native ReplayBuffer)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seed: int = 0):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.actions = np.zeros((capacity, action_dim), np.float32)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminals = np.zeros(capacity, np.float32)
        self.rng = np.random.default_rng(seed)

    def add(self, obs, actions, rewards, next_obs, terminals) -> None:
        n = len(rewards)
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.terminals[idx] = next_obs, terminals
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        idx = self.rng.integers(0, self.size, batch_size)
        return {
            "observations": self.obs[idx],
            "actions": self.actions[idx],
            "rewards": self.rewards[idx],
            "next_observations": self.next_obs[idx],
            "terminals": self.terminals[idx],
        }
