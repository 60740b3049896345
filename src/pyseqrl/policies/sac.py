"""pyseqrl's SAC actor as a policy: the tanh-Gaussian actor network, :class:`SACPolicy` and the ``sac:`` scheme.

The trainers (``pyseqrl train sac|calql|wsrl``) build their agents around :class:`TanhGaussianActor`; this module
only needs a checkpoint to act, so loading a policy never imports a trainer.

Example:
    >>> from pyseqrl.policies import load_policy
    >>> policy = load_policy("sac:runs/wsrl/checkpoint.pt")  # doctest: +SKIP
    >>> actions = policy.act(observations)                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pyseqrl.policies.base import Policy, check_env_dims
from pyseqrl.utils.checkpoint import load_torch

ACTOR_FIELDS = ("actor_layer_norm", "actor_std_min", "actor_std_max")
"""The agent-config fields (besides ``hidden_dims``) that shape the actor; actor files store them."""

LEGACY_ACTOR: dict[str, Any] = {
    "actor_layer_norm": False,
    "actor_std_min": math.exp(-5.0),
    "actor_std_max": math.exp(2.0),
    "init": "torch",
}
"""The actor of checkpoints and actor files written before these fields existed."""


class TanhGaussianActor(nn.Module):
    """Gaussian policy squashed by tanh and rescaled to the action bounds: ``a = bias + scale * tanh(u)``.

    ``[Linear -> (LayerNorm) -> ReLU] x depth``, then a linear head for the mean and the log standard deviation;
    the standard deviation is clipped to ``[exp(log_std_min), exp(log_std_max)]``.

    Args:
        observation_dim: ``S``.
        action_dim: ``A``.
        hidden_dims: widths of the hidden layers.
        action_low: lower action bound, float ``(A,)`` or scalar (default -1).
        action_high: upper action bound (default 1).
        layer_norm: LayerNorm after every hidden Linear (official ``wsrl_config.py``).
        log_std_min: lower clip of the log standard deviation (default: std 1e-5, official ``Policy.std_min``).
        log_std_max: upper clip of the log standard deviation (default: std 10, official ``Policy.std_max``).
        init: ``"orthogonal"`` (see the module docstring) or ``"torch"`` (``nn.Linear``'s default).
        last_hidden_gain: orthogonal gain of the last hidden layer.

    Example:
        >>> actor = TanhGaussianActor(3, 1, (32, 32), action_low=-2.0, action_high=2.0)
        >>> actions, log_prob = actor(torch.zeros(5, 3))
        >>> actions.shape, log_prob.shape
        (torch.Size([5, 1]), torch.Size([5]))
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_dims: tuple[int, ...] = (256, 256),
        action_low: torch.Tensor | float = -1.0,
        action_high: torch.Tensor | float = 1.0,
        layer_norm: bool = True,
        log_std_min: float = math.log(1e-5),
        log_std_max: float = math.log(10.0),
        init: Literal["orthogonal", "torch"] = "orthogonal",
        last_hidden_gain: float = 1e-2,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        linears: list[nn.Linear] = []
        width = observation_dim
        for h in hidden_dims:
            linears.append(nn.Linear(width, h))
            layers += [linears[-1], nn.LayerNorm(h), nn.ReLU()] if layer_norm else [linears[-1], nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * action_dim)  # mean and log-std
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.layer_norm = layer_norm
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        low = torch.as_tensor(action_low, dtype=torch.float32).expand(action_dim)
        high = torch.as_tensor(action_high, dtype=torch.float32).expand(action_dim)
        self.action_scale: torch.Tensor
        self.action_bias: torch.Tensor
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)
        if init == "orthogonal":
            with torch.no_grad():
                for i, linear in enumerate(linears):
                    nn.init.orthogonal_(linear.weight, last_hidden_gain if i == len(linears) - 1 else math.sqrt(2.0))
                    linear.bias.zero_()
                for rows in self.head.weight.chunk(2, dim=0):  # the mean and log-std heads, as two layers
                    nn.init.orthogonal_(rows, math.sqrt(2.0))
                self.head.bias.zero_()
        elif init != "torch":
            raise ValueError(f"init must be 'orthogonal' or 'torch', got {init!r}")

    def forward(
        self, observations: torch.Tensor, deterministic: bool = False, with_log_prob: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample (or take the mode of) the policy.

        Args:
            observations: float32 ``(B, S)``.
            deterministic: return ``bias + scale * tanh(mean)`` instead of a sample.
            with_log_prob: also return the log-density of the returned action.

        Returns:
            actions float32 ``(B, A)`` within the bounds, and log-probabilities float32 ``(B,)`` (or None).
        """
        head = self.head(self.trunk(observations))  # (B, 2A)
        head = head.float() if head.element_size() < 4 else head  # the density in float32 under bf16 autocast
        mean, log_std = head.chunk(2, dim=-1)  # (B, A) each
        log_std = log_std.clamp(self.log_std_min, self.log_std_max)
        u = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)  # (B, A)
        squashed = torch.tanh(u)
        actions = self.action_bias + self.action_scale * squashed
        if not with_log_prob:
            return actions, None
        # log N(u; mean, std) - sum log|d a / d u|, with the numerically stable form of log(1 - tanh(u)^2)
        normal_lp = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u)) + torch.log(self.action_scale)
        return actions, (normal_lp - log_det).sum(-1)


def make_actor(
    observation_dim: int,
    action_dim: int,
    config: Mapping[str, Any],
    action_low: np.ndarray | float = -1.0,
    action_high: np.ndarray | float = 1.0,
) -> TanhGaussianActor:
    """The actor that an agent config (a dict of ``AgentConfig`` fields) describes; fields it lacks take
    :data:`LEGACY_ACTOR`."""
    c = {**LEGACY_ACTOR, **config}
    return TanhGaussianActor(
        observation_dim,
        action_dim,
        tuple(c["hidden_dims"]),
        torch.as_tensor(np.asarray(action_low, dtype=np.float32)),
        torch.as_tensor(np.asarray(action_high, dtype=np.float32)),
        layer_norm=bool(c["actor_layer_norm"]),
        log_std_min=math.log(c["actor_std_min"]),
        log_std_max=math.log(c["actor_std_max"]),
        init=c["init"],
        last_hidden_gain=float(c.get("last_hidden_gain", 1e-2)),
    )


class SACPolicy(Policy):
    """A SAC actor as a batched :class:`~pyseqrl.policies.base.Policy` (deterministic by default).

    The online trainers act with ``SACPolicy(agent.actor, deterministic=False)``: it shares the learner's
    weights, so it always acts with the current policy.

    Args:
        actor: the actor network.
        deterministic: act with ``tanh(mean)`` instead of sampling (sampling uses torch's global RNG).

    Example:
        >>> policy = SACPolicy.from_checkpoint("runs/sac/checkpoint.pt")  # doctest: +SKIP
        >>> actions = policy.act(observations)                              # doctest: +SKIP
    """

    name = "sac"

    def __init__(self, actor: TanhGaussianActor, deterministic: bool = True):
        self.actor = actor
        self.deterministic = deterministic

    @torch.no_grad()
    def act(self, observations: np.ndarray) -> np.ndarray:
        obs = torch.as_tensor(np.asarray(observations, dtype=np.float32))
        actions, _ = self.actor(obs, deterministic=self.deterministic, with_log_prob=False)
        return actions.numpy()

    @classmethod
    def from_checkpoint(cls, path: str | Path, deterministic: bool = True) -> SACPolicy:
        """Load the actor of a checkpoint written by ``pyseqrl train sac|calql|wsrl``, or of an actor file written
        by :func:`pyseqrl.algos.rl_agent.export_actor` (such as those under ``pyseqrl/assets/policies``)."""
        state = load_torch(path)
        try:
            if isinstance(state, dict) and "actor" in state:  # an actor-only file
                config = {"hidden_dims": state["hidden_dims"], **state.get("actor_config", {})}
                (obs_dim, act_dim), (low, high) = state["dims"], state["action_bounds"]
                actor = make_actor(obs_dim, act_dim, config, low, high)
                actor.load_state_dict(state["actor"])
            else:  # a trainer checkpoint: the actor part of the agent
                agent = agent_state(state, path)
                (obs_dim, act_dim), (low, high) = agent["dims"], agent["action_bounds"]
                actor = make_actor(obs_dim, act_dim, agent["config"], low, high)
                actor.load_state_dict(
                    {k.removeprefix("actor."): v for k, v in agent["model"].items() if k.startswith("actor.")}
                )
        except (KeyError, TypeError, RuntimeError) as e:  # a torch file of another kind, or a damaged one
            raise ValueError(
                f"{str(path)!r} is not a pyseqrl SAC checkpoint or actor file ({type(e).__name__}: {e})"
            ) from e
        return cls(actor, deterministic=deterministic)


def agent_state(state: Any, path: str | Path) -> dict[str, Any]:
    """The agent (``SACAgent.full_state_dict``) inside a loaded ``pyseqrl train sac|calql|wsrl`` checkpoint."""
    agent = state.get("agent", state) if isinstance(state, dict) else None
    if not isinstance(agent, dict) or "model" not in agent:
        raise ValueError(f"{str(path)!r} is not a pyseqrl SAC/Cal-QL/WSRL checkpoint (no 'agent' entry)")
    return agent


def load_policy(argument: str, env: Any = None, deterministic: bool = True, **_: Any) -> SACPolicy:
    """The ``sac:<checkpoint>`` policy scheme of :func:`pyseqrl.policies.load_policy`: the actor of any
    ``pyseqrl train sac|calql|wsrl`` checkpoint or actor file; refused when its sizes differ from ``env``'s."""
    policy = SACPolicy.from_checkpoint(argument, deterministic=deterministic)
    check_env_dims(argument, policy.actor.observation_dim, policy.actor.action_dim, env)
    return policy
