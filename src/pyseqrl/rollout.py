"""Step policies in vectorised environments and keep only real transitions: the one place that owns autoreset.

EnvPool and gymnasium >= 1.0 reset an environment on the step *after* its episode ended and ignore that step's
action (``info["reset_step"]``). :class:`EnvRunner` drops those rows, tells stateful policies when an episode
starts (``policy.reset``) and what the last action earned (``policy.observe``), and reports the returns of the
episodes that ended. Data collection (:mod:`pyseqrl.collect`), evaluation (:mod:`pyseqrl.evaluation`) and the
online trainers (``pyseqrl train sac|wsrl``) all step environments through it.

Example::

    from pyseqrl.envs import make
    from pyseqrl.rollout import EnvRunner

    env = make("Hopper-v4", num_envs=8, seed=0)
    runner = EnvRunner(env)                    # resets the envs
    for _ in range(1000):
        t = runner.step(policy)                # one vector step; autoreset rows are already dropped
        buffer.add(t.observations, t.actions, t.rewards, t.next_observations, t.terminated)
        for r in t.episode_returns: ...        # returns of the episodes that ended at this step

The policy may change between calls (a warmup policy, then the learner).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pyseqrl.policies.base import Policy


@dataclass
class Transitions:
    """The real transitions of one vector step (rows of autoreset steps removed); ``m <= num_envs`` rows."""

    observations: np.ndarray
    """float32 [m, S]"""
    actions: np.ndarray
    """float32 [m, A]"""
    rewards: np.ndarray
    """float32 [m]"""
    next_observations: np.ndarray
    """float32 [m, S]: the final observation when the episode ended at this step"""
    terminated: np.ndarray
    """bool [m]"""
    truncated: np.ndarray
    """bool [m]"""
    env_ids: np.ndarray
    """int64 [m]: which environment each row came from"""
    episode_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """float64 [k]: returns of the k episodes that ended at this step"""
    episode_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """int64 [k]"""
    episode_env_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """int64 [k]"""

    def __len__(self) -> int:
        return len(self.rewards)

    def select(self, index: np.ndarray | slice) -> Transitions:
        """The rows ``index`` (a slice, int64 indices or a bool mask ``[m]``); episode fields are dropped."""
        rows = ("observations", "actions", "rewards", "next_observations", "terminated", "truncated", "env_ids")
        return Transitions(*(getattr(self, k)[index] for k in rows))


class EnvRunner:
    """Steps policies in a :class:`pyseqrl.envs.VectorEnv` and returns only real transitions.

    Args:
        env: the vectorised environment; it is reset here.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self.observations = env.reset()  # float32 [n, S]: what the next act() sees
        self._start = np.ones(env.num_envs, bool)  # these envs begin an episode at the next act()
        self.steps = 0  # vector steps taken
        self.transitions = 0  # real transitions returned

    def step(self, policy: Policy) -> Transitions:
        """One vector step with ``policy``; returns the real transitions it produced."""
        n = self.env.num_envs
        if self._start.any():
            policy.reset(np.flatnonzero(self._start).astype(np.int64))
        obs = self.observations
        actions = np.asarray(policy.act(obs), dtype=np.float32)
        if actions.shape != (n, self.env.action_dim):
            raise ValueError(
                f"policy {getattr(policy, 'name', policy)!r} returned actions of shape {actions.shape}, "
                f"expected (num_envs, action_dim) = ({n}, {self.env.action_dim})"
            )
        next_obs, rewards, terminated, truncated, info = self.env.step(actions)
        policy.observe(rewards)
        real = ~info["reset_step"]
        done = info["episode_done"]
        # an env that just ended takes a throw-away autoreset step next: reset the policy's state for it now (so
        # a history never runs past the episode), and again after the autoreset, when its first obs arrives.
        self._start = done | info["reset_step"]
        self.observations = next_obs
        self.steps += 1
        ids = np.flatnonzero(real).astype(np.int64)
        self.transitions += len(ids)
        ended = np.flatnonzero(done).astype(np.int64)
        return Transitions(
            observations=obs[ids],
            actions=actions[ids],
            rewards=rewards[ids],
            next_observations=next_obs[ids],
            terminated=terminated[ids],
            truncated=truncated[ids],
            env_ids=ids,
            episode_returns=info["episode_return"][ended].astype(np.float64),
            episode_lengths=info["episode_length"][ended].astype(np.int64),
            episode_env_ids=ended,
        )


def rollout(env: Any, policy: Policy, steps: int) -> Iterator[Transitions]:
    """Yield :class:`Transitions` of ``policy`` in ``env`` until at least ``steps`` real transitions were made."""
    runner = EnvRunner(env)
    while runner.transitions < steps:
        yield runner.step(policy)


def episodes_from_transitions(
    chunks: list[Transitions], cut_unfinished: bool = True
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Group per-step transitions into episodes (dicts for ``EpisodeDataset.from_episodes``).

    Episodes are ordered by environment, then time. An episode still running at the end is kept as truncated
    (``cut_unfinished``) or dropped.

    Returns:
        the episodes, and bool ``[E]``: which of them really ended (terminal or time limit), i.e. were not cut.
    """
    if not chunks:
        return [], np.zeros(0, bool)
    cat = {
        k: np.concatenate([getattr(c, k) for c in chunks])
        for k in ("observations", "actions", "rewards", "next_observations", "terminated", "truncated", "env_ids")
    }
    order = np.argsort(cat["env_ids"], kind="stable")  # per env, in time order
    cat = {k: v[order] for k, v in cat.items()}
    ends = cat["terminated"] | cat["truncated"] | np.r_[cat["env_ids"][1:] != cat["env_ids"][:-1], True]
    episodes, complete, start = [], [], 0
    for end in np.flatnonzero(ends):
        sl = slice(start, end + 1)
        finished = bool(cat["terminated"][end] or cat["truncated"][end])
        start = end + 1
        if not finished and not cut_unfinished:
            continue
        episodes.append(
            {
                "observations": np.concatenate([cat["observations"][sl], cat["next_observations"][end : end + 1]]),
                "actions": cat["actions"][sl],
                "rewards": cat["rewards"][sl],
                "terminated": bool(cat["terminated"][end]),
                "truncated": not bool(cat["terminated"][end]),  # time limit, or cut by the collection budget
            }
        )
        complete.append(finished)
    return episodes, np.array(complete, bool)
