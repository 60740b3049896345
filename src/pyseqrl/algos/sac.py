"""Online SAC from scratch with a critic ensemble: ``pyseqrl train sac``.

Uniform random actions for ``learning_starts`` steps, then SAC with ``utd`` critic updates per collected
transition (see :mod:`pyseqrl.algos.rl_agent` for the losses). The run can also hand back everything it
collected as an EpisodeDataset (:func:`sac_replay_dataset`), which is how D4RL built its "medium-replay"
datasets.

Example:
    pyseqrl train sac --env-id Hopper-v4 --total-steps 300000 --agent.num-critics 2 --run-dir runs/sac_hopper
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pyseqrl import ReplayBuffer
from pyseqrl.algos.rl_agent import ACTOR_UPDATES, AgentConfig, SACAgent, SACPolicy, check_agent_config
from pyseqrl.algos.rl_online import (
    NETWORK_KEYS,
    evaluate_actor,
    make_runner,
    mean_last,
    online_state,
    restore_online,
    resume_check,
    sample_batches,
)
from pyseqrl.data import EpisodeDataset
from pyseqrl.envs import check_env_id
from pyseqrl.policies import RandomPolicy
from pyseqrl.rollout import episodes_from_transitions
from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import save_torch
from pyseqrl.utils.precision import autocast_bf16
from pyseqrl.utils.runs import RunOptions, check_options, checkpoint_path, due, open_logger, open_run, parse_config

log = logging.getLogger(__name__)


@dataclass
class SACConfig(RunOptions):
    """Online SAC from scratch."""

    env_id: str = "Hopper-v4"
    """environment id (EnvPool when it has it, else gymnasium)"""
    total_steps: int = 1_000_000
    """vectorised environment steps (transitions = total_steps * num_envs)"""
    num_envs: int = 1
    """parallel environments"""
    seed: int = 0
    """seed of networks, environments and sampling"""
    learning_starts: int = 5000
    """vectorised steps of uniform random actions before the first update"""
    utd: int = 1
    """critic updates per collected transition (update-to-data ratio)"""
    actor_update: Literal["all", "last", "every"] = "all"
    """actor/temperature steps per UTD round: one on all its minibatches together (official WSRL), one on the
    last (REDQ), or one after every critic step (d3rlpy, CleanRL); the same at UTD 1"""
    batch_size: int = 256
    """minibatch size of each critic update"""
    buffer_size: int = 1_000_000
    """replay buffer capacity (transitions)"""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """networks and losses"""
    backend: Literal["auto", "envpool", "gymnasium"] = "auto"
    """environment backend: auto, envpool, gymnasium"""
    run_dir: str = "runs/sac"
    """where config.yaml, metrics.csv, tb/ and checkpoint.pt go"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    stop_return: float | None = None
    """stop once the mean return of the last 10 training episodes reaches this"""
    save_replay: str | None = None
    """write everything collected as an EpisodeDataset file here (e.g. a medium-replay dataset)"""


@dataclass
class SACResult:
    """What :func:`train_sac` returns."""

    agent: SACAgent
    episode_returns: list[float]
    """returns of the training episodes, in order"""
    replay: Any = None
    """EpisodeDataset of every collected transition (when asked for)"""


def check_config(cfg: SACConfig) -> None:
    """The ranges of a :class:`SACConfig` (a ValueError naming the option, the range and the value found)."""
    check_options(cfg)
    check_env_id(cfg.env_id, cfg.backend)
    checks.integer("total_steps", cfg.total_steps, 1)
    checks.integer("num_envs", cfg.num_envs, 1)
    checks.integer("learning_starts", cfg.learning_starts, 0)
    checks.integer("utd", cfg.utd, 1)
    checks.integer("batch_size", cfg.batch_size, 1)
    checks.integer("buffer_size", cfg.buffer_size, 1)
    checks.integer("eval_episodes", cfg.eval_episodes, 1)
    checks.optional(checks.number, "stop_return", cfg.stop_return)
    if cfg.actor_update not in ACTOR_UPDATES:
        raise ValueError(f"actor_update must be one of {ACTOR_UPDATES}, got {cfg.actor_update!r}")
    if cfg.save_replay is not None:
        checks.output_file("save_replay", cfg.save_replay)
    check_agent_config(cfg.agent)


def train_sac(cfg: SACConfig, record_episodes: bool = False) -> SACResult:
    """Train SAC online from scratch.

    Args:
        cfg: the configuration.
        record_episodes: keep every transition and return it as ``result.replay`` (an EpisodeDataset).
    """
    check_config(cfg)
    resume_keys = ("env_id", "buffer_size", *NETWORK_KEYS)
    state = open_run(cfg, check=resume_check("train sac", ("sac",), asdict(cfg), resume_keys, cfg.run_dir))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    runner = make_runner(cfg.env_id, cfg.num_envs, cfg.seed, cfg.backend)
    env = runner.env
    agent = SACAgent(env.observation_dim, env.action_dim, cfg.agent, env.action_low, env.action_high)
    agent.bf16 = autocast_bf16(cfg.precision, torch.device("cpu"))
    buffer = ReplayBuffer(
        cfg.buffer_size, obs_shape=(env.observation_dim,), action_shape=(env.action_dim,), seed=cfg.seed
    )
    explore = RandomPolicy(env.action_low, env.action_high, seed=cfg.seed)  # before learning_starts
    learner = SACPolicy(agent.actor, deterministic=False)  # the current policy, sampled
    record = record_episodes or cfg.save_replay is not None
    recorded: list[dict[str, Any]] = []  # episodes cut at the last checkpoint
    chunks: list[Any] = []  # transitions since then
    start, returns, end = 0, [], cfg.total_steps
    if state is not None:
        start, returns = restore_online(state, agent, buffer)
        explore.rng.bit_generator.state = state["explore_rng"]
        recorded = list(state["recorded_episodes"] or [])
        end = start if state["stopped"] else end  # a run stopped by stop_return is finished
        runner.env.close()
        runner = make_runner(cfg.env_id, cfg.num_envs, cfg.seed, cfg.backend, step=start)
        log.info("resumed %s at step %d", checkpoint_path(cfg), start)
    logger = open_logger(cfg, start if state is not None else None)

    metrics: dict[str, Any] = {}
    clock, clock_step = time.perf_counter(), start
    for step in tqdm(
        range(start, end),
        initial=start,
        total=cfg.total_steps,
        desc="sac",
        disable=not cfg.progress,
        dynamic_ncols=True,
    ):
        # ---- act and step the environments: random actions first, then the learner's samples
        t = runner.step(explore if step < cfg.learning_starts else learner)
        if len(t):
            buffer.add(t.observations, t.actions, t.rewards, t.next_observations, t.terminated)
        returns += t.episode_returns.tolist()
        if record:
            chunks.append(t)

        # ---- update: a UTD round per collected transition, none before learning_starts
        if step >= cfg.learning_starts:
            for _ in range(len(t)):
                metrics = agent.update(sample_batches(buffer, cfg.batch_size, cfg.utd), cfg.actor_update)

        # ---- log, evaluate, checkpoint
        done = step + 1
        stop = cfg.stop_return is not None and len(returns) >= 10 and mean_last(returns) >= cfg.stop_return
        last = done if stop else cfg.total_steps
        if stop:
            log.info("step %d: mean return of the last 10 episodes reached %.1f, stopping", done, cfg.stop_return)
        if due(done, cfg.log_every, last):
            now = time.perf_counter()
            row = {k: float(v) for k, v in metrics.items()}
            row["time/env_steps_per_s"] = (done - clock_step) * cfg.num_envs / max(now - clock, 1e-9)
            if returns:
                row["train/episode_return"] = mean_last(returns)
            logger.log(done, row)
            clock, clock_step = now, done
        if cfg.eval_every and due(done, cfg.eval_every, last):
            ev = evaluate_actor(agent, cfg.env_id, cfg.eval_episodes, cfg.seed, done)
            logger.log(done, ev)
            log.info("step %d: %s", done, ", ".join(f"{k}={v:.4g}" for k, v in ev.items()))
        if due(done, cfg.checkpoint_every, last):
            runner.env.close()  # checkpoints cut the running episodes and re-create the environments
            runner = make_runner(cfg.env_id, cfg.num_envs, cfg.seed, cfg.backend, step=done)
            if record:
                recorded += episodes_from_transitions(chunks, cut_unfinished=True)[0]
                chunks = []
            save_torch(
                online_state(
                    done,
                    agent,
                    buffer,
                    returns,
                    explore_rng=explore.rng.bit_generator.state,
                    recorded_episodes=recorded if record else None,
                    stopped=stop,
                    config=asdict(cfg),
                    env_id=cfg.env_id,
                    algo="sac",
                    method="sac",
                ),
                checkpoint_path(cfg),
                keep_previous=True,
            )
        if stop:
            break
    logger.close()
    runner.env.close()

    replay = None
    if record:
        episodes = recorded + episodes_from_transitions(chunks, cut_unfinished=True)[0]
        replay = EpisodeDataset.from_episodes(
            episodes,
            metadata={"env_id": cfg.env_id, "policy": "sac-replay", "seed": cfg.seed, "steps": cfg.total_steps},
        )
        if cfg.save_replay is not None:
            replay.save(cfg.save_replay)
            log.info("wrote %d transitions (%d episodes) to %s", len(replay), replay.num_episodes, cfg.save_replay)
    if returns:
        log.info("SAC finished: %d episodes, mean return of the last 10: %.1f", len(returns), mean_last(returns))
    return SACResult(agent=agent, episode_returns=returns, replay=replay)


def sac_replay_dataset(
    env_id: str, total_steps: int, seed: int = 0, stop_return: float | None = None, **overrides: Any
) -> Any:
    """Train SAC from scratch and return everything it collected as an EpisodeDataset (a "replay" dataset).

    Args:
        env_id: environment id, e.g. ``"Hopper-v4"``.
        total_steps: maximum environment steps.
        seed: seed of the run.
        stop_return: stop once the mean return of the last 10 training episodes reaches this (D4RL's
            medium-replay stops at the medium policy's level).
        **overrides: other :class:`SACConfig` fields (e.g. ``backend``, ``progress``, ``run_dir``). Unless given:
            SAC with 2 critics, no evaluation, a new run (no resume), checkpoints in a temporary directory.

    Returns:
        An ``EpisodeDataset`` with metadata ``env_id``, ``policy="sac-replay"``, ``seed``.
    """
    overrides.setdefault("progress", False)
    overrides.setdefault("eval_every", 0)
    overrides.setdefault("tensorboard", False)
    overrides.setdefault("resume", False)
    overrides.setdefault("overwrite", True)
    overrides.setdefault("agent", AgentConfig(num_critics=2))
    with tempfile.TemporaryDirectory(prefix="pyseqrl_sac_") as tmp:
        overrides.setdefault("run_dir", tmp)
        cfg = replace(
            SACConfig(), env_id=env_id, total_steps=total_steps, seed=seed, stop_return=stop_return, **overrides
        )
        return train_sac(cfg, record_episodes=True).replay


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl train sac [options]``."""
    cfg = parse_config(
        SACConfig,
        argv,
        __doc__.split("\n\n")[0] + " (YAML presets: --config configs/wsrl/*.yaml)",
        prog="pyseqrl train sac",
    )
    result = train_sac(cfg)
    if result.episode_returns:
        print(
            f"episodes: {len(result.episode_returns)}, mean return of the last 10: "
            f"{mean_last(result.episode_returns):.1f}; checkpoint: {Path(cfg.run_dir) / 'checkpoint.pt'}"
        )
    return 0
