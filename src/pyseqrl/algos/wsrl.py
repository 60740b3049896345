"""WSRL (Zhou et al. 2024): online SAC fine-tuning of an offline-pretrained agent with no offline data.

``pyseqrl train wsrl --checkpoint runs/cql/checkpoint.pt`` loads a Cal-QL/CQL checkpoint, collects
``warmup_steps`` environment steps with the pretrained policy into an **empty** replay buffer (no update during
the warmup), then runs SAC at ``utd`` critic updates per step on online data only.

``--mode`` switches to the baselines, everything else unchanged:

* ``wsrl``                 warmup with the pretrained policy, online data only (the method);
* ``no_warmup``            online data only, updates as soon as the buffer holds one round's worth of data;
* ``keep_offline_append``  the offline transitions are put in the online replay buffer first;
* ``keep_offline_mixed``   every UTD round draws ``offline_ratio`` of its transitions from the offline data
  (RLPD-style; see ``--mix``);
* ``scratch``              a fresh agent (``--agent.*``), ``warmup_steps`` with its untrained policy, then SAC
  (no pretraining at all).

No mode updates before the buffer holds ``min_buffer`` online transitions (by default one UTD round's worth of
online data, as the official code). At the switch from the update-free phase to learning, the Q-values of the
critics on the collected data and of the policy's actions are logged (``switch/*``), as are the returns of the
first online episodes, which show whether the agent unlearns. ``docs/WSRL.md`` compares every mode with the
official implementation.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from pyseqrl import ReplayBuffer
from pyseqrl.algos.rl_agent import ACTOR_UPDATES, AgentConfig, Batch, SACAgent, SACPolicy, check_agent_config
from pyseqrl.algos.rl_online import (
    NETWORK_KEYS,
    evaluate_actor,
    make_runner,
    mean_last,
    online_state,
    restore_online,
    resume_check,
    sample_batches,
    split,
    to_batch,
)
from pyseqrl.data import load
from pyseqrl.envs import check_env_id
from pyseqrl.policies import RandomPolicy
from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import load_torch, save_torch
from pyseqrl.utils.precision import autocast_bf16
from pyseqrl.utils.runs import RunOptions, check_options, checkpoint_path, due, open_logger, open_run, parse_config

log = logging.getLogger(__name__)

MODES = ("wsrl", "no_warmup", "keep_offline_append", "keep_offline_mixed", "scratch")


@dataclass
class WSRLConfig(RunOptions):
    """WSRL online fine-tuning and its baselines (defaults: the official locomotion runs)."""

    checkpoint: str = ""
    """offline checkpoint written by `pyseqrl train calql` (every mode but scratch)"""
    mode: Literal["wsrl", "no_warmup", "keep_offline_append", "keep_offline_mixed", "scratch"] = "wsrl"
    """the method or a baseline, everything else unchanged:
    wsrl: warmup with the frozen pretrained policy, then online data only (the method);
    no_warmup: online data only, updates once the buffer holds one round's worth of data;
    keep_offline_append: the offline transitions are put in the online replay buffer first;
    keep_offline_mixed: every UTD round draws offline_ratio of its batch from the offline data (RLPD-style);
    scratch: a fresh agent (--agent.*), warmup with its untrained policy, then SAC (no pretraining)"""
    env_id: str | None = None
    """environment; default: the one of the checkpoint"""
    dataset: str | None = None
    """[keep_offline_*] offline dataset; default: the one the checkpoint was trained on"""
    total_steps: int = 500_000
    """online environment steps, warmup included (official finetune.py num_online_steps)"""
    warmup_steps: int | None = None
    """steps collected without updates; default 5000 for wsrl and scratch (official launch_wsrl_finetune.sh),
    0 for keep_offline_* (official finetune.py); no_warmup: always 0"""
    min_buffer: int | None = None
    """online transitions collected before the first update; default utd * batch_size * (1 - offline_ratio of
    keep_offline_mixed, else 0), the official finetune.py min_steps_to_update"""
    utd: int = 4
    """critic updates per environment step (official launch_wsrl_finetune.sh --utd 4)"""
    actor_update: Literal["all", "last", "every"] = "all"
    """actor/temperature steps per UTD round: one on all its minibatches together (official update_high_utd),
    one on the last (REDQ), or one after every critic step"""
    idle_steps: bool = True
    """with actor_update 'all' and utd > 1, the networks a step does not train take an Adam step with a zero
    gradient, as the official update_high_utd does (optax applies every optimizer at every update): the actor and
    temperature move on their Adam momentum after each critic step; False: only real steps"""
    batch_size: int = 256
    """minibatch of each critic update; a UTD round draws utd * batch_size transitions (official --batch_size
    1024 at --utd 4)"""
    buffer_size: int = 2_000_000
    """online replay buffer capacity (keep_offline_append: also holds the offline data; official
    replay_buffer_capacity)"""
    num_envs: int = 1
    """parallel environments"""
    backup_entropy: bool | None = None
    """subtract alpha * log pi in the online TD target of the loaded agent; default False (official
    sac_config.py); --mode scratch: use --agent.backup-entropy"""
    max_target_backup: bool | None = None
    """online max-target backup of the loaded agent; default False (official locomotion_wsrl; CQL pretraining
    uses it); --mode scratch: use --agent.max-target-backup"""
    offline_ratio: float = 0.5
    """[keep_offline_mixed] share of each UTD round drawn from the offline data (official launch_rlpd.sh)"""
    mix: Literal["concat", "per_batch"] = "concat"
    """[keep_offline_mixed] concat: the online and offline draws are concatenated, then cut into the UTD
    minibatches, so at UTD > 1 a critic minibatch is all online or all offline (official finetune.py with
    update_high_utd); per_batch: every critic minibatch has the offline share (RLPD's symmetric sampling)"""
    scratch_warmup: Literal["policy", "uniform"] = "policy"
    """[scratch] warmup actions from the fresh agent's own policy (official finetune.py without pretraining) or
    uniform random actions"""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """[scratch] networks and losses of the fresh agent (the other modes load them from the checkpoint)"""
    first_episodes_to_log: int = 10
    """how many episodes after the switch are logged one by one (switch/episode_return)"""
    seed: int = 0
    """seed of environments, sampling and (scratch) initialisation"""
    backend: Literal["auto", "envpool", "gymnasium"] = "auto"
    """environment backend: auto, envpool, gymnasium"""
    run_dir: str = "runs/wsrl"
    """where config.yaml, metrics.csv, tb/ and checkpoint.pt go"""
    log_every: int = 5000
    """log training metrics every this many steps (official finetune.py log_interval)"""
    eval_every: int = 20_000
    """evaluate every this many steps and at the end (0: never; official eval_interval)"""
    eval_episodes: int = 20
    """episodes per evaluation (official n_eval_trajs)"""
    checkpoint_every: int = 100_000
    """checkpoint every this many steps and at the end (official save_interval); running episodes are cut there"""


@dataclass
class WSRLResult:
    """What :func:`train_wsrl` returns."""

    agent: SACAgent
    buffer: Any
    """the online ReplayBuffer"""
    episode_returns: list[float]
    """returns of the online episodes (warmup included), in order"""
    switch_metrics: dict[str, float]
    """Q-values and returns at the end of the update-free phase"""


def check_mode_options(cfg: WSRLConfig) -> None:
    """Reject the options that ``cfg.mode`` would ignore (a ValueError that names them)."""
    default = WSRLConfig()
    offline = cfg.mode.startswith("keep_offline")
    ignored = {
        "--checkpoint": cfg.mode == "scratch" and bool(cfg.checkpoint),
        "--dataset": not offline and cfg.dataset is not None,
        "--offline-ratio": cfg.mode != "keep_offline_mixed" and cfg.offline_ratio != default.offline_ratio,
        "--mix": cfg.mode != "keep_offline_mixed" and cfg.mix != default.mix,
        "--warmup-steps": cfg.mode == "no_warmup" and bool(cfg.warmup_steps),
        "--scratch-warmup": cfg.mode != "scratch" and cfg.scratch_warmup != default.scratch_warmup,
        "--agent.* (the agent comes from --checkpoint)": cfg.mode != "scratch" and cfg.agent != default.agent,
        "--backup-entropy (use --agent.backup-entropy)": cfg.mode == "scratch" and cfg.backup_entropy is not None,
        "--max-target-backup (use --agent.max-target-backup)": cfg.mode == "scratch"
        and cfg.max_target_backup is not None,
    }
    rejected = [name for name, bad in ignored.items() if bad]
    if rejected:
        raise ValueError(f"--mode {cfg.mode} does not use {', '.join(rejected)}")
    if cfg.mode != "scratch" and not cfg.checkpoint:
        raise ValueError(f"--mode {cfg.mode} needs --checkpoint (a `pyseqrl train calql` checkpoint)")
    checks.number("offline_ratio", cfg.offline_ratio, low=0.0, high=1.0, high_open=True)


def check_config(cfg: WSRLConfig) -> None:
    """The ranges of a :class:`WSRLConfig` and the options its mode uses (a ValueError naming the option, the
    range and the value found)."""
    if cfg.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {cfg.mode!r}")
    check_options(cfg)
    check_mode_options(cfg)
    checks.integer("total_steps", cfg.total_steps, 1)
    checks.optional(checks.integer, "warmup_steps", cfg.warmup_steps, 0)
    checks.optional(checks.integer, "min_buffer", cfg.min_buffer, 0)
    checks.integer("utd", cfg.utd, 1)
    checks.integer("batch_size", cfg.batch_size, 1)
    checks.integer("buffer_size", cfg.buffer_size, 1)
    checks.integer("num_envs", cfg.num_envs, 1)
    checks.integer("first_episodes_to_log", cfg.first_episodes_to_log, 0)
    checks.integer("eval_episodes", cfg.eval_episodes, 1)
    if cfg.actor_update not in ACTOR_UPDATES:
        raise ValueError(f"actor_update must be one of {ACTOR_UPDATES}, got {cfg.actor_update!r}")
    check_agent_config(cfg.agent)
    if cfg.env_id is not None:
        check_env_id(cfg.env_id, cfg.backend)


def train_wsrl(cfg: WSRLConfig) -> WSRLResult:
    """Fine-tune online (or run a baseline); see the module docstring."""
    check_config(cfg)
    pretrained = None if cfg.mode == "scratch" else load_torch(cfg.checkpoint)
    if pretrained is not None and "agent" not in pretrained:
        raise ValueError(f"{cfg.checkpoint!r} has no 'agent' entry: not a pyseqrl calql/sac checkpoint")
    env_id = cfg.env_id or (pretrained or {}).get("env_id")
    if not env_id:
        raise ValueError("no environment: pass --env-id (the checkpoint does not name one)")
    warmup = 0 if cfg.mode == "no_warmup" else cfg.warmup_steps
    if warmup is None:
        warmup = 5000 if cfg.mode in ("wsrl", "scratch") else 0
    offline_per_batch = int(cfg.batch_size * cfg.offline_ratio) if cfg.mode == "keep_offline_mixed" else 0
    min_buffer = cfg.utd * (cfg.batch_size - offline_per_batch) if cfg.min_buffer is None else cfg.min_buffer
    update_start = max(warmup, math.ceil(min_buffer / cfg.num_envs))  # first step that updates

    resume_keys = ("env_id", "checkpoint", "dataset", "buffer_size", *NETWORK_KEYS)
    state = open_run(
        cfg, check=resume_check("train wsrl", (f"wsrl-{cfg.mode}",), asdict(cfg), resume_keys, cfg.run_dir)
    )
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    runner = make_runner(env_id, cfg.num_envs, cfg.seed, cfg.backend)
    env = runner.env
    if pretrained is None:  # ---- [scratch] a fresh agent
        agent = SACAgent(env.observation_dim, env.action_dim, cfg.agent, env.action_low, env.action_high)
    else:  # ---- the pretrained agent (weights, temperature, optimizer states) with the online loss settings
        agent = SACAgent.from_state_dict(
            pretrained["agent"],
            backup_entropy=bool(cfg.backup_entropy),
            max_target_backup=bool(cfg.max_target_backup),
        )
        if (agent.observation_dim, agent.action_dim) != (env.observation_dim, env.action_dim):
            raise ValueError(
                f"checkpoint has (S, A) = {(agent.observation_dim, agent.action_dim)} but {env_id} has "
                f"{(env.observation_dim, env.action_dim)}"
            )
    agent.bf16 = autocast_bf16(cfg.precision, torch.device("cpu"))
    buffer = ReplayBuffer(
        cfg.buffer_size, obs_shape=(env.observation_dim,), action_shape=(env.action_dim,), seed=cfg.seed
    )
    learner = SACPolicy(agent.actor, deterministic=False)  # unchanged during the warmup: the pretrained policy
    explore = RandomPolicy(env.action_low, env.action_high, seed=cfg.seed)  # [scratch] --scratch-warmup uniform
    offline: dict[str, torch.Tensor] | None = None
    if cfg.mode.startswith("keep_offline"):  # ---- [keep_offline] the baselines that keep the offline data
        path = cfg.dataset or pretrained["config"].get("dataset")  # type: ignore[index]
        if not path:
            raise ValueError(f"--mode {cfg.mode} needs --dataset (the checkpoint does not name its dataset)")
        offline = {
            k: torch.from_numpy(np.ascontiguousarray(v, np.float32))
            for k, v in load(path).transitions().items()
            if k != "step_index"
        }
        if cfg.mode == "keep_offline_append" and state is None:
            o = {k: v.numpy() for k, v in offline.items()}
            buffer.add(o["observations"], o["actions"], o["rewards"], o["next_observations"], o["terminals"] > 0)
    offline_gen = torch.Generator().manual_seed(cfg.seed + 1)

    start, returns, switch_logged, switch_metrics = 0, [], 0, {}
    if state is not None:
        start, returns = restore_online(state, agent, buffer)
        offline_gen.set_state(state["offline_rng"])
        explore.rng.bit_generator.state = state["explore_rng"]
        switch_logged, switch_metrics = state["switch_logged"], dict(state["switch_metrics"])
        runner.env.close()
        runner = make_runner(env_id, cfg.num_envs, cfg.seed, cfg.backend, step=start)
        log.info("resumed %s at step %d", checkpoint_path(cfg), start)
    logger = open_logger(cfg, start if state is not None else None)
    log.info(
        "WSRL mode=%s env=%s warmup=%d first update at step %d, utd=%d, offline transitions=%s",
        cfg.mode,
        env_id,
        warmup,
        update_start,
        cfg.utd,
        None if offline is None else len(offline["rewards"]),
    )

    def draw_round() -> list[Batch]:
        """The utd minibatches of one update round."""
        if offline is None:
            return sample_batches(buffer, cfg.batch_size, cfg.utd)
        # ---- [keep_offline_mixed] offline_ratio of the round comes from the offline data
        online = to_batch(buffer.sample(cfg.utd * (cfg.batch_size - offline_per_batch)))
        idx = torch.randint(len(offline["rewards"]), (cfg.utd * offline_per_batch,), generator=offline_gen)
        off = {k: offline[k][idx] for k in online}
        if cfg.mix == "concat":
            return split({k: torch.cat([online[k], off[k]]) for k in online}, cfg.utd)
        return [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(split(online, cfg.utd), split(off, cfg.utd))]

    metrics: dict[str, Any] = {}
    clock, clock_step = time.perf_counter(), start
    for step in tqdm(
        range(start, cfg.total_steps),
        initial=start,
        total=cfg.total_steps,
        desc=f"wsrl {cfg.mode}",
        disable=not cfg.progress,
        dynamic_ncols=True,
    ):
        # ---- act and step: the agent's own policy, unchanged until update_start (the pretrained one [wsrl])
        scratch_uniform = cfg.mode == "scratch" and cfg.scratch_warmup == "uniform" and step < warmup
        t = runner.step(explore if scratch_uniform else learner)
        if len(t):
            buffer.add(t.observations, t.actions, t.rewards, t.next_observations, t.terminated)
        for ret in t.episode_returns.tolist():
            returns.append(ret)
            if step >= update_start and switch_logged < cfg.first_episodes_to_log:
                switch_logged += 1
                logger.log(step + 1, {"switch/episode_return": ret, "switch/episode_index": switch_logged})

        # ---- [wsrl] at the switch to learning: the critics' Q-values on the data collected so far
        if step + 1 == update_start:
            switch_metrics = q_values_at_switch(agent, buffer, returns)
            logger.log(step + 1, switch_metrics)
            log.info(
                "at the switch (step %d): %s", step + 1, ", ".join(f"{k}={v:.4g}" for k, v in switch_metrics.items())
            )

        # ---- update: a UTD round per collected transition, none before update_start
        if step >= update_start:
            for _ in range(len(t)):
                metrics = agent.update(draw_round(), cfg.actor_update, cfg.idle_steps)

        # ---- log, evaluate, checkpoint
        done = step + 1
        if due(done, cfg.log_every, cfg.total_steps):
            now = time.perf_counter()
            row = {k: float(v) for k, v in metrics.items()}
            row["time/env_steps_per_s"] = (done - clock_step) * cfg.num_envs / max(now - clock, 1e-9)
            if returns:
                row["train/episode_return"] = mean_last(returns)
            logger.log(done, row)
            clock, clock_step = now, done
        if cfg.eval_every and due(done, cfg.eval_every, cfg.total_steps):
            ev = evaluate_actor(agent, env_id, cfg.eval_episodes, cfg.seed, done)
            logger.log(done, ev)
            log.info("step %d: %s", done, ", ".join(f"{k}={v:.4g}" for k, v in ev.items()))
        if due(done, cfg.checkpoint_every, cfg.total_steps):
            runner.env.close()  # checkpoints cut the running episodes and re-create the environments
            runner = make_runner(env_id, cfg.num_envs, cfg.seed, cfg.backend, step=done)
            save_torch(
                online_state(
                    done,
                    agent,
                    buffer,
                    returns,
                    offline_rng=offline_gen.get_state(),
                    explore_rng=explore.rng.bit_generator.state,
                    switch_logged=switch_logged,
                    switch_metrics=switch_metrics,
                    config=asdict(cfg),
                    env_id=env_id,
                    algo="sac",
                    method=f"wsrl-{cfg.mode}",
                ),
                checkpoint_path(cfg),
                keep_previous=True,
            )
    logger.close()
    runner.env.close()
    return WSRLResult(agent=agent, buffer=buffer, episode_returns=returns, switch_metrics=switch_metrics)


@torch.no_grad()
def q_values_at_switch(agent: SACAgent, buffer: Any, returns: list[float]) -> dict[str, float]:
    """``switch/*`` metrics: the critics' Q-values on (up to 1024 of) the collected transitions and at the
    policy's actions, their spread over the ensemble, and the mean return of the episodes so far."""
    batch = to_batch(buffer.sample(min(1024, max(len(buffer), 1))))
    q = agent.critic(batch["observations"], batch["actions"])  # (N, B)
    pi, _ = agent.actor(batch["observations"], deterministic=True, with_log_prob=False)
    q_pi = agent.critic(batch["observations"], pi)  # (N, B)
    out = {
        "switch/q_data_mean": float(q.mean()),
        "switch/q_data_std_over_critics": float(q.std(0).mean()) if q.shape[0] > 1 else 0.0,
        "switch/q_pi_mean": float(q_pi.mean()),
        "switch/buffer_size": float(len(buffer)),
    }
    if returns:
        out["switch/warmup_episode_return"] = float(np.mean(returns))
    return out


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl train wsrl [options]``."""
    cfg = parse_config(
        WSRLConfig,
        argv,
        __doc__.split("\n\n")[0] + " (YAML presets: --config configs/wsrl/*.yaml)",
        prog="pyseqrl train wsrl",
    )
    result = train_wsrl(cfg)
    if result.episode_returns:
        print(
            f"mode {cfg.mode}: {len(result.episode_returns)} episodes, mean return of the last 10: "
            f"{mean_last(result.episode_returns):.1f}; checkpoint: {Path(cfg.run_dir) / 'checkpoint.pt'}"
        )
    return 0
