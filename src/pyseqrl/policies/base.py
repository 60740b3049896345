"""The policy protocol shared by data collection, evaluation and online RL.

A policy maps a batch of observations ``[n, S]`` float32 to a batch of actions ``[n, A]`` float32, one row per
environment of a vectorised env. Stateful policies (a Decision Transformer keeps a history per environment) are
told when an environment starts a new episode (:meth:`Policy.reset`) and what reward the last action earned
(:meth:`Policy.observe`); stateless policies ignore both.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Policy:
    """Base class of every pyseqrl policy.

    Call order for each vectorised-env step: ``reset(ids)`` for the environments whose episode starts with the
    observation about to be acted on, then ``act(obs)``, then ``observe(rewards)`` with the rewards of that step.
    """

    #: a short human-readable description, stored in dataset metadata
    name: str = "policy"

    def reset(self, env_ids: np.ndarray) -> None:
        """Environments ``env_ids`` (int64 [m]) start a new episode at the next :meth:`act`."""

    def act(self, observations: np.ndarray) -> np.ndarray:
        """Actions for a batch of observations: float32 [n, S] -> float32 [n, A]."""
        raise NotImplementedError

    def observe(self, rewards: np.ndarray) -> None:
        """Rewards (float32 [n]) obtained by the actions of the last :meth:`act`."""

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return self.act(observations)


def check_env_dims(source: Any, observation_dim: int, action_dim: int, env: Any | None) -> None:
    """Refuse a policy whose observation or action size differs from ``env``'s (a ValueError naming ``source``,
    the policy's sizes and the environment's). Nothing to check without an environment."""
    if env is None:
        return
    if (observation_dim, action_dim) != (env.observation_dim, env.action_dim):
        raise ValueError(
            f"{source}: the policy takes {observation_dim} observations and gives {action_dim} actions, but "
            f"{getattr(env, 'env_id', 'the environment')} has {env.observation_dim} observations and "
            f"{env.action_dim} actions"
        )
