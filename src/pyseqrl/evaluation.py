"""Evaluate policies with all episodes in parallel environments: ``pyseqrl.evaluate`` / ``pyseqrl evaluate``.

Each environment runs a fixed number of episodes decided up front (``episodes`` spread over ``num_envs``), and
is masked once it has run them: finishing early does not let an environment contribute more episodes, so short
episodes are not over-represented. The policy acts on the whole batch every step (one batched inference).

Return-conditioned policies (Decision Transformers) implement ``with_target(target_return) -> Policy``; with
``target_returns=[...]`` every target is evaluated and reported in ``EvalResult.per_target``.

Example:
    >>> from pyseqrl.evaluation import evaluate
    >>> result = evaluate("sb3:rl-trained-agents/tqc_Hopper-v3.zip", "Hopper-v4", episodes=10, seed=0)
    >>> print(result)        # mean/std return, length, D4RL score
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from pyseqrl.policies.base import Policy
from pyseqrl.rollout import EnvRunner
from pyseqrl.utils import checks

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Episode statistics of one evaluation (of the first target, when several were evaluated)."""

    env_id: str
    """environment id"""
    returns: np.ndarray
    """float64 [E]: episode returns, ordered by environment then episode"""
    lengths: np.ndarray
    """int64 [E]: episode lengths"""
    mean_return: float
    """mean episode return"""
    std_return: float
    """standard deviation of the episode returns (population, ddof=0)"""
    mean_length: float
    """mean episode length"""
    normalized_scores: np.ndarray | None = None
    """float64 [E]: D4RL-normalised scores 100 * (R - ref_min) / (ref_max - ref_min), when references are known"""
    normalized_score: float | None = None
    """mean normalised score"""
    normalized_std: float | None = None
    """standard deviation of the normalised scores"""
    target_return: float | None = None
    """the target return of a return-conditioned evaluation"""
    per_target: dict[float, EvalResult] = field(default_factory=dict)
    """target return -> result, when ``target_returns`` was given"""
    seconds: float = 0.0
    """wall-clock time of the evaluation"""
    env_steps: int = 0
    """vector steps x num_envs simulated (including masked environments)"""

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics for a logger, e.g. ``{"mean_return": ..., "target_3600/normalized_score": ...}``."""
        out = {"mean_return": self.mean_return, "std_return": self.std_return, "mean_length": self.mean_length}
        if self.normalized_score is not None:
            out["normalized_score"] = self.normalized_score
        for target, res in self.per_target.items():
            for key, value in res.as_dict().items():
                out[f"target_{target:g}/{key}"] = value
        return out

    def __str__(self) -> str:
        rows = [self] if not self.per_target else list(self.per_target.values())
        lines = []
        for r in rows:
            head = f"{r.env_id}" + (f" target {r.target_return:g}" if r.target_return is not None else "")
            score = (
                f", D4RL score {r.normalized_score:.1f} +- {r.normalized_std:.1f}"
                if r.normalized_score is not None
                else ""
            )
            lines.append(
                f"{head}: return {r.mean_return:.1f} +- {r.std_return:.1f} over {len(r.returns)} episodes, "
                f"length {r.mean_length:.0f}{score}"
            )
        return "\n".join(lines)


def _references(env_id: str, ref_min: float | None, ref_max: float | None) -> tuple[float, float] | None:
    if (ref_min is None) != (ref_max is None):
        raise ValueError(f"give both ref_min and ref_max or neither, got ref_min={ref_min!r}, ref_max={ref_max!r}")
    if ref_min is not None:
        checks.number("ref_min", ref_min)
        checks.number("ref_max", ref_max)
        if not ref_max > ref_min:  # type: ignore[operator]
            raise ValueError(f"ref_max must be greater than ref_min, got ref_min={ref_min!r}, ref_max={ref_max!r}")
        return float(ref_min), float(ref_max)  # type: ignore[arg-type]
    from pyseqrl.scores import reference_scores

    try:
        return reference_scores(env_id)
    except KeyError:
        return None


def run_episodes(policy: Policy, env: Any, episodes: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Run exactly ``episodes`` episodes of ``policy`` in ``env`` (a fresh :class:`pyseqrl.envs.VectorEnv`).

    Environment ``i`` runs ``episodes // n`` episodes (plus one for ``i < episodes % n``), then is masked.

    Returns:
        returns float64 ``[E]`` and lengths int64 ``[E]`` ordered by environment then episode, and the number of
        vector steps taken.
    """
    from tqdm.auto import tqdm

    n = env.num_envs
    quota = np.full(n, episodes // n) + (np.arange(n) < episodes % n)
    done = np.zeros(n, np.int64)
    results: list[tuple[int, int, float, int]] = []  # (env, episode index, return, length)
    runner = EnvRunner(env)
    bar = tqdm(total=episodes, desc=f"evaluate {env.env_id}", unit="episode", disable=not progress)
    while (done < quota).any():
        t = runner.step(policy)
        for i, ret, length in zip(t.episode_env_ids, t.episode_returns, t.episode_lengths):
            if done[i] < quota[i]:
                results.append((int(i), int(done[i]), float(ret), int(length)))
                done[i] += 1
                bar.update(1)
    bar.close()
    results.sort()
    returns = np.array([r[2] for r in results], np.float64)
    return returns, np.array([r[3] for r in results], np.int64), runner.steps


def evaluate(
    policy: Policy | str,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    num_envs: int | None = None,
    target_returns: Sequence[float] | None = None,
    ref_min: float | None = None,
    ref_max: float | None = None,
    backend: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate ``policy`` for ``episodes`` episodes in parallel environments.

    Args:
        policy: a :class:`Policy` or a spec for :func:`pyseqrl.policies.load_policy`.
        env_id: environment id, e.g. ``"Hopper-v4"``.
        episodes: number of episodes (per target).
        seed: environment ``i`` is seeded with ``seed + i``; every target uses the same seeds.
        num_envs: parallel environments (default: ``episodes``, i.e. every episode at once).
        target_returns: evaluate ``policy.with_target(t)`` for each ``t`` (return-conditioned policies).
        ref_min, ref_max: reference returns of the normalised score (default: the D4RL table by env family).
        backend: :func:`pyseqrl.envs.make` backend.
        env_kwargs: extra environment keyword arguments.
        progress: show a progress bar.

    Returns:
        :class:`EvalResult`; with ``target_returns`` its top-level fields are those of the first target and
        ``per_target`` holds all of them.
    """
    from pyseqrl.envs import make

    checks.integer("episodes", episodes, 1)
    checks.optional(checks.integer, "num_envs", num_envs, 1)
    num_envs = episodes if num_envs is None else min(num_envs, episodes)
    refs = _references(env_id, ref_min, ref_max)
    targets: list[float | None] = [None] if target_returns is None else [float(t) for t in target_returns]
    if not targets:
        raise ValueError("target_returns is empty")
    results: list[EvalResult] = []
    for target in targets:
        t0 = time.perf_counter()
        env = make(env_id, num_envs, seed=seed, backend=backend, **(env_kwargs or {}))
        try:
            if isinstance(policy, str):
                from pyseqrl.policies import load_policy

                policy = load_policy(policy, env, seed=seed)
            base = policy
            if target is not None:
                if not hasattr(base, "with_target"):
                    raise TypeError(
                        f"target_returns needs a return-conditioned policy with with_target(); "
                        f"{type(base).__name__} has none"
                    )
                base = base.with_target(target)
            returns, lengths, vector_steps = run_episodes(base, env, episodes, progress=progress)
        finally:
            env.close()
        scores = None if refs is None else 100.0 * (returns - refs[0]) / (refs[1] - refs[0])
        result = EvalResult(
            env_id=env_id,
            returns=returns,
            lengths=lengths,
            mean_return=float(returns.mean()),
            std_return=float(returns.std()),
            mean_length=float(lengths.mean()),
            normalized_scores=scores,
            normalized_score=None if scores is None else float(scores.mean()),
            normalized_std=None if scores is None else float(scores.std()),
            target_return=target,
            seconds=time.perf_counter() - t0,
            env_steps=vector_steps * num_envs,
        )
        log.info("%s", result)
        results.append(result)
    if target_returns is None:
        return results[0]
    return replace(results[0], per_target={r.target_return: r for r in results})  # type: ignore[misc]


@dataclass
class EvaluateConfig:
    """pyseqrl evaluate: evaluate a policy in parallel environments."""

    policy: str
    """policy spec: random, sb3:<zip>, cs285:<pkl>, pyseqrl:<checkpoint>, dt:<checkpoint>"""
    env_id: str = "Hopper-v4"
    """environment id"""
    episodes: int = 10
    """episodes (per target)"""
    seed: int = 0
    """environment i is seeded with seed + i"""
    num_envs: int | None = None
    """parallel environments (None: one per episode)"""
    target_returns: list[float] | None = None
    """target returns of a return-conditioned policy (Decision Transformer)"""
    ref_min: float | None = None
    """reference min return of the normalised score (None: the D4RL table)"""
    ref_max: float | None = None
    """reference max return of the normalised score (None: the D4RL table)"""
    backend: Literal["auto", "envpool", "gymnasium", "gymnasium-async"] = "auto"
    """environment backend (auto: EnvPool when it has the env)"""
    max_episode_steps: int | None = None
    """override the environment's time limit"""
    progress: bool = True
    """show a progress bar"""


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl evaluate --policy SPEC [options]``."""
    import tyro

    cfg = tyro.cli(EvaluateConfig, args=argv, prog="pyseqrl evaluate")
    env_kwargs = {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    result = evaluate(
        cfg.policy,
        cfg.env_id,
        episodes=cfg.episodes,
        seed=cfg.seed,
        num_envs=cfg.num_envs,
        target_returns=cfg.target_returns,
        ref_min=cfg.ref_min,
        ref_max=cfg.ref_max,
        backend=cfg.backend,
        env_kwargs=env_kwargs,
        progress=cfg.progress,
    )
    print(result)
    print(f"({result.seconds:.1f} s)")
    return 0
