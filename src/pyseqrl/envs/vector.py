"""One vectorised-environment interface over EnvPool and gymnasium.vector, with explicit autoreset steps.

Both backends use *next-step* autoreset: when environment ``i`` ends an episode (terminated or truncated) at step
``t``, the observation returned at ``t`` is the final observation of that episode, and at step ``t + 1`` the
environment resets instead of stepping: the action for ``i`` is ignored, the returned observation is the first
observation of the new episode and the reward is meaningless. :class:`VectorEnv` makes this explicit with
``info["reset_step"]`` (bool ``[n]``): a step flagged there is **not** a transition and must never be recorded.
:class:`pyseqrl.collect.EnvRunner` does that bookkeeping for you and only hands out real transitions.

Example:
    >>> import numpy as np
    >>> from pyseqrl.envs import make
    >>> env = make("Hopper-v4", num_envs=4, seed=0)
    >>> obs = env.reset()                                   # float32 [4, 11]
    >>> obs, rew, term, trunc, info = env.step(np.zeros((4, env.action_dim), np.float32))
    >>> info["reset_step"]                                  # bool [4]; True rows are not transitions
    array([False, False, False, False])
    >>> env.close()
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any

import numpy as np
from typing_extensions import Self

from pyseqrl.utils import checks

log = logging.getLogger(__name__)

BACKENDS = ("auto", "envpool", "gymnasium", "gymnasium-async")


def _envpool_ids() -> list[str]:
    try:
        import envpool
    except ImportError:
        return []
    return list(envpool.list_all_envs())


def _gymnasium_ids() -> list[str]:
    import gymnasium as gym

    return list(gym.registry.keys())


def _unknown_env_error(env_id: str, backend: str, known: list[str]) -> ValueError:
    close = difflib.get_close_matches(env_id, list(dict.fromkeys(known)), n=5)
    hint = f" Did you mean one of {close}?" if close else ""
    return ValueError(f"unknown environment id {env_id!r} for backend {backend!r}.{hint}")


def _box_bounds(space: Any, what: str, env_id: str) -> tuple[np.ndarray, np.ndarray]:
    shape = getattr(space, "shape", None)
    if not hasattr(space, "low") or shape is None or len(shape) != 1:
        raise ValueError(
            f"pyseqrl.envs supports flat continuous (Box, 1-D) {what} spaces; {env_id!r} has {what} space {space}"
        )
    return np.asarray(space.low, np.float32).reshape(-1), np.asarray(space.high, np.float32).reshape(-1)


class VectorEnv:
    """``num_envs`` copies of one environment stepped as a batch (EnvPool or gymnasium.vector).

    Attributes:
        env_id: environment id, e.g. ``"Hopper-v4"``.
        backend: ``"envpool"``, ``"gymnasium"`` (SyncVectorEnv) or ``"gymnasium-async"`` (AsyncVectorEnv).
        num_envs: number of parallel environments ``n``.
        seed: environment ``i`` is seeded with ``seed + i`` (both backends).
        observation_dim: ``S``; observations are float32 ``[n, S]``.
        action_dim: ``A``; actions are float32 ``[n, A]``.
        action_low, action_high: float32 ``[A]`` bounds of the action space.
        max_episode_steps: the time limit (``None`` if the env has none).
        episode_returns: float64 ``[n]`` return of the running episode of each env.
        episode_lengths: int64 ``[n]`` length of the running episode of each env.
        completed_returns, completed_lengths, completed_env_ids: one entry per finished episode, in finishing order.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, backend: str = "auto", **kwargs: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if kwargs.get("max_episode_steps") is not None:
            checks.integer("max_episode_steps", kwargs["max_episode_steps"], 1)
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED - num_envs:
            raise ValueError(
                f"seed must be an integer in [0, {MAX_SEED - num_envs}] (env i gets seed + i, an int32 "
                f"for EnvPool), got {seed!r}"
            )
        if backend == "auto":
            backend = "envpool" if env_id in _envpool_ids() else "gymnasium"
        self.env_id = env_id
        self.backend = backend
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        if backend == "envpool":
            self._env = self._make_envpool(env_id, kwargs)
            self.max_episode_steps: int | None = int(self._env.spec.config.max_episode_steps)
            obs_space, act_space = self._env.observation_space, self._env.action_space
        else:
            self._env = self._make_gymnasium(env_id, kwargs, "async" if backend == "gymnasium-async" else "sync")
            spec = self._env.spec
            limit = spec.max_episode_steps if spec is not None else None
            self.max_episode_steps = kwargs.get("max_episode_steps", limit)
            obs_space, act_space = self._env.single_observation_space, self._env.single_action_space
        try:
            obs_low, _ = _box_bounds(obs_space, "observation", env_id)
            self.action_low, self.action_high = _box_bounds(act_space, "action", env_id)
        except ValueError:
            self._env.close()
            raise
        self.observation_dim = int(obs_low.shape[0])
        self.action_dim = int(self.action_low.shape[0])
        self.episode_returns = np.zeros(self.num_envs, np.float64)
        self.episode_lengths = np.zeros(self.num_envs, np.int64)
        self.completed_returns: list[float] = []
        self.completed_lengths: list[int] = []
        self.completed_env_ids: list[int] = []
        self._pending_reset = np.zeros(self.num_envs, bool)  # env ended last step -> this step is a reset step
        self._started = False
        self._closed = False

    # -- backends --------------------------------------------------------------------------------------------
    def _make_envpool(self, env_id: str, kwargs: dict[str, Any]) -> Any:
        try:
            import envpool
        except ImportError as e:
            raise ImportError("backend 'envpool' needs the envpool package: pip install 'pyseqrl[envs]'") from e
        if env_id not in envpool.list_all_envs():
            raise _unknown_env_error(env_id, "envpool", envpool.list_all_envs())
        kwargs = dict(kwargs)
        kwargs.setdefault("num_threads", min(self.num_envs, os.cpu_count() or 1))
        return envpool.make(env_id, env_type="gymnasium", num_envs=self.num_envs, seed=self.seed, **kwargs)

    def _make_gymnasium(self, env_id: str, kwargs: dict[str, Any], mode: str) -> Any:
        import gymnasium as gym

        if env_id not in gym.registry:
            raise _unknown_env_error(env_id, "gymnasium", _gymnasium_ids())
        return gym.make_vec(env_id, num_envs=self.num_envs, vectorization_mode=mode, **kwargs)

    # -- the interface ---------------------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        """Reset every environment and the episode statistics of the running episodes.

        The first reset uses the construction seed (env ``i`` gets ``seed + i``); later resets continue the RNGs.

        Returns:
            observations: float32 ``[n, S]``.
        """
        self._check_open()
        if self.backend == "envpool":
            obs, _ = self._env.reset()
        else:
            obs, _ = self._env.reset(seed=None if self._started else self.seed)
        self._started = True
        self._pending_reset[:] = False
        self.episode_returns[:] = 0.0
        self.episode_lengths[:] = 0
        return np.ascontiguousarray(obs, dtype=np.float32)

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every environment once.

        Args:
            actions: float32 ``[n, A]`` (anything castable). Rows of environments on a reset step are ignored.

        Returns:
            observations: float32 ``[n, S]``: the next observation, the final one of an episode that ended at this
                step, or the first one of a new episode on a reset step.
            rewards: float32 ``[n]`` (0 on reset steps).
            terminated: bool ``[n]``: the episode reached a terminal state (never set on reset steps).
            truncated: bool ``[n]``: the episode was cut (time limit); never set on reset steps.
            info: ``reset_step`` bool ``[n]`` (that row is not a transition), ``episode_done`` bool ``[n]``
                (an episode ended at this step), ``episode_return`` float64 ``[n]`` and ``episode_length`` int64
                ``[n]`` (valid where ``episode_done``), ``raw``: the backend's own info dict.

        Raises:
            ValueError: wrong action shape or non-finite actions.
            RuntimeError: ``reset()`` was not called, or the env is closed.
        """
        self._check_open()
        if not self._started:
            raise RuntimeError("VectorEnv.step() called before reset()")
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(
                f"{self.env_id}: actions must have shape (num_envs, action_dim) = "
                f"({self.num_envs}, {self.action_dim}), got {actions.shape}"
            )
        if not np.isfinite(actions).all():
            bad = np.flatnonzero(~np.isfinite(actions).all(axis=1)).tolist()
            raise ValueError(f"{self.env_id}: non-finite actions for envs {bad[:10]}")
        obs, rew, term, trunc, raw = self._env.step(np.ascontiguousarray(actions))
        reset_step = self._pending_reset.copy()
        rewards = np.asarray(rew, dtype=np.float32).copy()
        terminated = np.asarray(term, dtype=bool).copy()
        truncated = np.asarray(trunc, dtype=bool).copy()
        rewards[reset_step] = 0.0
        terminated[reset_step] = False
        truncated[reset_step] = False
        real = ~reset_step
        self.episode_returns[real] += rewards[real]
        self.episode_lengths[real] += 1
        done = terminated | truncated
        episode_return = np.where(done, self.episode_returns, 0.0)
        episode_length = np.where(done, self.episode_lengths, 0)
        for i in np.flatnonzero(done):
            self.completed_returns.append(float(self.episode_returns[i]))
            self.completed_lengths.append(int(self.episode_lengths[i]))
            self.completed_env_ids.append(int(i))
        self.episode_returns[done] = 0.0
        self.episode_lengths[done] = 0
        self._pending_reset = done
        info = {
            "reset_step": reset_step,
            "episode_done": done,
            "episode_return": episode_return,
            "episode_length": episode_length,
            "raw": raw,
        }
        return np.ascontiguousarray(obs, dtype=np.float32), rewards, terminated, truncated, info

    def close(self) -> None:
        """Release the environments (idempotent)."""
        if not self._closed:
            self._env.close()
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"VectorEnv({self.env_id!r}) is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"VectorEnv({self.env_id!r}, num_envs={self.num_envs}, backend={self.backend!r}, "
            f"S={self.observation_dim}, A={self.action_dim})"
        )


#: the largest seed an environment accepts (EnvPool seeds are int32)
MAX_SEED = 2**31 - 2


def derive_seed(*parts: int) -> int:
    """A seed in [0, 2**30) mixed from integers (e.g. a base seed and a step), for re-created environments."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % 2**30)


def check_env_id(env_id: str, backend: str = "auto") -> None:
    """Refuse an environment id that ``backend`` does not know, without creating the environment.

    Raises:
        ValueError: unknown backend, or an id that neither EnvPool nor gymnasium registers (for ``"auto"``), with
            the closest known ids.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"environment id must be a non-empty string, got {env_id!r}")
    envpool_ids = _envpool_ids() if backend in ("auto", "envpool") else []
    if backend == "envpool":
        if env_id not in envpool_ids:
            raise _unknown_env_error(env_id, "envpool", envpool_ids)
        return
    if backend == "auto" and env_id in envpool_ids:
        return
    import gymnasium as gym

    if ":" in env_id or env_id in gym.registry:  # "module:Id" registers the id on import
        return
    raise _unknown_env_error(env_id, backend, envpool_ids + _gymnasium_ids())


def make(env_id: str, num_envs: int, seed: int = 0, backend: str = "auto", **kwargs: Any) -> VectorEnv:
    """Create ``num_envs`` parallel copies of ``env_id``.

    Args:
        env_id: e.g. ``"Hopper-v4"``, ``"HalfCheetah-v5"``, ``"Pendulum-v1"``.
        num_envs: number of parallel environments (>= 1).
        seed: environment ``i`` is seeded with ``seed + i``.
        backend: ``"auto"`` (EnvPool when it has the id, else gymnasium), ``"envpool"``, ``"gymnasium"``
            (SyncVectorEnv) or ``"gymnasium-async"`` (AsyncVectorEnv, one process per env).
        **kwargs: passed to the environment (e.g. ``max_episode_steps=100``, ``reset_noise_scale=0.0``).

    Returns:
        A :class:`VectorEnv`.

    Raises:
        ValueError: unknown env id or backend, ``num_envs < 1``, or a non-Box action/observation space.
    """
    return VectorEnv(env_id, num_envs, seed=seed, backend=backend, **kwargs)
