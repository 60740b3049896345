"""Offline pretraining with Cal-QL or CQL on an EpisodeDataset: ``pyseqrl train calql``.

CQL (Kumar et al. 2020) adds to the SAC critic loss, for every critic ``i``,

    alpha * E_s[ T * logsumexp_a( Q_i(s, a) / T ) - E_{a ~ data} Q_i(s, a) ]

where the log-sum-exp runs over ``n`` uniform random actions and ``n`` policy actions at ``s`` and at ``s'``
(with importance weights). Cal-QL (Nakamoto et al. 2023) calibrates it: the policy actions' Q-values inside
the log-sum-exp are clipped from below by the Monte-Carlo return of the data, ``max(Q_i(s, a_pi), G(s))``,
with ``G`` the discounted return of ``reward_scale * r + reward_bias`` to the end of the episode, so the
regulariser never pushes Q below a return the behaviour policy already achieved. Both use CQL's max-target
backup by default (``agent.max_target_backup``, official ``cql_config.py``). The resulting checkpoint is what
``pyseqrl train wsrl`` fine-tunes.

Example:
    pyseqrl train calql --config configs/wsrl/cql_hopper.yaml --dataset data/hopper-medium.h5
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyseqrl.algos.rl_agent import AgentConfig, Batch, SACAgent, check_agent_config
from pyseqrl.algos.rl_online import NETWORK_KEYS, evaluate_actor, resume_check
from pyseqrl.data import EpisodeDataset, load
from pyseqrl.envs import check_env_id, make
from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import rng_state, save_torch, set_rng_state
from pyseqrl.utils.precision import autocast_bf16
from pyseqrl.utils.runs import RunOptions, check_options, checkpoint_path, due, open_logger, open_run, parse_config

log = logging.getLogger(__name__)


@dataclass
class CQLConfig:
    """The CQL / Cal-QL regulariser (defaults: official cql_config.py, with Cal-QL's bound on)."""

    calql: bool = True
    """clip the policy actions' Q-values from below by Monte-Carlo returns (Cal-QL); False: plain CQL"""
    alpha: float = 5.0
    """weight of the regulariser"""
    num_actions: int = 10
    """random and policy actions per state inside the log-sum-exp"""
    temperature: float = 1.0
    """temperature T of the log-sum-exp"""
    importance_sample: bool = True
    """subtract the log-density of each sampled action (CQL(H) with importance sampling)"""


@dataclass
class CalQLConfig(RunOptions):
    """Offline Cal-QL / CQL pretraining."""

    dataset: str = ""
    """dataset file (anything pyseqrl.data.load reads: pyseqrl HDF5, D4RL hdf5, Minari, DT pickle)"""
    env_id: str | None = None
    """environment for evaluation; default: the dataset's metadata env_id"""
    steps: int = 1_000_000
    """gradient steps (official finetune.py num_offline_steps; its locomotion scripts use 250k with CQL)"""
    batch_size: int = 256
    """minibatch size"""
    seed: int = 0
    """seed of networks and sampling"""
    cql: CQLConfig = field(default_factory=CQLConfig)
    """the regulariser"""
    agent: AgentConfig = field(default_factory=lambda: AgentConfig(max_target_backup=True))
    """networks and SAC losses (official cql_config.py: max-target backup, no entropy backup)"""
    run_dir: str = "runs/calql"
    """where config.yaml, metrics.csv, tb/ and checkpoint.pt go"""
    log_every: int = 5000
    """log training metrics every this many steps (official finetune.py log_interval)"""
    eval_every: int = 20_000
    """evaluate every this many steps and at the end (0: never; needs an env id; official eval_interval)"""
    eval_episodes: int = 20
    """episodes per evaluation (official n_eval_trajs)"""
    checkpoint_every: int = 100_000
    """checkpoint every this many steps and at the end (official save_interval)"""


def offline_data(
    ds: EpisodeDataset, gamma: float, reward_scale: float = 1.0, reward_bias: float = 0.0
) -> dict[str, torch.Tensor]:
    """The Q-learning transitions of a dataset (:meth:`EpisodeDataset.transitions`) with their Monte-Carlo
    returns, as torch tensors.

    ``mc_returns`` is the discounted return of ``reward_scale * r + reward_bias`` from each step to the end of
    its episode as the data recorded it, computed from the dataset's returns-to-go:
    ``reward_scale * G_t + reward_bias * (1 - gamma^(T - t)) / (1 - gamma)``.

    Returns:
        observations f32[M,S], actions f32[M,A], rewards f32[M] (unscaled: the agent scales them),
        next_observations f32[M,S], terminals f32[M], mc_returns f32[M].
    """
    t = ds.transitions()
    step = t.pop("step_index")  # int64 [M]: the dataset step of each transition
    remaining = (ds.episode_ends[ds.episode_index()] - np.arange(len(ds)))[step]  # steps to the episode end
    bias_return = remaining if gamma == 1.0 else (1.0 - gamma ** remaining.astype(np.float64)) / (1.0 - gamma)
    t["mc_returns"] = reward_scale * ds.returns_to_go(gamma)[step] + reward_bias * bias_return
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in t.items()}


def cql_regularizer(cfg: CQLConfig) -> Callable[[SACAgent, Batch, torch.Tensor], tuple[torch.Tensor, dict]]:
    """The CQL / Cal-QL term for :meth:`SACAgent.update_critic` (needs ``batch["mc_returns"]`` for Cal-QL)."""

    def regularizer(agent: SACAgent, batch: Batch, q_data: torch.Tensor) -> tuple[torch.Tensor, dict]:
        obs, next_obs = batch["observations"], batch["next_observations"]
        b, n, big_n = obs.shape[0], cfg.num_actions, q_data.shape[0]
        obs_rep = obs.repeat_interleave(n, 0)  # (B*n, S): each state n times
        with torch.no_grad():
            scale, bias = agent.actor.action_scale, agent.actor.action_bias
            rand_a = bias + scale * (2 * torch.rand(b * n, agent.action_dim) - 1)  # (B*n, A) uniform in bounds
            cur_a, cur_lp = agent.actor(obs_rep)  # (B*n, A), (B*n,)
            next_a, next_lp = agent.actor(next_obs.repeat_interleave(n, 0))
        # one ensemble call for the three action sets, all evaluated at s
        q = agent.critic(obs_rep.repeat(3, 1), torch.cat([rand_a, cur_a, next_a]))  # (N, 3*B*n)
        q_rand, q_cur, q_next = q.view(big_n, 3, b, n).unbind(1)  # each (N, B, n)
        metrics: dict[str, Any] = {}
        if cfg.calql:
            # ---- Cal-QL: the policy's Q-values are bounded below by the data's Monte-Carlo return
            lower = batch["mc_returns"].view(1, b, 1)  # (1, B, 1)
            metrics["calql/bound_rate"] = (q_cur < lower).float().mean().detach()
            q_cur = torch.maximum(q_cur, lower)
            q_next = torch.maximum(q_next, lower)
        if cfg.importance_sample:
            rand_log_density = -torch.log(2 * scale).sum()  # uniform density over the action box
            cat = torch.cat(
                [q_rand - rand_log_density, q_next - next_lp.view(1, b, n), q_cur - cur_lp.view(1, b, n)],
                dim=-1,
            )  # (N, B, 3n)
        else:
            cat = torch.cat([q_rand, q_next, q_cur, q_data.unsqueeze(-1)], dim=-1)  # (N, B, 3n+1)
        lse = torch.logsumexp(cat / cfg.temperature, dim=-1) * cfg.temperature  # (N, B)
        gap = (lse - q_data).mean(1)  # (N,): per critic
        metrics.update(
            {
                "cql/gap": gap.mean().detach(),
                "cql/q_rand": q_rand.mean().detach(),
                "cql/q_pi": q_cur.mean().detach(),
            }
        )
        return cfg.alpha * gap.sum(), metrics

    return regularizer


def check_config(cfg: CalQLConfig) -> None:
    """The ranges of a :class:`CalQLConfig` (a ValueError naming the option, the range and the value found)."""
    check_options(cfg)
    checks.integer("steps", cfg.steps, 1)
    checks.integer("batch_size", cfg.batch_size, 1)
    checks.integer("eval_episodes", cfg.eval_episodes, 1)
    checks.number("cql.alpha", cfg.cql.alpha, low=0.0)
    checks.integer("cql.num_actions", cfg.cql.num_actions, 1)
    checks.positive("cql.temperature", cfg.cql.temperature)
    check_agent_config(cfg.agent)
    if cfg.env_id is not None:
        check_env_id(cfg.env_id)


def train_calql(cfg: CalQLConfig, dataset: EpisodeDataset | None = None) -> SACAgent:
    """Pretrain an agent offline; writes ``<run_dir>/checkpoint.pt`` (the input of ``pyseqrl train wsrl``).

    Args:
        cfg: the configuration.
        dataset: an EpisodeDataset to use instead of loading ``cfg.dataset``.
    """
    check_config(cfg)
    if dataset is None:
        if not cfg.dataset:
            raise ValueError("CalQLConfig.dataset is empty: pass --dataset PATH (or a dataset to train_calql)")
        dataset = load(cfg.dataset)
    env_id = cfg.env_id or (dataset.metadata or {}).get("env_id")
    state = open_run(cfg, check=resume_check("train calql", ("calql", "cql"), asdict(cfg), RESUME_KEYS, cfg.run_dir))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    a = cfg.agent
    data = offline_data(dataset, a.gamma, a.reward_scale, a.reward_bias)
    m = len(data["rewards"])
    if m == 0:
        raise ValueError("the dataset has no usable transition (every episode is a single non-terminal step)")
    agent = SACAgent(dataset.observation_dim, dataset.action_dim, a, *action_bounds(env_id, data["actions"]))
    agent.bf16 = autocast_bf16(cfg.precision, torch.device("cpu"))
    regularizer = cql_regularizer(cfg.cql)
    gen = torch.Generator().manual_seed(cfg.seed)

    start = 0
    if state is not None:
        agent.load_full_state_dict(state["agent"])
        set_rng_state(state["rng"])
        gen.set_state(state["sampler_rng"])
        start = int(state["step"])
        log.info("resumed %s at step %d", checkpoint_path(cfg), start)
    logger = open_logger(cfg, start if state is not None else None)

    metrics: dict[str, Any] = {}
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not cfg.progress, desc="calql"):
        # ---- sample, TD + CQL/Cal-QL loss, actor and temperature
        idx = torch.randint(m, (cfg.batch_size,), generator=gen)
        batch = {k: v[idx] for k, v in data.items()}
        metrics.update(agent.update_critic(batch, regularizer))
        metrics.update(agent.update_actor(batch))
        # ---- log, evaluate, checkpoint
        done = step + 1
        if due(done, cfg.log_every, cfg.steps):
            logger.log(done, {k: float(v) for k, v in metrics.items()})
        if cfg.eval_every and env_id and due(done, cfg.eval_every, cfg.steps):
            ev = evaluate_actor(agent, env_id, cfg.eval_episodes, cfg.seed, done)
            logger.log(done, ev)
            log.info("step %d: %s", done, ", ".join(f"{k}={v:.4g}" for k, v in ev.items()))
        if due(done, cfg.checkpoint_every, cfg.steps):
            save_torch(
                {
                    "step": done,
                    "agent": agent.full_state_dict(),
                    "rng": rng_state(),
                    "sampler_rng": gen.get_state(),
                    "config": asdict(cfg),
                    "env_id": env_id,
                    "algo": "sac",  # the policy scheme: a SAC actor
                    "method": "calql" if cfg.cql.calql else "cql",
                },
                checkpoint_path(cfg),
                keep_previous=True,
            )
    logger.close()
    return agent


RESUME_KEYS = ("dataset", "env_id", *NETWORK_KEYS)
"""A Cal-QL run resumes only with the same data, environment and networks."""


def action_bounds(env_id: str | None, actions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The action box of ``env_id``; without an environment, ``[-1, 1]`` widened to the data's range."""
    if env_id is not None:
        try:
            env = make(env_id, 1, seed=0)
        except Exception as e:  # noqa: BLE001 -- env not installed: fall back on the data's range
            log.warning("could not create %s to read its action bounds (%s); using [-1, 1] / the data range", env_id, e)
        else:
            env.close()
            return env.action_low, env.action_high
    return np.minimum(actions.amin(0).numpy(), -1.0), np.maximum(actions.amax(0).numpy(), 1.0)


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl train calql [options]``."""
    cfg = parse_config(
        CalQLConfig,
        argv,
        __doc__.split("\n\n")[0] + " (YAML presets: --config configs/wsrl/*.yaml)",
        prog="pyseqrl train calql",
    )
    train_calql(cfg)
    print(f"checkpoint: {Path(cfg.run_dir) / 'checkpoint.pt'}")
    return 0
