"""Online SAC from scratch with a critic ensemble: ``pyseqrl train sac``.

Random actions for ``learning_starts`` steps, then SAC with ``utd`` critic updates per environment step (see
:mod:`pyseqrl.algos.rl_agent` for the losses and :mod:`pyseqrl.algos.rl_online` for the loop). The run can
also hand back everything it collected as an EpisodeDataset (:func:`sac_replay_dataset`), which is how D4RL
built its "medium-replay" datasets.

Example:
    pyseqrl train sac --env-id Hopper-v4 --total-steps 300000 --agent.num-critics 2 --run-dir runs/sac_hopper
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyseqrl.algos.rl_agent import AgentConfig, SACAgent
from pyseqrl.algos.rl_online import (
    EnvCollector,
    OnlineLoop,
    numpy_to_batch,
    random_actions,
    restore_loop_state,
)
from pyseqrl.algos.runs import RunOptions, parse_config

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
    actor_every_update: bool = False
    """update the actor after every critic update instead of once per transition"""
    batch_size: int = 256
    """minibatch size"""
    buffer_size: int = 1_000_000
    """replay buffer capacity (transitions)"""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """networks and losses"""
    backend: str = "auto"
    """environment backend: auto, envpool, gymnasium"""
    run_dir: str = "runs/sac"
    """where metrics, config and checkpoint.pt go"""
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


def train_sac(cfg: SACConfig, record_episodes: bool = False) -> SACResult:
    """Train SAC online from scratch.

    Args:
        cfg: the configuration.
        record_episodes: keep every transition and return it as ``result.replay`` (an EpisodeDataset).
    """
    import pyseqrl
    from pyseqrl.utils.logger import RunLogger

    run_dir, ckpt_path, state = cfg.open_run()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    record = record_episodes or cfg.save_replay is not None
    collector = EnvCollector(cfg.env_id, cfg.num_envs, cfg.seed, cfg.backend, record_episodes=record)
    env = collector.env
    agent = SACAgent(env.observation_dim, env.action_dim, cfg.agent, env.action_low, env.action_high)
    buffer = pyseqrl.ReplayBuffer(
        cfg.buffer_size, obs_shape=(env.observation_dim,), action_shape=(env.action_dim,), seed=cfg.seed
    )
    start, returns = 0, []
    if state is not None:
        start, returns = restore_loop_state(state, agent, collector)
        buffer.load_state_dict(state["buffer"])
        log.info("resumed %s at step %d", ckpt_path, start)
    logger = RunLogger(run_dir, tensorboard=cfg.tensorboard, resume_step=start if state is not None else None)

    def add(t: dict[str, np.ndarray]) -> None:
        if len(t["rewards"]):
            buffer.add(t["observations"], t["actions"], t["rewards"], t["next_observations"], t["terminated"])

    loop = OnlineLoop(
        agent=agent,
        collector=collector,
        add=add,
        sample_batch=lambda: numpy_to_batch(buffer.sample(cfg.batch_size)),
        warmup_act=random_actions(env.action_low, env.action_high),
        total_steps=cfg.total_steps,
        warmup_steps=cfg.learning_starts,
        utd=cfg.utd,
        actor_every_update=cfg.actor_every_update,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_path=ckpt_path,
        checkpoint_extra=lambda: {
            "buffer": buffer.state_dict(),
            "config": asdict(cfg),
            "env_id": cfg.env_id,
            "algo": "sac",
            "method": "sac",
        },
        logger=logger,
        stop_return=cfg.stop_return,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    returns = loop.run(start, returns)
    logger.close()
    replay = None
    if record:
        from pyseqrl.data import EpisodeDataset

        replay = EpisodeDataset.from_episodes(
            collector.episodes(include_running=True),
            metadata={
                "env_id": cfg.env_id,
                "policy": "sac-replay",
                "seed": cfg.seed,
                "steps": cfg.total_steps,
            },
        )
        if cfg.save_replay is not None:
            replay.save(cfg.save_replay)
            log.info(
                "wrote %d transitions (%d episodes) to %s", len(replay), replay.num_episodes, cfg.save_replay
            )
    collector.close()
    if returns:
        log.info(
            "SAC finished: %d episodes, mean return of the last 10: %.1f",
            len(returns),
            np.mean(returns[-10:]),
        )
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
            classic SAC with 2 critics, no evaluation, checkpoints in a temporary directory.

    Returns:
        An ``EpisodeDataset`` with metadata ``env_id``, ``policy="sac-replay"``, ``seed``.
    """
    import tempfile

    overrides.setdefault("progress", False)
    overrides.setdefault("eval_every", 0)
    overrides.setdefault("tensorboard", False)
    overrides.setdefault("agent", AgentConfig(num_critics=2))
    with tempfile.TemporaryDirectory(prefix="pyseqrl_sac_") as tmp:
        overrides.setdefault("run_dir", tmp)
        cfg = replace(
            SACConfig(),
            env_id=env_id,
            total_steps=total_steps,
            seed=seed,
            stop_return=stop_return,
            **overrides,
        )
        return train_sac(cfg, record_episodes=True).replay


def load_policy(argument: str, env: Any = None, deterministic: bool = True, **_: Any) -> Any:
    """The ``sac:<checkpoint>`` policy scheme of :func:`pyseqrl.policies.load_policy`: the actor of any
    ``pyseqrl train sac|calql|wsrl`` checkpoint (or of a file in ``pyseqrl/assets/policies``)."""
    from pyseqrl.algos.rl_agent import SACPolicy

    return SACPolicy.from_checkpoint(argument, deterministic=deterministic)


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl train sac [options]``."""
    cfg = parse_config(
        SACConfig, argv, __doc__.split("\n\n")[0] + " (YAML presets: --config configs/wsrl/*.yaml)"
    )
    result = train_sac(cfg)
    if result.episode_returns:
        print(
            f"episodes: {len(result.episode_returns)}, mean return of the last 10: "
            f"{np.mean(result.episode_returns[-10:]):.1f}; checkpoint: {Path(cfg.run_dir) / 'checkpoint.pt'}"
        )
    return 0
