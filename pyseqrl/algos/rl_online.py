"""The online loop shared by SAC from scratch and WSRL fine-tuning: collect, update, log, checkpoint.

The loop is ``for step in range(total_steps)``: one vectorised environment step (``num_envs`` transitions),
then, once ``step >= warmup_steps``, ``utd * num_envs`` critic updates and ``num_envs`` actor updates. Before
``warmup_steps`` the actions come from ``warmup_act`` (random actions for SAC, the frozen pretrained policy
for WSRL) and **no gradient update happens**. Everything else (what the batches contain, how the agent was
initialised) is decided by the caller.

Exact resume: EnvPool cannot snapshot MuJoCo states, so every checkpoint ends the running episodes (they are
truncated, i.e. bootstrapped like a time limit) and re-creates the environments with a seed derived from
``(seed, step)``. An uninterrupted run does the same at the same steps, so a resumed run is bit-identical to
it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyseqrl.algos.rl_agent import Batch, SACAgent, SACPolicy
from pyseqrl.utils.checkpoint import rng_state, save_torch, set_rng_state

log = logging.getLogger(__name__)

ActFn = Callable[[np.ndarray], np.ndarray]
"""observations float32 [n, S] -> actions float32 [n, A]"""


class EnvCollector:
    """Steps ``num_envs`` environments with a policy and yields only real transitions (no autoreset rows).

    Optionally records every transition as episodes, in order, to build an EpisodeDataset of everything the
    run collected (D4RL's "replay" datasets).

    Args:
        env_id: environment id for :func:`pyseqrl.envs.make`.
        num_envs: parallel environments.
        seed: base seed; the environments are (re)created with :meth:`restart`.
        backend: :func:`pyseqrl.envs.make` backend.
        record_episodes: keep every transition for :meth:`episodes`.
        env_kwargs: extra keyword arguments of the environment.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        seed: int = 0,
        backend: str = "auto",
        record_episodes: bool = False,
        env_kwargs: dict[str, Any] | None = None,
    ):
        self.env_id, self.num_envs, self.seed, self.backend = env_id, num_envs, seed, backend
        self.env_kwargs = dict(env_kwargs or {})
        self.record_episodes = record_episodes
        self.env: Any = None
        self.obs: np.ndarray | None = None
        self.finished: list[dict[str, Any]] = []  # recorded episodes
        self._running: list[list[tuple[np.ndarray, np.ndarray, float]]] = [[] for _ in range(num_envs)]
        self.restart(0)

    def restart(self, step: int) -> None:
        """(Re)create the environments with a seed derived from ``(seed, step)``; running episodes are cut."""
        from pyseqrl.envs import derive_seed, make

        if self.env is not None:
            self.env.close()
            for i in range(self.num_envs):
                self._close_episode(i, self.obs[i], terminated=False)  # type: ignore[index]
        self.env = make(
            self.env_id,
            self.num_envs,
            seed=self.seed if step == 0 else derive_seed(self.seed, step),
            backend=self.backend,
            **self.env_kwargs,
        )
        self.obs = self.env.reset()

    @property
    def observation_dim(self) -> int:
        return int(self.env.observation_dim)

    @property
    def action_dim(self) -> int:
        return int(self.env.action_dim)

    def step(self, act: ActFn) -> tuple[dict[str, np.ndarray], list[float]]:
        """One vectorised step with ``act``.

        Returns:
            transitions: observations f32[m,S], actions f32[m,A], rewards f32[m], next_observations f32[m,S],
                terminated bool[m] for the ``m <= num_envs`` environments that made a real step;
            the returns of the episodes that ended at this step.
        """
        obs = self.obs
        actions = np.asarray(act(obs), dtype=np.float32)  # (n, A)
        next_obs, rewards, terminated, _truncated, info = self.env.step(actions)
        real = ~info["reset_step"]
        trans = {
            "observations": obs[real],
            "actions": actions[real],
            "rewards": rewards[real],
            "next_observations": next_obs[real],
            "terminated": terminated[real],
        }
        done = info["episode_done"]
        if self.record_episodes:
            for i in np.flatnonzero(real):
                self._running[i].append((obs[i], actions[i], float(rewards[i])))
            for i in np.flatnonzero(done):
                self._close_episode(i, next_obs[i], terminated=bool(terminated[i]))
        self.obs = next_obs
        return trans, [float(r) for r in info["episode_return"][done]]

    def _close_episode(self, i: int, final_obs: np.ndarray, terminated: bool) -> None:
        steps = self._running[i]
        if not self.record_episodes or not steps:
            return
        self.finished.append(
            {
                "observations": np.stack(
                    [s[0] for s in steps] + [final_obs]
                ),  # (T+1, S): last = final next obs
                "actions": np.stack([s[1] for s in steps]),
                "rewards": np.asarray([s[2] for s in steps], np.float32),
                "terminated": terminated,
                "truncated": not terminated,
            }
        )
        self._running[i] = []

    def episodes(self, include_running: bool = True) -> list[dict[str, Any]]:
        """The recorded episodes (dicts for ``EpisodeDataset.from_episodes``), running ones as truncated."""
        eps = list(self.finished)
        if include_running:
            for i, steps in enumerate(self._running):
                if steps:
                    eps.append(
                        {
                            "observations": np.stack([s[0] for s in steps] + [self.obs[i]]),  # type: ignore
                            "actions": np.stack([s[1] for s in steps]),
                            "rewards": np.asarray([s[2] for s in steps], np.float32),
                            "terminated": False,
                            "truncated": True,
                        }
                    )
        return eps

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def try_evaluate(agent: SACAgent, env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """Deterministic evaluation via :func:`pyseqrl.evaluation.evaluate`; {} when it is unavailable."""
    try:
        from pyseqrl.evaluation import evaluate
    except ImportError as e:
        log.warning("evaluation skipped: pyseqrl.evaluation is not available (%s)", e)
        return {}
    result = evaluate(SACPolicy(agent.actor, deterministic=True), env_id, episodes=episodes, seed=seed)
    agent.actor.train()
    get = (lambda k: result.get(k)) if isinstance(result, dict) else (lambda k: getattr(result, k, None))
    out = {}
    for key in ("mean_return", "std_return", "normalized_score", "mean_normalized_score", "mean_length"):
        value = get(key)
        if value is not None and np.ndim(value) == 0:
            out[f"eval/{key}"] = float(value)
    return out


@dataclass
class OnlineLoop:
    """What the shared online loop needs; the algorithm-specific choices are the callables."""

    agent: SACAgent
    collector: EnvCollector
    add: Callable[[dict[str, np.ndarray]], None]
    """stores the transitions of a step (into the online ReplayBuffer)"""
    sample_batch: Callable[[], Batch]
    """draws one minibatch for an update (online only, or mixed with offline data)"""
    warmup_act: ActFn
    """the behaviour before ``warmup_steps`` (random actions or the frozen pretrained policy)"""
    total_steps: int
    """vectorised environment steps of the whole run"""
    warmup_steps: int
    """vectorised steps collected with ``warmup_act`` and without updates"""
    utd: int = 4
    """critic updates per collected transition"""
    actor_every_update: bool = False
    """update the actor after every critic update (d3rlpy/CleanRL style) instead of once per transition"""
    log_every: int = 1000
    eval_every: int = 0
    eval_episodes: int = 10
    checkpoint_every: int = 0
    checkpoint_path: Path | None = None
    checkpoint_extra: Callable[[], dict[str, Any]] = field(default=dict)
    """more state to put in each checkpoint (the replay buffer, samplers' RNGs, the config)"""
    logger: Any = None
    on_switch: Callable[[int], dict[str, float]] | None = None
    """called once at the end of the warmup; its metrics are logged (Q-values at the switch)"""
    first_episodes_to_log: int = 10
    """how many episodes after the switch are logged one by one (to see the dip of unlearning)"""
    stop_return: float | None = None
    """stop once the mean return of the last 10 training episodes reaches this (medium-replay datasets)"""
    seed: int = 0
    progress: bool = True
    episode_returns: list[float] = field(default_factory=list)
    """returns of the training episodes so far (filled by :meth:`run`)"""

    def run(self, start_step: int = 0, episode_returns: list[float] | None = None) -> list[float]:
        """Run from ``start_step`` to ``total_steps``; returns the returns of all training episodes."""
        agent, collector = self.agent, self.collector
        episode_returns = self.episode_returns = list(episode_returns or [])
        metrics: dict[str, Any] = {}
        post_switch_episodes = 0
        t0, steps_t0 = time.perf_counter(), start_step
        pbar = tqdm(
            total=self.total_steps,
            initial=start_step,
            disable=not self.progress,
            desc="online",
            dynamic_ncols=True,
        )
        for step in range(start_step, self.total_steps):
            # ---- collect one vectorised step: the warmup behaviour, then the learning agent
            act = self.warmup_act if step < self.warmup_steps else agent.act
            trans, ended = collector.step(act)
            self.add(trans)
            for ret in ended:
                episode_returns.append(ret)
                if step >= self.warmup_steps and post_switch_episodes < self.first_episodes_to_log:
                    post_switch_episodes += 1
                    if self.logger is not None:
                        self.logger.log(
                            step + 1,
                            {"switch/episode_return": ret, "switch/episode_index": post_switch_episodes},
                        )

            if step + 1 == self.warmup_steps and self.on_switch is not None:
                switch_metrics = self.on_switch(step + 1)
                log.info(
                    "at the switch (step %d): %s",
                    step + 1,
                    ", ".join(f"{k}={v:.4g}" for k, v in switch_metrics.items()),
                )
                if self.logger is not None:
                    self.logger.log(step + 1, switch_metrics)

            # ---- updates (none during the warmup)
            if step >= self.warmup_steps:
                n = len(trans["rewards"])
                for _ in range(n):
                    for _ in range(self.utd):
                        batch = self.sample_batch()
                        metrics.update(agent.update_critic(batch))
                        if self.actor_every_update:
                            metrics.update(agent.update_actor(batch))
                    if not self.actor_every_update:
                        metrics.update(agent.update_actor(batch))

            done = step + 1
            pbar.update(1)
            stop = (
                self.stop_return is not None
                and len(episode_returns) >= 10
                and float(np.mean(episode_returns[-10:])) >= self.stop_return
            )
            if stop:
                log.info(
                    "step %d: mean return of the last 10 episodes reached %.1f, stopping",
                    done,
                    self.stop_return,
                )
            # ---- log, evaluate, checkpoint
            if self.logger is not None and done % self.log_every == 0:
                now = time.perf_counter()
                row = {k: float(v) for k, v in metrics.items()}
                row["time/env_steps_per_s"] = (done - steps_t0) * collector.num_envs / max(now - t0, 1e-9)
                if episode_returns:
                    row["train/episode_return"] = float(np.mean(episode_returns[-10:]))
                self.logger.log(done, row)
                pbar.set_postfix(ret=row.get("train/episode_return", float("nan")))
                t0, steps_t0 = now, done
            if self.eval_every and (done % self.eval_every == 0 or done == self.total_steps):
                from pyseqrl.envs import derive_seed

                ev = try_evaluate(agent, collector.env_id, self.eval_episodes, derive_seed(self.seed, 7919, done))
                if ev:
                    log.info("step %d: %s", done, ", ".join(f"{k}={v:.4g}" for k, v in ev.items()))
                    if self.logger is not None:
                        self.logger.log(done, ev)
            if self.checkpoint_path is not None and (
                (self.checkpoint_every and done % self.checkpoint_every == 0)
                or done == self.total_steps
                or stop
            ):
                collector.restart(done)  # same in resumed and uninterrupted runs: see the module docstring
                save_torch(
                    {
                        "step": done,
                        "agent": agent.full_state_dict(),
                        "rng": rng_state(),
                        "episode_returns": episode_returns,
                        "recorded_episodes": collector.finished if collector.record_episodes else None,
                        **self.checkpoint_extra(),
                    },
                    self.checkpoint_path,
                )
            if stop:
                break
        pbar.close()
        return episode_returns


def restore_loop_state(
    state: dict[str, Any], agent: SACAgent, collector: EnvCollector
) -> tuple[int, list[float]]:
    """Load what :meth:`OnlineLoop.run` checkpointed; returns (resume step, episode returns so far)."""
    agent.load_full_state_dict(state["agent"])
    set_rng_state(state["rng"])
    collector.restart(int(state["step"]))
    if collector.record_episodes and state.get("recorded_episodes") is not None:
        collector.finished = list(state["recorded_episodes"])
    return int(state["step"]), list(state["episode_returns"])


def random_actions(low: np.ndarray, high: np.ndarray) -> ActFn:
    """Uniform random actions in ``[low, high]`` from numpy's global RNG (checkpointed by ``rng_state``)."""

    def act(obs: np.ndarray) -> np.ndarray:
        return np.random.uniform(low, high, size=(len(obs), len(low))).astype(np.float32)

    return act


def numpy_to_batch(batch: dict[str, np.ndarray]) -> Batch:
    """A ReplayBuffer sample (numpy) as torch float32 tensors (zero-copy where possible)."""
    return {
        k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
        for k, v in batch.items()
        if k in ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns")
    }
