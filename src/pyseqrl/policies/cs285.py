"""The CS285 (Berkeley deep RL course, hw1) expert policies: numpy Gaussian MLPs, used with their mean action.

The pickle holds an observation standardiser (mean and mean of squares), tanh or leaky-ReLU hidden layers and a
linear output layer. Actions are clipped to the action bounds by default.

Example:
    >>> from pyseqrl.policies.cs285 import load_cs285
    >>> policy = load_cs285("policies/cs285/policy_Hopper.pkl")
    >>> policy.act(np.zeros((2, 11), np.float32)).shape
    (2, 3)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pyseqrl.policies._pickle import safe_load
from pyseqrl.policies.base import Policy, check_env_dims


class CS285Policy(Policy):
    """Mean action of a CS285 expert, computed in float64 numpy.

    Args:
        obs_mean, obs_std: float64 ``[S]`` standardiser.
        layers: list of ``(W [in, out], b [out])`` hidden layers.
        out: ``(W, b)`` of the output layer.
        nonlinearity: ``"tanh"`` or ``"lrelu"``.
        action_low, action_high: float32 ``[A]`` clip bounds, or ``None`` for no clipping.
        name: description stored in dataset metadata.
    """

    def __init__(
        self,
        obs_mean: np.ndarray,
        obs_std: np.ndarray,
        layers: list[tuple[np.ndarray, np.ndarray]],
        out: tuple[np.ndarray, np.ndarray],
        nonlinearity: str,
        action_low: np.ndarray | None,
        action_high: np.ndarray | None,
        name: str = "cs285",
    ) -> None:
        if nonlinearity not in ("tanh", "lrelu"):
            raise ValueError(f"unsupported CS285 nonlinearity {nonlinearity!r} (expected 'tanh' or 'lrelu')")
        self.obs_mean, self.obs_std = obs_mean, obs_std
        self.layers, self.out, self.nonlinearity = layers, out, nonlinearity
        self.action_low, self.action_high = action_low, action_high
        self.observation_dim = int(obs_mean.shape[-1])
        self.action_dim = int(out[0].shape[1])
        self.name = name

    def act(self, observations: np.ndarray) -> np.ndarray:
        h = (np.asarray(observations, np.float64) - self.obs_mean) / (self.obs_std + 1e-6)  # (n, S)
        for w, b in self.layers:
            h = h @ w + b
            h = np.tanh(h) if self.nonlinearity == "tanh" else np.where(h > 0, h, 0.01 * h)
        actions = h @ self.out[0] + self.out[1]  # (n, A)
        if self.action_low is not None:
            actions = np.clip(actions, self.action_low, self.action_high)
        return actions.astype(np.float32)


def load_cs285(path: str | Path, env: Any | None = None, clip: bool = True) -> CS285Policy:
    """Load ``policy_<Env>.pkl`` of the CS285 hw1 experts.

    Args:
        path: the pickle.
        env: optional :class:`pyseqrl.envs.VectorEnv` to check the sizes and take the clip bounds from.
        clip: clip actions to the bounds (``[-1, 1]`` without ``env``).

    Raises:
        ValueError: not a CS285 policy pickle, or its sizes do not match ``env``.
    """
    path = Path(path)
    d = safe_load(path)
    try:
        p = d["GaussianPolicy"]
        st = p["obsnorm"]["Standardizer"]
        hidden = p["hidden"]["FeedforwardNet"]
        out = p["out"]["AffineLayer"]
        nonlinearity = d["nonlin_type"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a CS285 expert policy pickle (missing {e})") from e
    mean = np.asarray(st["mean_1_D"], np.float64)
    std = np.sqrt(np.maximum(0.0, np.asarray(st["meansq_1_D"], np.float64) - mean**2))
    keys = sorted(hidden, key=lambda k: int(k.split("_")[-1]))
    layers = [
        (np.asarray(hidden[k]["AffineLayer"]["W"], np.float64), np.asarray(hidden[k]["AffineLayer"]["b"], np.float64))
        for k in keys
    ]
    out_wb = (np.asarray(out["W"], np.float64), np.asarray(out["b"], np.float64))
    low = high = None
    if clip:
        low = np.full(out_wb[0].shape[1], -1.0, np.float32) if env is None else env.action_low
        high = np.full(out_wb[0].shape[1], 1.0, np.float32) if env is None else env.action_high
    policy = CS285Policy(mean, std, layers, out_wb, nonlinearity, low, high, name=f"cs285:{path.name}")
    check_env_dims(path, policy.observation_dim, policy.action_dim, env)
    return policy
