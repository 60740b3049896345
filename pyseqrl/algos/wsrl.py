"""WSRL (Zhou et al. 2024): online SAC fine-tuning of an offline-pretrained agent with no offline data.

``pyseqrl train wsrl --checkpoint runs/calql/checkpoint.pt`` loads a Cal-QL/CQL checkpoint, collects
``warmup_steps`` environment steps with the **frozen** pretrained policy into an **empty** replay buffer (no
update during the warmup), then runs SAC at ``utd`` critic updates per step on online data only.

``--mode`` switches to the baselines, everything else unchanged:

* ``wsrl``                 warmup with the pretrained policy, online data only (the method);
* ``no_warmup``            online data only, updates from the first step;
* ``keep_offline_append``  the offline transitions are put in the online replay buffer (Cal-QL-style
  fine-tuning);
* ``keep_offline_mixed``   every batch is half offline, half online (RLPD-style symmetric sampling);
* ``scratch``              a fresh agent, ``warmup_steps`` of random actions, then SAC (no pretraining at
  all).

At the switch from warmup to learning, the Q-values of the critics on the warmup data and the policy's actions
are logged (``switch/*``), as are the returns of the first online episodes, which show whether the agent
unlearns.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pyseqrl.algos.rl_agent import AgentConfig, Batch, SACAgent
from pyseqrl.algos.rl_online import (
    EnvCollector,
    OnlineLoop,
    numpy_to_batch,
    random_actions,
    restore_loop_state,
)
from pyseqrl.algos.runs import RunOptions, parse_config
from pyseqrl.utils.checkpoint import load_torch

log = logging.getLogger(__name__)

MODES = ("wsrl", "no_warmup", "keep_offline_append", "keep_offline_mixed", "scratch")


@dataclass
class WSRLConfig(RunOptions):
    """WSRL online fine-tuning and its baselines."""

    checkpoint: str = ""
    """offline checkpoint written by `pyseqrl train calql` (not needed for --mode scratch)"""
    mode: Literal["wsrl", "no_warmup", "keep_offline_append", "keep_offline_mixed", "scratch"] = "wsrl"
    """the method or a baseline (see the module docstring)"""
    env_id: str | None = None
    """environment; default: the one of the checkpoint"""
    dataset: str | None = None
    """offline dataset for the keep_offline_* baselines; default: the one the checkpoint was trained on"""
    total_steps: int = 300_000
    """online environment steps, warmup included"""
    warmup_steps: int | None = None
    """steps collected without updates; default 5000 for wsrl and scratch, 0 for the other baselines"""
    utd: int = 4
    """critic updates per environment step (the actor is updated once per step)"""
    actor_every_update: bool = False
    """update the actor after every critic update instead of once per environment step"""
    batch_size: int = 256
    """minibatch size"""
    buffer_size: int = 1_000_000
    """online replay buffer capacity (keep_offline_append: also holds the offline data)"""
    num_envs: int = 1
    """parallel environments"""
    backup_entropy: bool = True
    """subtract alpha * log pi in the online TD target (Cal-QL pretraining does not)"""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """networks and losses of --mode scratch (ignored otherwise: they come from the checkpoint)"""
    seed: int = 0
    """seed of environments, sampling and (scratch) initialisation"""
    backend: str = "auto"
    """environment backend: auto, envpool, gymnasium"""
    run_dir: str = "runs/wsrl"
    """where metrics, config and checkpoint.pt go"""


@dataclass
class WSRLResult:
    """What :func:`train_wsrl` returns."""

    agent: SACAgent
    buffer: Any
    """the online ReplayBuffer"""
    episode_returns: list[float]
    """returns of the online episodes (warmup included), in order"""
    switch_metrics: dict[str, float]
    """Q-values and returns at the end of the warmup"""


def train_wsrl(cfg: WSRLConfig) -> WSRLResult:
    """Fine-tune online (or run a baseline); see the module docstring."""
    import pyseqrl
    from pyseqrl.algos.calql import offline_transitions
    from pyseqrl.utils.logger import RunLogger

    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    offline_state = None
    if cfg.mode != "scratch":
        if not cfg.checkpoint:
            raise ValueError(f"--mode {cfg.mode} needs --checkpoint (a `pyseqrl train calql` checkpoint)")
        offline_state = load_torch(cfg.checkpoint)
        if "agent" not in offline_state:
            raise ValueError(f"{cfg.checkpoint!r} has no 'agent' entry: not a pyseqrl calql/sac checkpoint")
    env_id = cfg.env_id or (offline_state or {}).get("env_id")
    if not env_id:
        raise ValueError("no environment: pass --env-id (the checkpoint does not name one)")
    warmup = (
        cfg.warmup_steps if cfg.warmup_steps is not None else (5000 if cfg.mode in ("wsrl", "scratch") else 0)
    )

    run_dir, ckpt_path, resume_state = cfg.open_run()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    collector = EnvCollector(env_id, cfg.num_envs, cfg.seed, cfg.backend)
    env = collector.env
    if offline_state is None:  # ---- scratch: a fresh agent, random warmup actions
        agent = SACAgent(env.observation_dim, env.action_dim, cfg.agent, env.action_low, env.action_high)
        warmup_act = random_actions(env.action_low, env.action_high)
    else:  # ---- load the pretrained agent; the warmup acts with a frozen copy of its policy
        agent = SACAgent.from_state_dict(offline_state["agent"], backup_entropy=cfg.backup_entropy)
        if (agent.observation_dim, agent.action_dim) != (env.observation_dim, env.action_dim):
            raise ValueError(
                f"checkpoint has (S, A) = {(agent.observation_dim, agent.action_dim)} but {env_id} has "
                f"{(env.observation_dim, env.action_dim)}"
            )
        frozen = copy.deepcopy(agent.actor).requires_grad_(False)

        @torch.no_grad()
        def warmup_act(obs: np.ndarray) -> np.ndarray:
            return frozen(torch.from_numpy(obs))[0].numpy()

    buffer = pyseqrl.ReplayBuffer(
        cfg.buffer_size, obs_shape=(env.observation_dim,), action_shape=(env.action_dim,), seed=cfg.seed
    )
    offline: dict[str, torch.Tensor] | None = None
    if cfg.mode.startswith("keep_offline"):  # ---- the baselines that keep the offline data
        from pyseqrl.data import load

        path = cfg.dataset or offline_state["config"].get("dataset")  # type: ignore[index]
        if not path:
            raise ValueError(f"--mode {cfg.mode} needs --dataset (the checkpoint does not name its dataset)")
        offline = offline_transitions(load(path), agent.config.gamma)
        offline.pop("mc_returns")
        if cfg.mode == "keep_offline_append" and resume_state is None:
            o = {k: v.numpy() for k, v in offline.items()}
            buffer.add(
                o["observations"], o["actions"], o["rewards"], o["next_observations"], o["terminals"] > 0
            )
    offline_gen = torch.Generator().manual_seed(cfg.seed + 1)

    def add(t: dict[str, np.ndarray]) -> None:
        if len(t["rewards"]):
            buffer.add(t["observations"], t["actions"], t["rewards"], t["next_observations"], t["terminated"])

    def sample_batch() -> Batch:
        if cfg.mode != "keep_offline_mixed":
            return numpy_to_batch(buffer.sample(cfg.batch_size))
        half = cfg.batch_size // 2  # ---- symmetric sampling: half offline, half online
        online = numpy_to_batch(buffer.sample(cfg.batch_size - half))
        assert offline is not None
        idx = torch.randint(len(offline["rewards"]), (half,), generator=offline_gen)
        return {k: torch.cat([online[k], offline[k][idx]]) for k in online}

    switch_metrics: dict[str, float] = {}

    def on_switch(step: int) -> dict[str, float]:
        with torch.no_grad():
            batch = numpy_to_batch(buffer.sample(min(1024, max(len(buffer), 1))))
            q = agent.critic(batch["observations"], batch["actions"])  # (N, B)
            pi, _ = agent.actor(batch["observations"], deterministic=True, with_log_prob=False)
            q_pi = agent.critic(batch["observations"], pi)
        switch_metrics.update(
            {
                "switch/q_data_mean": float(q.mean()),
                "switch/q_data_std_over_critics": float(q.std(0).mean()),
                "switch/q_pi_mean": float(q_pi.mean()),
                "switch/buffer_size": float(len(buffer)),
            }
        )
        if loop.episode_returns:
            switch_metrics["switch/warmup_episode_return"] = float(np.mean(loop.episode_returns))
        return switch_metrics

    start, returns_so_far = 0, []
    if resume_state is not None:
        start, returns_so_far = restore_loop_state(resume_state, agent, collector)
        buffer.load_state_dict(resume_state["buffer"])
        offline_gen.set_state(resume_state["offline_rng"])
        log.info("resumed %s at step %d", ckpt_path, start)
    logger = RunLogger(
        run_dir, tensorboard=cfg.tensorboard, resume_step=start if resume_state is not None else None
    )
    log.info(
        "WSRL mode=%s env=%s warmup=%d utd=%d offline transitions=%s",
        cfg.mode,
        env_id,
        warmup,
        cfg.utd,
        None if offline is None else len(offline["rewards"]),
    )

    loop = OnlineLoop(
        agent=agent,
        collector=collector,
        add=add,
        sample_batch=sample_batch,
        warmup_act=warmup_act,
        total_steps=cfg.total_steps,
        warmup_steps=warmup,
        utd=cfg.utd,
        actor_every_update=cfg.actor_every_update,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        checkpoint_every=cfg.checkpoint_every,
        checkpoint_path=ckpt_path,
        logger=logger,
        on_switch=on_switch,
        seed=cfg.seed,
        progress=cfg.progress,
        checkpoint_extra=lambda: {
            "buffer": buffer.state_dict(),
            "offline_rng": offline_gen.get_state(),
            "config": asdict(cfg),
            "env_id": env_id,
            "algo": "sac",  # the policy scheme: a SAC actor
            "method": f"wsrl-{cfg.mode}",
        },
    )
    returns = loop.run(start, returns_so_far)
    logger.close()
    collector.close()
    return WSRLResult(agent=agent, buffer=buffer, episode_returns=returns, switch_metrics=switch_metrics)


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl train wsrl [options]``."""
    cfg = parse_config(
        WSRLConfig, argv, __doc__.split("\n\n")[0] + " (YAML presets: --config configs/wsrl/*.yaml)"
    )
    result = train_wsrl(cfg)
    if result.episode_returns:
        print(
            f"mode {cfg.mode}: {len(result.episode_returns)} episodes, mean return of the last 10: "
            f"{np.mean(result.episode_returns[-10:]):.1f}; checkpoint: {Path(cfg.run_dir) / 'checkpoint.pt'}"
        )
    return 0
