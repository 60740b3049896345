"""Stable-Baselines3 / RL-Zoo agents read straight from their ``.zip`` with torch (stable-baselines3 not needed).

Supported (deterministic action, as ``model.predict(obs, deterministic=True)``):

* SAC, TQC (``actor.latent_pi`` + ``actor.mu``): ``tanh(mu(latent))`` rescaled to the action bounds;
* TD3 (``actor.mu`` ending in tanh): rescaled to the action bounds;
* PPO, A2C, TRPO (``mlp_extractor.policy_net`` + ``action_net``): the Gaussian mean, clipped to the bounds;
* ARS (``action_net`` only, linear or MLP): the output, clipped to the bounds.

On-policy zoo agents were trained behind ``VecNormalize``: its observation statistics are read from
``<stem>_vecnormalize.pkl`` beside the zip (a flat layout) or ``<dir>/<stem>/vecnormalize.pkl`` (the zoo
layout), and applied like ``VecNormalize(training=False).normalize_obs``. If the zoo ``config.yml`` names
sb3_contrib's ``TimeFeatureWrapper`` (ppo_Walker2d), the feature ``1 - t / max_steps`` is appended to the
observation, with ``t`` counted per environment since its last :meth:`reset`.

Example:
    >>> from pyseqrl.envs import make
    >>> from pyseqrl.policies.sb3 import load_sb3
    >>> env = make("Hopper-v4", num_envs=2)
    >>> policy = load_sb3("rl-trained-agents/tqc_Hopper-v3.zip", env)
    >>> policy.act(env.reset()).shape
    (2, 3)
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pyseqrl.policies._pickle import safe_load
from pyseqrl.policies.base import Policy

log = logging.getLogger(__name__)

_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Softplus", "Mish")


def _layer_indices(state: dict[str, Any], prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    return sorted(int(m.group(1)) for k in state if (m := pattern.match(k)))


def _mlp(state: dict[str, Any], prefix: str, activation: Any, final_activation: bool) -> list[Any]:
    """Linear layers ``prefix{i}.weight/bias`` (Sequential indices) with ``activation`` between them."""
    import torch

    layers: list[Any] = []
    indices = _layer_indices(state, prefix)
    for j, i in enumerate(indices):
        weight = state[f"{prefix}{i}.weight"]
        bias = state.get(f"{prefix}{i}.bias")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        layers.append(linear)
        if final_activation or j < len(indices) - 1:
            layers.append(activation())
    return layers


def _linear(state: dict[str, Any], prefix: str) -> Any:
    import torch

    weight, bias = state[f"{prefix}.weight"], state.get(f"{prefix}.bias")
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _activation(data: dict[str, Any], default: str) -> Any:
    import torch

    kwargs = data.get("policy_kwargs") or {}
    text = str(kwargs.get("activation_fn", "")) if isinstance(kwargs, dict) else ""
    name = next((a for a in _ACTIVATIONS if re.search(rf"\.{a}'", text)), default)
    return getattr(torch.nn, name)


def _parse_vector(text: Any) -> np.ndarray | None:
    try:
        return np.array(str(text).strip("[]").split(), dtype=np.float32)
    except ValueError:
        return None


def _sibling(path: Path, suffix: str, zoo_name: str) -> Path | None:
    for candidate in (path.with_name(f"{path.stem}_{suffix}"), path.parent / path.stem / zoo_name):
        if candidate.exists():
            return candidate
    return None


class SB3Policy(Policy):
    """A deterministic SB3 actor as a batched pyseqrl policy (torch inference, float32).

    Args:
        net: torch module mapping normalised observations float32 ``[n, S']`` to raw actions ``[n, A]``.
        post: ``"unscale"`` (tanh-squashed actor: map ``[-1, 1]`` to the bounds) or ``"clip"`` (clip to bounds).
        action_low, action_high: float32 ``[A]`` action bounds.
        obs_mean, obs_var: float64 ``[S']`` VecNormalize statistics, or ``None``.
        clip_obs: VecNormalize observation clip.
        epsilon: VecNormalize epsilon.
        time_feature_max_steps: append sb3_contrib's time feature with this ``max_steps`` (``None``: no feature).
        name: description stored in dataset metadata.
        num_threads: torch threads for inference (``None``: torch's setting). These MLPs are tiny: one thread is
            fastest, and multi-threaded inference of small matrices collapses (100x slower, measured) when the CPU
            is shared with environment threads or other processes.
    """

    def __init__(
        self,
        net: Any,
        post: str,
        action_low: np.ndarray,
        action_high: np.ndarray,
        obs_mean: np.ndarray | None = None,
        obs_var: np.ndarray | None = None,
        clip_obs: float = 10.0,
        epsilon: float = 1e-8,
        time_feature_max_steps: int | None = None,
        name: str = "sb3",
        num_threads: int | None = 1,
    ) -> None:
        if post not in ("unscale", "clip"):
            raise ValueError(f"post must be 'unscale' or 'clip', got {post!r}")
        self.net = net.eval()
        self.post = post
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.obs_mean = obs_mean
        self.obs_std = None if obs_var is None else np.sqrt(np.asarray(obs_var, np.float64) + epsilon)
        self.clip_obs = float(clip_obs)
        self.time_feature_max_steps = time_feature_max_steps
        self._steps = np.zeros(0, np.int64)  # per-env step counter for the time feature
        self.name = name
        self.num_threads = num_threads

    def reset(self, env_ids: np.ndarray) -> None:
        if self.time_feature_max_steps is not None and len(self._steps):
            self._steps[np.asarray(env_ids, np.int64)] = 0

    def act(self, observations: np.ndarray) -> np.ndarray:
        import torch

        obs = np.asarray(observations)
        if self.time_feature_max_steps is not None:
            if len(self._steps) != len(obs):
                self._steps = np.zeros(len(obs), np.int64)
            feature = 1.0 - self._steps / self.time_feature_max_steps  # (n,)
            obs = np.concatenate([obs.astype(np.float64), feature[:, None]], axis=1)
            self._steps += 1
        if self.obs_std is not None:
            obs = np.clip((obs - self.obs_mean) / self.obs_std, -self.clip_obs, self.clip_obs)
        threads = torch.get_num_threads()
        if self.num_threads is not None and threads != self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            with torch.inference_mode():
                raw = self.net(torch.as_tensor(np.asarray(obs, np.float32))).numpy()
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        if self.post == "unscale":
            raw = self.action_low + 0.5 * (raw + 1.0) * (self.action_high - self.action_low)
        return np.clip(raw, self.action_low, self.action_high).astype(np.float32)


def load_sb3(path: str | Path, env: Any | None = None, max_episode_steps: int | None = None) -> SB3Policy:
    """Load an SB3 / RL-Zoo agent ``.zip`` as a deterministic :class:`SB3Policy`.

    Args:
        path: the agent zip, e.g. ``.../sac_Hopper-v3.zip``; VecNormalize statistics and the zoo config are looked
            up beside it (see the module docstring).
        env: a :class:`pyseqrl.envs.VectorEnv` (or anything with ``observation_dim``, ``action_low``,
            ``action_high`` and ``max_episode_steps``) used for the action bounds and to check the input size;
            without it the bounds come from the zip's pickled action space.
        max_episode_steps: ``max_steps`` of the time feature; default: ``env.max_episode_steps`` or 1000.

    Raises:
        FileNotFoundError: the zip (or a VecNormalize file the zoo config asks for) is missing.
        ValueError: the zip is not an SB3 agent of a supported kind, or its input size does not match ``env``.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"SB3 agent zip not found: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "policy.pth" not in names or "data" not in names:
                raise ValueError(
                    f"{path} is not a stable-baselines3 save (needs 'data' and 'policy.pth', has {sorted(names)})"
                )
            data = json.loads(archive.read("data"))
            with archive.open("policy.pth") as f:
                state = torch.load(f, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, json.JSONDecodeError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable stable-baselines3 save (a zip file): {e}") from e
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, expected a stable-baselines3 .zip file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: its 'data' entry is not a JSON object (not a stable-baselines3 save)")
    if data.get("use_sde") or (isinstance(data.get("policy_kwargs"), dict) and data["policy_kwargs"].get("use_sde")):
        raise ValueError(f"{path}: gSDE agents (use_sde=True) are not supported")

    # -- the actor network: which algorithm family wrote this state dict? -----------------------------------
    if "actor.mu.weight" in state:  # SAC / TQC: latent_pi MLP -> mu -> tanh
        act = _activation(data, "ReLU")
        layers = _mlp(state, "actor.latent_pi.", act, final_activation=True)
        layers += [_linear(state, "actor.mu"), torch.nn.Tanh()]
        post, kind = "unscale", "sac"
    elif _layer_indices(state, "actor.mu."):  # TD3 / DDPG: mu is Sequential(Linear, act, ..., Linear, Tanh)
        layers = _mlp(state, "actor.mu.", _activation(data, "ReLU"), final_activation=False) + [torch.nn.Tanh()]
        post, kind = "unscale", "td3"
    elif "action_net.weight" in state and _layer_indices(state, "mlp_extractor.policy_net."):  # PPO / A2C / TRPO
        act = _activation(data, "Tanh")
        layers = _mlp(state, "mlp_extractor.shared_net.", act, final_activation=True)
        layers += _mlp(state, "mlp_extractor.policy_net.", act, final_activation=True)
        layers.append(_linear(state, "action_net"))
        post, kind = "clip", "actor-critic"
    elif "action_net.weight" in state:  # ARS linear policy (old layout)
        layers, post, kind = [_linear(state, "action_net")], "clip", "ars"
    elif _layer_indices(state, "action_net."):  # ARS (Sequential layout)
        layers = _mlp(state, "action_net.", _activation(data, "ReLU"), final_activation=False)
        post, kind = "clip", "ars"
    else:
        raise ValueError(f"{path}: unrecognised SB3 policy (state dict keys {sorted(state)[:8]}...)")
    net = torch.nn.Sequential(*layers)
    in_dim = next(m for m in layers if isinstance(m, torch.nn.Linear)).in_features

    # -- action bounds --------------------------------------------------------------------------------------
    if env is not None:
        low, high = np.asarray(env.action_low, np.float32), np.asarray(env.action_high, np.float32)
    else:
        space = data.get("action_space") or {}
        parsed_low, parsed_high = _parse_vector(space.get("low")), _parse_vector(space.get("high"))
        if parsed_low is None or parsed_high is None:
            raise ValueError(f"{path}: cannot read the action bounds from the zip; pass env=")
        low, high = parsed_low, parsed_high
    out_dim = next(m for m in reversed(layers) if isinstance(m, torch.nn.Linear)).out_features
    if out_dim != len(low):
        raise ValueError(f"{path}: the agent outputs {out_dim} actions but the environment has {len(low)}")

    # -- observation pipeline: zoo config, time feature, VecNormalize ---------------------------------------
    config_path = _sibling(path, "config.yml", "config.yml")
    config_text = config_path.read_text() if config_path else ""
    env_dim = None if env is None else int(env.observation_dim)
    time_feature = "TimeFeatureWrapper" in config_text
    if not time_feature and env_dim is not None and in_dim == env_dim + 1:
        log.warning(
            "%s: input size %d = observation size + 1 and no zoo config: assuming TimeFeatureWrapper", path, in_dim
        )
        time_feature = True
    if env_dim is not None and in_dim != env_dim + int(time_feature):
        raise ValueError(
            f"{path}: the agent expects {in_dim} inputs but the environment gives {env_dim} observations"
            + (" + 1 time feature" if time_feature else "")
        )
    steps = max_episode_steps or (getattr(env, "max_episode_steps", None) if env is not None else None) or 1000

    obs_mean = obs_var = None
    clip_obs, epsilon = 10.0, 1e-8
    vecnorm_path = _sibling(path, "vecnormalize.pkl", "vecnormalize.pkl")
    if vecnorm_path is not None:
        vecnorm = safe_load(vecnorm_path)
        if getattr(vecnorm, "norm_obs", True):
            obs_mean = np.asarray(vecnorm.obs_rms.mean, np.float64)
            obs_var = np.asarray(vecnorm.obs_rms.var, np.float64)
            clip_obs, epsilon = float(vecnorm.clip_obs), float(vecnorm.epsilon)
            if obs_mean.shape != (in_dim,):
                raise ValueError(f"{vecnorm_path}: statistics of shape {obs_mean.shape}, the agent has {in_dim} inputs")
    elif re.search(r"normalize\s*\n\s*-\s*(true|dict)", config_text):
        raise FileNotFoundError(f"{path}: the zoo config uses VecNormalize but no vecnormalize.pkl was found beside it")
    elif kind in ("actor-critic", "ars"):
        log.warning("%s: on-policy agent without vecnormalize.pkl; using raw observations", path)

    name = f"sb3:{path.name}"
    log.info(
        "loaded %s (%s, %d inputs%s%s)",
        name,
        kind,
        in_dim,
        ", VecNormalize" if obs_mean is not None else "",
        ", time feature" if time_feature else "",
    )
    return SB3Policy(
        net, post, low, high, obs_mean, obs_var, clip_obs, epsilon, steps if time_feature else None, name=name
    )
