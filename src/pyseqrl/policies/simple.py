"""Simple behaviour policies: uniform random, and the Gaussian-noise and epsilon-random exploration wrappers.

Example:
    >>> from pyseqrl.envs import make
    >>> from pyseqrl.policies import RandomPolicy, GaussianNoise
    >>> env = make("Hopper-v4", num_envs=4)
    >>> policy = GaussianNoise(RandomPolicy(env.action_low, env.action_high, seed=0), std=0.1, seed=1)
    >>> policy.act(env.reset()).shape
    (4, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pyseqrl.policies.base import Policy


def _bounds(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low = np.asarray(low, np.float32).reshape(-1)
    high = np.asarray(high, np.float32).reshape(-1)
    if low.shape != high.shape:
        raise ValueError(f"action_low and action_high must have the same shape, got {low.shape} and {high.shape}")
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low <= high).all()):
        raise ValueError(f"action bounds must be finite with low <= high, got low={low}, high={high}")
    return low, high


class RandomPolicy(Policy):
    """Uniform random actions in ``[action_low, action_high]`` (D4RL's "random" behaviour policy).

    Args:
        action_low: float32 ``[A]`` lower bounds.
        action_high: float32 ``[A]`` upper bounds.
        seed: seed of the policy's own RNG (independent of the environment seed).
    """

    name = "random"

    def __init__(self, action_low: np.ndarray, action_high: np.ndarray, seed: int = 0) -> None:
        self.action_low, self.action_high = _bounds(action_low, action_high)
        self.rng = np.random.default_rng(seed)

    def act(self, observations: np.ndarray) -> np.ndarray:
        n = len(observations)
        return self.rng.uniform(self.action_low, self.action_high, size=(n, len(self.action_low))).astype(np.float32)


class PolicyWrapper(Policy):
    """Base of wrappers: forwards ``reset``/``observe``/``with_target`` to the wrapped policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def reset(self, env_ids: np.ndarray) -> None:
        self.policy.reset(env_ids)

    def observe(self, rewards: np.ndarray) -> None:
        self.policy.observe(rewards)

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.policy.act(observations)

    def with_target(self, target_return: float) -> Any:
        """Return-conditioned copy of the wrapped policy, wrapped the same way."""
        inner = self.policy.with_target(target_return)  # type: ignore[attr-defined]
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.policy = inner
        return clone


class GaussianNoise(PolicyWrapper):
    """Adds ``N(0, std^2 * (high - low)^2 / 4)`` noise to the wrapped policy's actions, then clips to the bounds.

    ``std`` is relative to the half-width of the action range, so ``std=0.1`` on MuJoCo's ``[-1, 1]`` is absolute
    0.1 (the usual TD3-style exploration noise).

    Args:
        policy: the policy to perturb.
        std: relative noise standard deviation (>= 0).
        action_low, action_high: float32 ``[A]`` bounds; default: ``[-1, 1]``.
        seed: seed of the noise RNG.
    """

    def __init__(
        self,
        policy: Policy,
        std: float,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(policy)
        if not std >= 0:
            raise ValueError(f"GaussianNoise std must be >= 0, got {std!r}")
        self.std = float(std)
        self.action_low = None if action_low is None else np.asarray(action_low, np.float32)
        self.action_high = None if action_high is None else np.asarray(action_high, np.float32)
        self.rng = np.random.default_rng(seed)
        self.name = f"{policy.name}+gauss({self.std:g})"

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions = np.asarray(self.policy.act(observations), np.float32)
        low = -1.0 if self.action_low is None else self.action_low
        high = 1.0 if self.action_high is None else self.action_high
        scale = self.std * (np.asarray(high) - np.asarray(low)) / 2.0
        noisy = actions + self.rng.standard_normal(actions.shape).astype(np.float32) * scale
        return np.clip(noisy, low, high).astype(np.float32)


class EpsilonRandom(PolicyWrapper):
    """With probability ``epsilon`` per environment and step, replaces the action by a uniform random one.

    Args:
        policy: the policy to perturb.
        epsilon: probability in ``[0, 1]``.
        action_low, action_high: float32 ``[A]`` bounds of the random actions.
        seed: seed of the RNG.
    """

    def __init__(
        self, policy: Policy, epsilon: float, action_low: np.ndarray, action_high: np.ndarray, seed: int = 0
    ) -> None:
        super().__init__(policy)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"EpsilonRandom epsilon must be in [0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.action_low, self.action_high = _bounds(action_low, action_high)
        self.rng = np.random.default_rng(seed)
        self.name = f"{policy.name}+eps({self.epsilon:g})"

    def act(self, observations: np.ndarray) -> np.ndarray:
        actions = np.array(self.policy.act(observations), np.float32)
        n, a = actions.shape
        coin = self.rng.random(n) < self.epsilon
        random = self.rng.uniform(self.action_low, self.action_high, size=(n, a)).astype(np.float32)
        actions[coin] = random[coin]
        return actions
