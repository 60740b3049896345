"""Build D4RL-style datasets by rolling policies out in vectorised environments: ``pyseqrl collect``.

Building a dataset::

    ds = collect("sb3:rl-trained-agents/tqc_Hopper-v3.zip", "Hopper-v4", num_envs=16, steps=100_000, seed=0)
    ds.save("hopper-expert.h5")

or ``pyseqrl collect --env-id Hopper-v4 --recipe expert --policy sb3:... --steps 100000 --out hopper-expert.h5``.
Recipes: ``random`` (uniform actions), ``medium`` / ``expert`` (the given policy), ``medium-expert`` (the
concatenation of a medium and an expert dataset of equal size) and ``medium-replay`` (everything an online SAC run
from scratch collected until it reached the medium level; uses :func:`pyseqrl.algos.sac.sac_replay_dataset`).

Environments are stepped by :class:`pyseqrl.rollout.EnvRunner` (re-exported here), which never hands out the rows
of autoreset steps.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pyseqrl.policies.base import Policy
from pyseqrl.rollout import EnvRunner, Transitions, episodes_from_transitions, rollout
from pyseqrl.utils import checks

__all__ = ["EnvRunner", "Transitions", "build_recipe", "collect", "episodes_from_transitions", "rollout"]

log = logging.getLogger(__name__)

RECIPES = ("custom", "random", "medium", "expert", "medium-expert", "medium-replay")


def _make_policy(policy: Policy | str, env: Any, seed: int, noise_std: float, epsilon: float) -> Policy:
    from pyseqrl.policies import EpsilonRandom, GaussianNoise, load_policy

    seeds = np.random.SeedSequence(seed).generate_state(3)
    if isinstance(policy, str):
        policy = load_policy(policy, env, seed=int(seeds[0]))
    if noise_std > 0:
        policy = GaussianNoise(policy, noise_std, env.action_low, env.action_high, seed=int(seeds[1]))
    if epsilon > 0:
        policy = EpsilonRandom(policy, epsilon, env.action_low, env.action_high, seed=int(seeds[2]))
    return policy


def collect(
    policy: Policy | str,
    env_id: str,
    num_envs: int = 16,
    steps: int | None = None,
    episodes: int | None = None,
    seed: int = 0,
    noise_std: float = 0.0,
    epsilon: float = 0.0,
    backend: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """Roll ``policy`` out in ``num_envs`` parallel environments and return an EpisodeDataset.

    Args:
        policy: a :class:`Policy` or a spec for :func:`pyseqrl.policies.load_policy` (``"random"``, ``"sb3:..."``).
        env_id: environment id, e.g. ``"Hopper-v4"``.
        num_envs: parallel environments.
        steps: collect exactly this many transitions; episodes still running at the end are kept as truncated.
        episodes: or collect exactly this many complete episodes (each env runs a fixed share, so short episodes
            are not favoured).
        seed: seeds the environments (env ``i``: ``seed + i``), a spec-loaded random policy and the noise.
        noise_std: Gaussian action noise, relative to the half-width of the action range (0: none).
        epsilon: probability of a uniform random action per step (0: none).
        backend: :func:`pyseqrl.envs.make` backend.
        env_kwargs: extra environment keyword arguments (e.g. ``max_episode_steps``).
        progress: show a tqdm progress bar.
        metadata: extra metadata entries.

    Returns:
        ``EpisodeDataset`` with observations, next observations and metadata ``env_id``, ``policy``, ``seed``,
        ``noise_std``, ``epsilon``, ``num_envs``, ``backend``, ``num_complete_episodes``, ``return_mean/std/min/max``
        (over the complete episodes: not those cut short by the ``steps`` budget) and the reference scores.
    """
    from tqdm.auto import tqdm

    from pyseqrl.data import EpisodeDataset
    from pyseqrl.envs import make

    if (steps is None) == (episodes is None):
        raise ValueError(f"give exactly one of steps= and episodes=, got steps={steps!r}, episodes={episodes!r}")
    budget = steps if steps is not None else episodes
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"steps/episodes must be a positive integer, got {budget!r}")
    if episodes is not None:
        num_envs = min(num_envs, episodes)
    env = make(env_id, num_envs, seed=seed, backend=backend, **(env_kwargs or {}))
    try:
        policy = _make_policy(policy, env, seed, noise_std, epsilon)
        runner = EnvRunner(env)
        chunks: list[Transitions] = []
        if steps is not None:
            bar = tqdm(total=steps, desc=f"collect {env_id}", unit="step", disable=not progress)
            while runner.transitions < steps:
                t = runner.step(policy)
                over = runner.transitions - steps
                if over > 0:  # keep exactly `steps`: drop the last rows (highest env ids) of the last step
                    t = t.select(slice(0, len(t) - over))
                chunks.append(t)
                bar.update(len(t))
            bar.close()
            eps, complete = episodes_from_transitions(chunks, cut_unfinished=True)
        else:
            quota = np.full(num_envs, episodes // num_envs) + (np.arange(num_envs) < episodes % num_envs)
            done_count = np.zeros(num_envs, np.int64)
            bar = tqdm(total=episodes, desc=f"collect {env_id}", unit="episode", disable=not progress)
            while (done_count < quota).any():
                t = runner.step(policy)
                active = done_count[t.env_ids] < quota[t.env_ids]
                chunks.append(t.select(active))
                finished = t.episode_env_ids[done_count[t.episode_env_ids] < quota[t.episode_env_ids]]
                done_count[finished] += 1
                bar.update(len(finished))
            bar.close()
            eps, complete = episodes_from_transitions(chunks, cut_unfinished=False)
    finally:
        env.close()

    # return statistics of the episodes that really ended (the budget cuts the last one of each env short)
    returns = np.array([float(e["rewards"].sum()) for e, c in zip(eps, complete) if c] or [np.nan])
    meta: dict[str, Any] = {
        "env_id": env_id,
        "policy": getattr(policy, "name", type(policy).__name__),
        "seed": int(seed),
        "noise_std": float(noise_std),
        "epsilon": float(epsilon),
        "num_envs": int(num_envs),
        "backend": env.backend,
        "num_complete_episodes": int(complete.sum()),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
    }
    try:
        from pyseqrl.scores import reference_scores

        meta["ref_min_score"], meta["ref_max_score"] = reference_scores(env_id)
    except KeyError:
        pass
    meta.update(metadata or {})
    ds = EpisodeDataset.from_episodes(eps, metadata=meta)
    log.info(
        "collected %d transitions in %d episodes of %s with %s: return %.1f +- %.1f",
        len(ds),
        ds.num_episodes,
        env_id,
        meta["policy"],
        meta["return_mean"],
        meta["return_std"],
    )
    return ds


def build_recipe(
    recipe: str,
    env_id: str,
    policy: str | None = None,
    expert_policy: str | None = None,
    steps: int = 1_000_000,
    num_envs: int = 16,
    seed: int = 0,
    backend: str = "auto",
    progress: bool = True,
    medium_return: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataset of one of the D4RL families.

    Args:
        recipe: ``random``, ``medium``, ``expert``, ``medium-expert``, ``medium-replay`` or ``custom``.
        env_id: environment id.
        policy: the behaviour policy spec (the medium policy for ``medium-expert``); unused by ``random`` and
            ``medium-replay``.
        expert_policy: the expert policy spec of ``medium-expert``.
        steps: transitions (per half for ``medium-expert``; the SAC budget for ``medium-replay``).
        num_envs, seed, backend, progress: as for :func:`collect`.
        medium_return: ``medium-replay`` stops SAC once its recent training return reaches this.
        **kwargs: more :func:`collect` arguments (``noise_std``, ``epsilon``, ``env_kwargs``); ``run_dir`` for the
            SAC run of ``medium-replay`` (default: a temporary directory).
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; expected one of {RECIPES}")
    run_dir = kwargs.pop("run_dir", None)
    common = dict(env_id=env_id, num_envs=num_envs, steps=steps, backend=backend, progress=progress, **kwargs)
    if recipe == "random":
        return collect("random", seed=seed, metadata={"recipe": recipe}, **common)
    if recipe == "medium-replay":
        # D4RL's medium-replay: the replay buffer of an online SAC run trained up to the medium level.
        try:  # the SAC trainer needs torch (the optional 'torch' extra); the other recipes do not
            from pyseqrl.algos.sac import sac_replay_dataset
        except ImportError as e:
            raise RuntimeError(f"the medium-replay recipe trains SAC, which needs torch: {e}") from e
        run_dir = run_dir or tempfile.mkdtemp(prefix="pyseqrl-medium-replay-")
        ds = sac_replay_dataset(
            env_id,
            total_steps=steps,
            seed=seed,
            stop_return=medium_return,
            backend=backend,
            progress=progress,
            run_dir=run_dir,
            tensorboard=False,
        )
        ds.metadata["recipe"] = recipe
        return ds
    if policy is None:
        raise ValueError(f"recipe {recipe!r} needs a behaviour policy spec (--policy), e.g. 'sb3:sac_Hopper-v3.zip'")
    if recipe != "medium-expert":
        return collect(policy, seed=seed, metadata={"recipe": recipe}, **common)
    if expert_policy is None:
        raise ValueError("recipe 'medium-expert' needs --expert-policy as well as --policy (the medium policy)")
    from pyseqrl.data import EpisodeDataset

    medium = collect(policy, seed=seed, metadata={"recipe": "medium"}, **common)
    expert = collect(expert_policy, seed=seed + 1_000_003, metadata={"recipe": "expert"}, **common)
    ds = EpisodeDataset.concatenate([medium, expert])
    ds.metadata.update(recipe=recipe, policy=f"{medium.metadata['policy']} + {expert.metadata['policy']}")
    return ds


@dataclass
class CollectConfig:
    """pyseqrl collect: roll a policy out in parallel environments and write an EpisodeDataset file."""

    out: str
    """output dataset file (pyseqrl HDF5), e.g. data/hopper-expert.h5"""
    env_id: str = "Hopper-v4"
    """environment id (EnvPool when it has it, else gymnasium)"""
    policy: str | None = None
    """behaviour policy spec: random, sb3:<zip>, cs285:<pkl>, pyseqrl:<checkpoint> (the medium one for medium-expert)"""
    expert_policy: str | None = None
    """expert policy spec for --recipe medium-expert"""
    recipe: Literal["custom", "random", "medium", "expert", "medium-expert", "medium-replay"] = "custom"
    """D4RL family (stored as metadata 'recipe'); custom: just --policy"""
    steps: int | None = None
    """number of transitions (default 1,000,000 unless --episodes is given)"""
    episodes: int | None = None
    """or: number of complete episodes"""
    num_envs: int = 16
    """parallel environments"""
    seed: int = 0
    """seed of environments, random policy and noise"""
    noise_std: float = 0.0
    """Gaussian action noise relative to the half action range"""
    epsilon: float = 0.0
    """probability of a uniform random action"""
    backend: Literal["auto", "envpool", "gymnasium", "gymnasium-async"] = "auto"
    """environment backend (auto: EnvPool when it has the env)"""
    max_episode_steps: int | None = None
    """override the environment's time limit"""
    medium_return: float | None = None
    """medium-replay: stop SAC once its training return reaches this"""
    progress: bool = True
    """show a progress bar"""


def main(argv: list[str] | None = None) -> int:
    """``pyseqrl collect [options]``."""
    import tyro

    cfg = tyro.cli(CollectConfig, args=argv, prog="pyseqrl collect")
    checks.output_file("--out", cfg.out)  # before any work
    env_kwargs = {} if cfg.max_episode_steps is None else {"max_episode_steps": cfg.max_episode_steps}
    kwargs: dict[str, Any] = {"noise_std": cfg.noise_std, "epsilon": cfg.epsilon, "env_kwargs": env_kwargs}
    if cfg.recipe in ("custom", "random", "medium", "expert"):  # one behaviour policy
        policy = "random" if cfg.recipe == "random" else cfg.policy
        if policy is None:
            raise ValueError(f"--recipe {cfg.recipe} needs --policy (e.g. random, sb3:agent.zip)")
        steps = 1_000_000 if cfg.steps is None and cfg.episodes is None else cfg.steps
        ds = collect(
            policy,
            cfg.env_id,
            cfg.num_envs,
            steps=steps,
            episodes=cfg.episodes,
            seed=cfg.seed,
            backend=cfg.backend,
            progress=cfg.progress,
            metadata={"recipe": cfg.recipe},
            **kwargs,
        )
    else:  # medium-expert, medium-replay
        if cfg.episodes is not None:
            raise ValueError(f"--recipe {cfg.recipe} takes --steps, not --episodes")
        ds = build_recipe(
            cfg.recipe,
            cfg.env_id,
            cfg.policy,
            cfg.expert_policy,
            steps=cfg.steps or 1_000_000,
            num_envs=cfg.num_envs,
            seed=cfg.seed,
            backend=cfg.backend,
            progress=cfg.progress,
            medium_return=cfg.medium_return,
            **kwargs,
        )
    ds.save(cfg.out)
    m = ds.metadata
    line = (
        f"wrote {cfg.out}: {len(ds)} transitions, {ds.num_episodes} episodes of {cfg.env_id}; "
        f"{m.get('num_complete_episodes', ds.num_episodes)} complete episodes: "
        f"return {m.get('return_mean', float('nan')):.1f} +- {m.get('return_std', float('nan')):.1f}"
    )
    if "ref_min_score" in m and "return_mean" in m:
        from pyseqrl.scores import normalized_score

        line += f", D4RL score {normalized_score(m['return_mean'], m['ref_min_score'], m['ref_max_score']):.1f}"
    print(line)
    return 0
