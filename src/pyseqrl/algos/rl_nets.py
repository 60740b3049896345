"""Networks of the SAC family: the critic ensemble, computed as one batched network, and the target update.

The tanh-Gaussian actor lives with the policy that serves it (:mod:`pyseqrl.policies.sac`) and is re-exported here.

The ensemble keeps the weights of its ``N`` critics stacked (``[N, in, out]``) and evaluates all of them with
one ``torch.baddbmm`` per layer, so a 10-critic ensemble costs a handful of kernel launches instead of ten
networks' worth. Each critic has its own LayerNorm affine parameters, exactly like ``N`` independent ``Linear
-> LayerNorm -> ReLU`` MLPs.

Initialisation follows the official WSRL code (``wsrl/common/initialization.py``, ``wsrl/networks/mlp.py``):
orthogonal weights with gain sqrt(2) and zero biases, except the last hidden layer, whose gain is
``last_hidden_gain`` (``kernel_scale_final=1e-2`` in the official locomotion configs). ``init="torch"`` keeps
``torch.nn.Linear``'s default instead.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pyseqrl.policies.sac import TanhGaussianActor

__all__ = ["CriticEnsemble", "EnsembleLayerNorm", "EnsembleLinear", "TanhGaussianActor", "soft_update"]


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

    def reset_orthogonal(self, gain: float) -> None:
        """Orthogonal weights with ``gain`` for every member independently, zero biases."""
        with torch.no_grad():
            for w in self.weight:  # (in, out) per member
                nn.init.orthogonal_(w, gain)
            self.bias.zero_()

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
        init: ``"orthogonal"`` (see the module docstring) or ``"torch"`` (``nn.Linear``'s default).
        last_hidden_gain: orthogonal gain of the last hidden layer.

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
        init: Literal["orthogonal", "torch"] = "orthogonal",
        last_hidden_gain: float = 1e-2,
    ):
        super().__init__()
        self.num_critics = num_critics
        layers: list[nn.Module] = []
        linears: list[EnsembleLinear] = []
        width = observation_dim + action_dim
        for h in hidden_dims:
            linears.append(EnsembleLinear(width, h, num_critics))
            layers.append(linears[-1])
            if layer_norm:
                layers.append(EnsembleLayerNorm(h, num_critics))
            layers.append(nn.ReLU())
            width = h
        linears.append(EnsembleLinear(width, 1, num_critics))
        layers.append(linears[-1])
        self.layers = nn.ModuleList(layers)
        if init == "orthogonal":
            for i, linear in enumerate(linears):
                last_hidden = i == len(linears) - 2
                linear.reset_orthogonal(last_hidden_gain if last_hidden else math.sqrt(2.0))
        elif init != "torch":
            raise ValueError(f"init must be 'orthogonal' or 'torch', got {init!r}")

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
        x = x.squeeze(-1)  # (M, B)
        return x.float() if x.element_size() < 4 else x  # float32 (not bf16) under bf16 autocast


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging ``target <- (1 - tau) * target + tau * source`` of all parameters, in place."""
    with torch.no_grad():
        tp = [p for p in target.parameters()]
        sp = [p for p in source.parameters()]
        torch._foreach_lerp_(tp, sp, tau)
