"""Small functions the online trainers share (``pyseqrl train sac`` and ``pyseqrl train wsrl``).

Each trainer's loop is written out in its own module; what they share is here: creating the environments,
drawing the minibatches of one update-to-data round, evaluating the actor, and the checkpoint contents.

Exact resume: EnvPool cannot snapshot MuJoCo states, so every checkpoint ends the running episodes (they are
truncated, i.e. bootstrapped like a time limit) and re-creates the environments with a seed derived from
``(seed, step)`` (:func:`make_runner`). An uninterrupted run does the same at the same steps, so a resumed run is
bit-identical to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyseqrl.algos.rl_agent import Batch, SACAgent, SACPolicy
from pyseqrl.envs import derive_seed, make
from pyseqrl.evaluation import evaluate
from pyseqrl.rollout import EnvRunner
from pyseqrl.utils.checkpoint import rng_state, set_rng_state

NETWORK_KEYS = ("agent.hidden_dims", "agent.num_critics", "agent.critic_layer_norm", "agent.actor_layer_norm")
"""The agent fields that shape its networks: a run resumes only with the same ones."""

BATCH_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "mc_returns")


def make_runner(env_id: str, num_envs: int, seed: int, backend: str, step: int = 0) -> EnvRunner:
    """The environments of an online run at ``step``: seeded with ``seed`` at step 0, else with a seed derived
    from ``(seed, step)`` (checkpoints re-create them, see the module docstring)."""
    env = make(env_id, num_envs, seed=seed if step == 0 else derive_seed(seed, step), backend=backend)
    return EnvRunner(env)


def to_batch(sample: dict[str, np.ndarray]) -> Batch:
    """A ``ReplayBuffer.sample`` (numpy) as float32 torch tensors (zero-copy where possible)."""
    return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in sample.items() if k in BATCH_KEYS}


def split(batch: Batch, parts: int) -> list[Batch]:
    """``batch`` (``parts * B`` rows) cut into ``parts`` consecutive minibatches of ``B`` rows."""
    return [dict(zip(batch, rows)) for rows in zip(*(v.chunk(parts) for v in batch.values()))]


def sample_batches(buffer: Any, batch_size: int, utd: int) -> list[Batch]:
    """The ``utd`` minibatches of one update-to-data round: one uniform draw of ``utd * batch_size`` transitions
    from ``buffer``, cut into ``utd`` minibatches (the official ``update_high_utd`` splits one batch so)."""
    return split(to_batch(buffer.sample(utd * batch_size)), utd)


def mean_last(returns: list[float], n: int = 10) -> float:
    """Mean of the last ``n`` episode returns (nan when there is none)."""
    return float(np.mean(returns[-n:])) if returns else float("nan")


def evaluate_actor(agent: SACAgent, env_id: str, episodes: int, seed: int, step: int) -> dict[str, float]:
    """``eval/*`` metrics of the deterministic actor over ``episodes`` episodes (seeds derived from ``step``)."""
    result = evaluate(
        SACPolicy(agent.actor, deterministic=True), env_id, episodes=episodes, seed=derive_seed(seed, 7919, step)
    )
    out = {
        "eval/mean_return": result.mean_return,
        "eval/std_return": result.std_return,
        "eval/mean_length": result.mean_length,
    }
    if result.normalized_score is not None:
        out["eval/normalized_score"] = result.normalized_score
    return out


def online_state(step: int, agent: SACAgent, buffer: Any, returns: list[float], **extra: Any) -> dict[str, Any]:
    """The checkpoint of an online run at ``step`` (``extra``: config, env id, the trainer's own state)."""
    return {
        "step": step,
        "agent": agent.full_state_dict(),
        "buffer": buffer.state_dict(),
        "rng": rng_state(),
        "episode_returns": list(returns),
        **extra,
    }


def restore_online(state: dict[str, Any], agent: SACAgent, buffer: Any) -> tuple[int, list[float]]:
    """Load what :func:`online_state` saved into ``agent`` and ``buffer``; returns (step, episode returns)."""
    agent.load_full_state_dict(state["agent"])
    buffer.load_state_dict(state["buffer"])
    set_rng_state(state["rng"])
    return int(state["step"]), list(state["episode_returns"])


def resume_check(
    command: str, methods: tuple[str, ...], config: dict[str, Any], keys: tuple[str, ...], run_dir: str
) -> Callable[[dict[str, Any]], None]:
    """The ``check`` of :func:`pyseqrl.utils.runs.open_run` for the SAC-family trainers: the checkpoint in
    ``run_dir`` must have been written by the same command (its ``method`` one of ``methods``) with the same
    values of ``keys`` (dotted paths into ``config``: environment, data, network shapes), else resuming it is
    refused with a ValueError that names what differs."""
    where = str(Path(run_dir) / "checkpoint.pt")
    hint = "choose another --run-dir, or add --no-resume --overwrite to start over"

    def check(state: dict[str, Any]) -> None:
        method = state.get("method") if isinstance(state, dict) else None
        if method not in methods:
            raise ValueError(f"{where} was not written by `pyseqrl {command}` (its method is {method!r}): {hint}")
        saved = state.get("config") or {}
        differ = [
            f"{key} {_at(saved, key)!r} -> {_at(config, key)!r}"
            for key in keys
            if _plain(_at(saved, key)) != _plain(_at(config, key))
        ]
        if differ:
            raise ValueError(f"cannot resume {where} with other options: {', '.join(differ)}; {hint}")

    return check


def _at(config: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None  # type: ignore[assignment]
    return config


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
