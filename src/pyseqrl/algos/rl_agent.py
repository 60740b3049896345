"""The SAC agent shared by online SAC, Cal-QL/CQL pretraining and WSRL fine-tuning.

One :class:`SACAgent` holds the actor, the critic ensemble and its target, the temperature and their
optimizers. Its update is the SAC update with the REDQ/WSRL ensemble rule, as in the official WSRL code
(``wsrl/agents/sac.py``):

* critic: ``y = s * r + b + gamma * (1 - d) * (min_{i in M} Q'_i(s', a') - [alpha * log pi(a'|s')])`` where
  ``M`` is a random draw of ``critic_subsample`` (default 2) of the ``N`` target critics (all ``N`` when
  ``critic_subsample == N``, as the official agent without an ensemble) and ``a' ~ pi(s')``;
  every critic regresses onto the same ``y``. With ``max_target_backup`` the target takes the best of
  ``backup_actions`` sampled ``a'`` (CQL's max-target backup). Cal-QL/CQL add a regulariser to this loss (see
  ``pyseqrl.algos.calql``).
* actor: ``alpha * log pi(a|s) - agg_i Q_i(s, a)`` with ``agg`` the min (or mean) over all ``N`` critics.
* temperature: ``log_alpha * (H - target_entropy)`` with ``H = -E log pi(a'|s')`` at the next observations
  (``temperature_states="next"``, as the official code) or ``-E log pi(a|s)`` (``"current"``, as the SAC paper);
  target entropy ``-|A|`` by default.

The defaults of :class:`AgentConfig` are those of the official WSRL runs: ``experiments/configs/sac_config.py``
with ``wsrl_config.py`` (10 critics, 2 in the target, LayerNorm in actor and critics) and the locomotion entry of
``train_config.py`` (orthogonal init, last hidden layer gain 1e-2).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from pyseqrl.algos.rl_nets import CriticEnsemble, soft_update
from pyseqrl.policies.sac import ACTOR_FIELDS, LEGACY_ACTOR, SACPolicy, TanhGaussianActor, agent_state
from pyseqrl.policies.sac import make_actor as policy_actor
from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import load_torch, save_torch

__all__ = [
    "AgentConfig",
    "Batch",
    "SACAgent",
    "SACPolicy",
    "check_agent_config",
    "config_from_dict",
    "export_actor",
    "make_actor",
]

ACTOR_UPDATES = ("all", "last", "every")
"""How :meth:`SACAgent.update` schedules the actor and temperature steps of one update-to-data round."""

Batch = dict[str, torch.Tensor]
"""A minibatch of transitions: observations f32[B,S], actions f32[B,A], rewards f32[B], next_observations
f32[B,S], terminals f32[B] (1.0 where the episode terminated), and optionally mc_returns f32[B]."""


@dataclass
class AgentConfig:
    """Hyperparameters of the SAC agent (networks, losses, optimizers); defaults follow the official WSRL runs."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """widths of the hidden layers of actor and critics"""
    num_critics: int = 10
    """number of critics in the ensemble (official wsrl_config.py)"""
    critic_subsample: int = 2
    """the TD target takes the min over this many randomly drawn target critics (official wsrl_config.py); equal
    to num_critics: the min over all of them, no draw (the official agent without --use_redq, 2 critics)"""
    critic_subsample_replace: bool = True
    """draw the target critics with replacement, as the official sac.py (jax.random.randint); False: distinct
    critics, as the REDQ paper"""
    critic_layer_norm: bool = True
    """LayerNorm after every hidden layer of the critics (official wsrl_config.py)"""
    actor_layer_norm: bool = True
    """LayerNorm after every hidden layer of the actor (official wsrl_config.py)"""
    init: Literal["orthogonal", "torch"] = "orthogonal"
    """weight init of actor and critics: orthogonal with gain sqrt(2) and zero biases (official
    initialization.py), or torch.nn.Linear's default"""
    last_hidden_gain: float = 1e-2
    """orthogonal gain of the last hidden layer of actor and critics (official train_config.py kernel_scale_final)"""
    actor_std_min: float = 1e-5
    """lower clip of the actor's standard deviation (official actor_critic_nets.py Policy.std_min)"""
    actor_std_max: float = 10.0
    """upper clip of the actor's standard deviation (official Policy.std_max)"""
    actor_q_agg: Literal["min", "mean"] = "min"
    """how the actor aggregates the ensemble: 'min' (official sac.py) or 'mean'"""
    gamma: float = 0.99
    """discount factor"""
    tau: float = 0.005
    """Polyak rate of the target critics"""
    actor_lr: float = 1e-4
    """actor learning rate (official sac_config.py)"""
    critic_lr: float = 3e-4
    """critic learning rate (official sac_config.py)"""
    temperature_lr: float = 1e-4
    """temperature learning rate (official sac_config.py)"""
    init_temperature: float = 1.0
    """initial entropy temperature alpha"""
    target_entropy: float | None = None
    """entropy target of the temperature; None means -|A|"""
    temperature_states: Literal["next", "current"] = "next"
    """the temperature loss uses log pi(a'|s') at the next observations (official sac.py temperature_loss_fn) or
    log pi(a|s) at the observations (the SAC paper)"""
    backup_entropy: bool = False
    """subtract alpha * log pi(a'|s') in the TD target (official sac_config.py: False)"""
    max_target_backup: bool = False
    """TD target from the best of backup_actions sampled next actions (CQL's max-target backup)"""
    backup_actions: int = 10
    """next actions sampled per transition by max_target_backup (official cql_n_actions)"""
    reward_scale: float = 1.0
    """rewards are used as reward_scale * r + reward_bias"""
    reward_bias: float = 0.0
    """see reward_scale"""


LEGACY_CONFIG: dict[str, Any] = {
    **LEGACY_ACTOR,
    "critic_subsample_replace": False,
    "temperature_states": "current",
    "max_target_backup": False,
}
"""Values of the fields that checkpoints written before they existed were trained with."""


def check_agent_config(config: AgentConfig, prefix: str = "agent.") -> None:
    """The ranges of every :class:`AgentConfig` field (a ValueError naming the field as ``prefix + name``, the
    expected range and the value found)."""
    c, p = config, prefix
    if not c.hidden_dims:
        raise ValueError(f"{p}hidden_dims must hold at least one width, got {c.hidden_dims!r}")
    for width in c.hidden_dims:
        checks.integer(f"{p}hidden_dims", width, 1)
    checks.integer(f"{p}num_critics", c.num_critics, 1)
    if not isinstance(c.critic_subsample, int) or not 1 <= c.critic_subsample <= c.num_critics:
        raise ValueError(
            f"{p}critic_subsample must be an integer in [1, {p}num_critics={c.num_critics}] (the TD target takes the "
            f"min over that many critics), got {c.critic_subsample!r}"
        )
    if c.init not in ("orthogonal", "torch"):
        raise ValueError(f"{p}init must be 'orthogonal' or 'torch', got {c.init!r}")
    checks.number(f"{p}last_hidden_gain", c.last_hidden_gain, low=0.0)
    checks.positive(f"{p}actor_std_min", c.actor_std_min)
    checks.number(f"{p}actor_std_max", c.actor_std_max, low=c.actor_std_min, low_open=True)
    if c.actor_q_agg not in ("min", "mean"):
        raise ValueError(f"{p}actor_q_agg must be 'min' or 'mean', got {c.actor_q_agg!r}")
    checks.fraction(f"{p}gamma", c.gamma)
    checks.fraction(f"{p}tau", c.tau)
    for name in ("actor_lr", "critic_lr", "temperature_lr", "init_temperature"):
        checks.positive(p + name, getattr(c, name))
    checks.optional(checks.number, f"{p}target_entropy", c.target_entropy)
    if c.temperature_states not in ("next", "current"):
        raise ValueError(f"{p}temperature_states must be 'next' or 'current', got {c.temperature_states!r}")
    checks.integer(f"{p}backup_actions", c.backup_actions, 1)
    checks.number(f"{p}reward_scale", c.reward_scale)
    checks.number(f"{p}reward_bias", c.reward_bias)


def config_from_dict(values: dict[str, Any], **overrides: Any) -> AgentConfig:
    """An :class:`AgentConfig` from a saved dict; fields the dict lacks take :data:`LEGACY_CONFIG` (the
    behaviour of the checkpoints that predate them), then the class defaults."""
    known = {f.name for f in fields(AgentConfig)}
    cfg = {k: v for k, v in LEGACY_CONFIG.items()}
    cfg.update({k: v for k, v in values.items() if k in known})
    cfg.update(overrides)
    cfg["hidden_dims"] = tuple(cfg.get("hidden_dims", AgentConfig.hidden_dims))
    return AgentConfig(**cfg)


def make_actor(
    observation_dim: int,
    action_dim: int,
    config: AgentConfig,
    action_low: np.ndarray | float = -1.0,
    action_high: np.ndarray | float = 1.0,
) -> TanhGaussianActor:
    """The actor network that ``config`` describes."""
    return policy_actor(observation_dim, action_dim, asdict(config), action_low, action_high)


class SACAgent(nn.Module):
    """Actor, critic ensemble, target critics, temperature and their Adam optimizers.

    Args:
        observation_dim: ``S``.
        action_dim: ``A``.
        config: hyperparameters.
        action_low: lower action bounds, float ``(A,)`` (default -1).
        action_high: upper action bounds, float ``(A,)`` (default 1).

    Example:
        >>> agent = SACAgent(3, 1, AgentConfig(hidden_dims=(32, 32), num_critics=4))
        >>> b = {"observations": torch.zeros(8, 3), "actions": torch.zeros(8, 1), "rewards": torch.zeros(8),
        ...      "next_observations": torch.zeros(8, 3), "terminals": torch.zeros(8)}
        >>> metrics = agent.update_critic(b); metrics = agent.update_actor(b)
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        config: AgentConfig,
        action_low: np.ndarray | float = -1.0,
        action_high: np.ndarray | float = 1.0,
    ):
        super().__init__()
        check_agent_config(config)
        self.config = config
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.actor = make_actor(observation_dim, action_dim, config, action_low, action_high)
        self.critic = CriticEnsemble(
            observation_dim,
            action_dim,
            tuple(config.hidden_dims),
            config.num_critics,
            config.critic_layer_norm,
            init=config.init,
            last_hidden_gain=config.last_hidden_gain,
        )
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(config.init_temperature), dtype=torch.float32))
        self.target_entropy = float(-action_dim if config.target_entropy is None else config.target_entropy)
        # fused Adam: one kernel per parameter group step (CPU and CUDA), measurably faster at UTD 4
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, fused=True)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, fused=True)
        self.alpha_optim = torch.optim.Adam([self.log_alpha], lr=config.temperature_lr)
        self.num_updates = 0
        """critic updates performed so far (tests use it to prove that no update happened)"""
        self.bf16 = False
        """run the updates' matmuls under bf16 autocast (set by the trainers' ``precision``); losses, weights and
        optimizer state stay float32"""

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    # ------------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, observations: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions for a batch of observations: float32 ``[n, S]`` -> float32 ``[n, A]``."""
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
        actions, _ = self.actor(obs, deterministic=deterministic, with_log_prob=False)
        return actions.numpy()

    # ---------------------------------------------------------------------------------------------- critic
    def target_members(self) -> torch.Tensor:
        """int64 ``(critic_subsample,)``: the target critics of one TD target (all of them, in order, when
        ``critic_subsample == num_critics``)."""
        cfg = self.config
        if cfg.critic_subsample == cfg.num_critics:  # no draw: the official agent without an ensemble
            return torch.arange(cfg.num_critics)
        if cfg.critic_subsample_replace:
            return torch.randint(cfg.num_critics, (cfg.critic_subsample,))
        return torch.randperm(cfg.num_critics)[: cfg.critic_subsample]

    def td_target(self, batch: Batch) -> torch.Tensor:
        """The TD target ``y`` float32 ``(B,)`` (no gradient)."""
        cfg = self.config
        k = cfg.backup_actions if cfg.max_target_backup else 1
        with torch.no_grad():
            next_obs = batch["next_observations"]
            if k > 1:
                next_obs = next_obs.repeat_interleave(k, 0)  # (B*k, S): each next state k times
            next_actions, next_log_prob = self.actor(next_obs)  # (B*k, A), (B*k,)
            next_q = self.target_critic(next_obs, next_actions, self.target_members()).amin(0)  # (B*k,)
            if cfg.backup_entropy:
                next_q = next_q - self.alpha * next_log_prob
            if k > 1:
                next_q = next_q.view(-1, k).amax(1)  # (B,): the best of the k sampled next actions
            rewards = cfg.reward_scale * batch["rewards"] + cfg.reward_bias
            return rewards + cfg.gamma * (1.0 - batch["terminals"]) * next_q

    def update_critic(
        self,
        batch: Batch,
        regularizer: Callable[[SACAgent, Batch, torch.Tensor], tuple[torch.Tensor, dict]] | None = None,
    ) -> dict[str, float | torch.Tensor]:
        """One gradient step of the critic ensemble, then a Polyak step of its target.

        Args:
            batch: a minibatch (see :data:`Batch`).
            regularizer: optional ``f(agent, batch, q_data (N, B)) -> (loss, metrics)`` added to the TD loss
                (the CQL / Cal-QL term).

        Returns:
            metrics as 0-dim tensors (call ``float`` only when logging, to avoid a sync per update).
        """
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            target = self.td_target(batch)  # (B,)
            q = self.critic(batch["observations"], batch["actions"])  # (N, B)
            td_loss = (q - target).pow(2).mean(1).sum(0)  # sum over critics of each critic's MSE (as Cal-QL/CORL)
            loss = td_loss
            metrics: dict[str, Any] = {"critic/td_loss": td_loss.detach(), "critic/q_data": q.detach().mean()}
            if regularizer is not None:
                reg_loss, reg_metrics = regularizer(self, batch, q)
                loss = loss + reg_loss
                metrics.update(reg_metrics)
        self.critic_optim.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optim.step()
        soft_update(self.target_critic, self.critic, self.config.tau)
        self.num_updates += 1
        metrics["critic/target"] = target.mean()
        return metrics

    # ------------------------------------------------------------------------------------- actor, temperature
    def update_actor(self, batch: Batch) -> dict[str, float | torch.Tensor]:
        """One gradient step of the actor on ``batch["observations"]`` and of the temperature (on the next
        observations by default, see :attr:`AgentConfig.temperature_states`)."""
        cfg = self.config
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            if cfg.temperature_states == "next":
                with torch.no_grad():  # the policy before this step, as the official code's simultaneous update
                    k = cfg.backup_actions if cfg.max_target_backup else 1
                    next_obs = batch["next_observations"]
                    _, entropy_log_prob = self.actor(next_obs.repeat_interleave(k, 0) if k > 1 else next_obs)
            actions, log_prob = self.actor(batch["observations"])  # (B, A), (B,)
            if cfg.temperature_states == "current":
                entropy_log_prob = log_prob.detach()
            self.critic.requires_grad_(False)  # no weight gradients for the critics: only d Q / d a is needed
            q = self.critic(batch["observations"], actions)  # (N, B)
            self.critic.requires_grad_(True)
            q_agg = q.amin(0) if cfg.actor_q_agg == "min" else q.mean(0)  # (B,)
            actor_loss = (self.alpha * log_prob - q_agg).mean()
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()

        alpha_loss = -(self.log_alpha * (entropy_log_prob + self.target_entropy)).mean()
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optim.step()
        return {
            "actor/loss": actor_loss.detach(),
            "actor/entropy": -log_prob.detach().mean(),
            "actor/temperature": self.alpha,
            "actor/q_pi": q_agg.detach().mean(),
        }

    def update(
        self, batches: list[Batch], actor_update: str = "all", idle_steps: bool = False
    ) -> dict[str, float | torch.Tensor]:
        """One update-to-data round: a critic step on each minibatch, and the actor and temperature steps.

        Args:
            batches: the ``utd`` minibatches of this round.
            actor_update: ``"all"``: one actor/temperature step on all the minibatches together (the official
                ``update_high_utd``); ``"last"``: one step on the last minibatch (REDQ); ``"every"``: a step after
                every critic step, on its minibatch (SAC at UTD 1, d3rlpy's ``n_updates``).
            idle_steps: with ``"all"`` and more than one minibatch, the optimizers of the networks a step does not
                train take an Adam step with a zero gradient, as in the official ``update_high_utd`` (optax applies
                every optimizer at every update): the actor and temperature after each critic step, the critic
                after the actor step. Adam still moves a parameter on its first moment when its gradient is zero,
                so the actor and temperature drift on their momentum between their real steps.
        """
        if actor_update not in ACTOR_UPDATES:
            raise ValueError(f"actor_update must be one of {ACTOR_UPDATES}, got {actor_update!r}")
        idle = idle_steps and actor_update == "all" and len(batches) > 1
        metrics: dict[str, Any] = {}
        for batch in batches:
            metrics.update(self.update_critic(batch))
            if idle:
                _zero_gradient_step(self.actor_optim, self.alpha_optim)
            if actor_update == "every":
                metrics.update(self.update_actor(batch))
        if actor_update == "last":
            metrics.update(self.update_actor(batches[-1]))
        elif actor_update == "all":
            joined = batches[0] if len(batches) == 1 else {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
            metrics.update(self.update_actor(joined))
            if idle:
                _zero_gradient_step(self.critic_optim)
        return metrics

    # ------------------------------------------------------------------------------------------- state
    def full_state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, targets, temperature, optimizer states, config."""
        return {
            "model": self.state_dict(),
            "actor_optim": self.actor_optim.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "alpha_optim": self.alpha_optim.state_dict(),
            "num_updates": self.num_updates,
            "config": asdict(self.config),
            "dims": (self.observation_dim, self.action_dim),
            "action_bounds": (
                (self.actor.action_bias - self.actor.action_scale).numpy(),
                (self.actor.action_bias + self.actor.action_scale).numpy(),
            ),
        }

    def load_full_state_dict(self, state: dict[str, Any], optimizers: bool = True) -> None:
        """Inverse of :meth:`full_state_dict` (``optimizers=False``: weights and temperature only)."""
        self.load_state_dict(state["model"])
        if optimizers:
            self.actor_optim.load_state_dict(state["actor_optim"])
            self.critic_optim.load_state_dict(state["critic_optim"])
            self.alpha_optim.load_state_dict(state["alpha_optim"])
            self.num_updates = int(state["num_updates"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], **config_overrides: Any) -> SACAgent:
        """Rebuild an agent saved with :meth:`full_state_dict`; ``config_overrides`` change loss settings
        (e.g. ``backup_entropy``) but not network shapes."""
        low, high = state["action_bounds"]
        config = config_from_dict(state["config"], **config_overrides)
        agent = cls(*state["dims"], config, action_low=low, action_high=high)
        agent.load_full_state_dict(state)
        return agent


def _zero_gradient_step(*optimizers: torch.optim.Optimizer) -> None:
    """An optimizer step with every gradient zero (``None`` gradients are skipped by torch, not stepped)."""
    for optim in optimizers:
        for group in optim.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
        optim.step()
        optim.zero_grad(set_to_none=True)


def export_actor(checkpoint: str | Path, out: str | Path, **metadata: Any) -> Path:
    """Write only the actor of a ``pyseqrl train sac|calql|wsrl`` checkpoint (a small file that
    :meth:`SACPolicy.from_checkpoint` and the ``sac:`` policy scheme load), with ``metadata`` beside it."""
    state = load_torch(checkpoint)
    saved = agent_state(state, checkpoint)
    agent = SACAgent.from_state_dict(saved)
    return save_torch(
        {
            "algo": "sac",
            "actor": agent.actor.state_dict(),
            "dims": tuple(saved["dims"]),
            "hidden_dims": tuple(agent.config.hidden_dims),
            "actor_config": {k: getattr(agent.config, k) for k in ACTOR_FIELDS},
            "action_bounds": saved["action_bounds"],
            "metadata": {"env_id": state.get("env_id"), **metadata},
        },
        out,
    )
