"""Networks of the SAC family: a tanh-Gaussian actor and a critic ensemble computed as one batched network.

The ensemble keeps the weights of its ``N`` critics stacked (``[N, in, out]``) and evaluates all of them with
one ``torch.baddbmm`` per layer, so a 10-critic ensemble costs a handful of kernel launches instead of ten
networks' worth. Each critic has its own LayerNorm affine parameters, exactly like ``N`` independent ``Linear
-> LayerNorm -> ReLU`` MLPs (``tests/test_sac.py`` checks it against a per-critic loop).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleLinear(nn.Module):
    """``N`` independent linear layers applied in one batched matmul.

    Args:
        in_features: input width.
        out_features: output width.
        ensemble_size: number of members ``N``.

    Shapes: input ``(N, B, in)`` float32 -> output ``(N, B, out)``.
    """

    def __init__(self, in_features: int, out_features: int, ensemble_size: int):
        super().__init__()
        self.in_features, self.out_features, self.ensemble_size = in_features, out_features, ensemble_size
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(ensemble_size, 1, out_features))
        # same distribution as nn.Linear's default init, independently per member
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (M, B, in) -> (M, B, out), with M = N, or M = len(members) to run only those members."""
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)  # (N, B, out)
        return torch.baddbmm(self.bias[members], x, self.weight[members])  # (M, B, out)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, ensemble={self.ensemble_size}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dim with a separate affine (gain, bias) per ensemble member: ``(N, B, H)``."""

    def __init__(self, features: int, ensemble_size: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(ensemble_size, 1, features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, features))

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], eps=self.eps)
        if members is None:
            return torch.addcmul(self.bias, x, self.weight)  # (N, B, H)
        return torch.addcmul(self.bias[members], x, self.weight[members])  # (M, B, H)


class CriticEnsemble(nn.Module):
    """``N`` Q-functions ``Q_i(s, a)``, each ``[Linear -> LayerNorm -> ReLU] x depth -> Linear``, batched.

    Args:
        observation_dim: ``S``.
        action_dim: ``A``.
        hidden_dims: widths of the hidden layers.
        num_critics: ensemble size ``N``.
        layer_norm: LayerNorm after every hidden Linear (WSRL/RLPD use it to keep Q-values bounded).

    Example:
        >>> q = CriticEnsemble(3, 1, (32, 32), num_critics=4)
        >>> q(torch.zeros(5, 3), torch.zeros(5, 1)).shape
        torch.Size([4, 5])
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_dims: tuple[int, ...] = (256, 256),
        num_critics: int = 10,
        layer_norm: bool = True,
    ):
        super().__init__()
        self.num_critics = num_critics
        layers: list[nn.Module] = []
        width = observation_dim + action_dim
        for h in hidden_dims:
            layers.append(EnsembleLinear(width, h, num_critics))
            if layer_norm:
                layers.append(EnsembleLayerNorm(h, num_critics))
            layers.append(nn.ReLU())
            width = h
        layers.append(EnsembleLinear(width, 1, num_critics))
        self.layers = nn.ModuleList(layers)

    def forward(
        self, observations: torch.Tensor, actions: torch.Tensor, members: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Q-values of every critic (or of the critics ``members`` only).

        Args:
            observations: float32 ``(B, S)``, or ``(M, B, S)`` with a separate batch per critic.
            actions: float32 ``(B, A)`` or ``(M, B, A)`` matching ``observations``.
            members: optional int64 ``(M,)`` indices of the critics to evaluate (default: all ``N``).

        Returns:
            float32 ``(M, B)`` with ``M = N`` unless ``members`` is given.
        """
        m = self.num_critics if members is None else len(members)
        x = torch.cat([observations, actions], dim=-1)  # (B, S+A) or (M, B, S+A)
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(m, -1, -1)  # (M, B, S+A), no copy
        for layer in self.layers:
            x = layer(x) if isinstance(layer, nn.ReLU) else layer(x, members)  # (M, B, H)
        return x.squeeze(-1)  # (M, B)


class TanhGaussianActor(nn.Module):
    """Gaussian policy squashed by tanh and rescaled to the action bounds: ``a = bias + scale * tanh(u)``.

    Args:
        observation_dim: ``S``.
        action_dim: ``A``.
        hidden_dims: widths of the hidden layers (ReLU).
        action_low: lower action bound, float ``(A,)`` or scalar (default -1).
        action_high: upper action bound (default 1).
        log_std_min: lower clip of the log standard deviation.
        log_std_max: upper clip of the log standard deviation.
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        hidden_dims: tuple[int, ...] = (256, 256),
        action_low: torch.Tensor | float = -1.0,
        action_high: torch.Tensor | float = 1.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = observation_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * action_dim)  # mean and log-std
        self.action_dim = action_dim
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        low = torch.as_tensor(action_low, dtype=torch.float32).expand(action_dim)
        high = torch.as_tensor(action_high, dtype=torch.float32).expand(action_dim)
        self.register_buffer("action_scale", (high - low) / 2.0)
        self.register_buffer("action_bias", (high + low) / 2.0)

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
        mean, log_std = self.head(self.trunk(observations)).chunk(2, dim=-1)  # (B, A) each
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


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) * target + tau * source`` of all parameters, in place."""
    with torch.no_grad():
        tp = [p for p in target.parameters()]
        sp = [p for p in source.parameters()]
        torch._foreach_lerp_(tp, sp, tau)
