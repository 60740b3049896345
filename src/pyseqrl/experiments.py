"""Building blocks shared by ``pyseqrl quickstart`` and ``pyseqrl reproduce``: datasets, ChibiT, runs, curves.

Each function runs one stage of the pipeline through the public API (collect, pretrain-lm, train dt|wiki|lamo,
train calql|wsrl) and returns plain numbers, so the two commands stay short and read top to bottom.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: where a pretrained ChibiT is cached between runs (override with PYSEQRL_CACHE)
CACHE = Path(os.environ.get("PYSEQRL_CACHE", "~/.cache/pyseqrl")).expanduser()


# ------------------------------------------------------------------------------------------------ datasets
def behaviour_policy(
    env_id: str, spec: str | None = None, sac_steps: int = 20_000, run_dir: Path | None = None, seed: int = 0
) -> str:
    """A policy spec for building datasets: ``spec`` if given, else pyseqrl's built-in reference policy for
    ``env_id``, else a short SAC run from scratch (``sac_steps`` environment steps) whose actor is used."""
    from pyseqrl.policies import builtin_policies

    if spec:
        return spec
    if env_id in builtin_policies():
        return f"builtin:{env_id}"
    from pyseqrl.algos.rl_agent import AgentConfig
    from pyseqrl.algos.sac import SACConfig, train_sac

    run_dir = Path(run_dir or CACHE / f"sac-{env_id}-{sac_steps}-{seed}")
    ckpt = run_dir / "checkpoint.pt"
    if not ckpt.exists():
        print(f"no built-in policy for {env_id}: training SAC for {sac_steps} steps as the behaviour policy")
        train_sac(
            SACConfig(
                env_id=env_id,
                total_steps=sac_steps,
                seed=seed,
                learning_starts=min(5000, sac_steps // 4),
                agent=AgentConfig(num_critics=2),
                run_dir=str(run_dir),
                eval_every=0,
                checkpoint_every=sac_steps,
                tensorboard=False,
                progress=True,
                threads=1,
            )
        )
    return f"sac:{ckpt}"


def build_dataset(
    env_id: str, policy: str, steps: int, path: Path, seed: int = 0, noise_std: float = 0.1, num_envs: int = 16
) -> Any:
    """Collect ``steps`` transitions of ``policy`` (with Gaussian action noise) into ``path``; reuses the file."""
    from pyseqrl.collect import collect
    from pyseqrl.data import load

    if path.exists():
        return load(path)
    ds = collect(
        policy,
        env_id,
        num_envs=num_envs,
        steps=steps,
        seed=seed,
        noise_std=noise_std,
        progress=True,
        metadata={"recipe": "medium"},
    )
    ds.save(path)
    return ds


def dataset_path(env_id: str, policy: str, steps: int, seed: int = 0, noise_std: float = 0.1) -> Path:
    """Where :func:`cached_dataset` keeps the dataset of these parameters (under ``CACHE/datasets``)."""
    key = hashlib.sha256(json.dumps([env_id, policy, steps, seed, noise_std]).encode()).hexdigest()[:10]
    return CACHE / "datasets" / f"{env_id}-medium-{steps}-s{seed}-{key}.hdf5"


def dataset_fingerprint(data: Any) -> str:
    """The first 16 hex digits of the SHA-256 of a dataset's transitions (observations, actions, rewards,
    terminals, timeouts): which sample of its behaviour policy a run trained on. Datasets of the same parameters
    built on two machines may differ (floating-point differences grow through the physics); so do their
    fingerprints. ``data``: a path or an EpisodeDataset."""
    from pyseqrl.data import load

    ds = load(data) if isinstance(data, (str, Path)) else data
    h = hashlib.sha256()
    for a in (ds.observations, ds.actions, ds.rewards, ds.terminals, ds.timeouts):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def cached_dataset(env_id: str, policy: str, steps: int, seed: int = 0, noise_std: float = 0.1) -> Path:
    """A D4RL-style dataset (:func:`build_dataset`), built once per machine and kept in ``CACHE/datasets``.

    The file is keyed by every parameter (environment, policy spec, steps, seed, noise) and written atomically;
    concurrent callers wait for one another, so two processes never build the same dataset at once and nobody
    reads a half-written file.
    """
    path = dataset_path(env_id, policy, steps, seed, noise_std)
    with _file_lock(path):
        if not path.exists():
            build_dataset(env_id, policy, steps, path, seed=seed, noise_std=noise_std)
    return path


def subset_path(path: Path, ratio: float, seed: int = 0) -> Path:
    """Where :func:`cached_subset` keeps a ``ratio`` of the dataset at ``path`` (built or not)."""
    if ratio >= 1.0:
        return Path(path)
    return Path(path).with_name(f"{Path(path).stem}-ratio{ratio:g}-s{seed}.hdf5")


def cached_subset(path: Path, ratio: float, seed: int = 0) -> Path:
    """A random ``ratio`` of the trajectories of the dataset at ``path``, by count (LaMo's data ratios), saved next
    to it once (atomic, locked like :func:`cached_dataset`); ``ratio >= 1`` is the dataset itself."""
    from pyseqrl.data import load

    sub = subset_path(path, ratio, seed)
    if sub == Path(path):
        return sub
    with _file_lock(sub):
        if not sub.exists():
            load(path).subset_episodes(ratio, seed=seed).save(sub)
    return sub


def behaviour_scores(data: Any) -> np.ndarray:
    """D4RL-normalised scores of a dataset's complete episodes (those cut short by the end of the collection
    budget are left out; all episodes if none is complete). ``data``: a path or an EpisodeDataset."""
    from pyseqrl.data import load

    ds = load(data) if isinstance(data, (str, Path)) else data
    scores, complete = ds.normalized_scores(), ds.complete_episodes()
    return scores[complete] if complete.any() else scores


def dataset_score(data: Any) -> float:
    """The behaviour policy's level: the average of :func:`behaviour_scores`."""
    return float(np.mean(behaviour_scores(data)))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.lock`` for the duration of the block (waits for other holders)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------ ChibiT
def chibit(
    text: Sequence[str] = ("ovos-wiki",),
    steps: int | None = None,
    out: Path | None = None,
    max_chars: int | None = None,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """The ChibiT backbone (a 128-wide, 3-layer, 1-head GPT-2) and its pretraining summary.

    By default (``steps=None``) this is the ChibiT pretrained until its held-out perplexity stops improving,
    trained once per machine and cached (:func:`pyseqrl.lm.pretrain.cached_chibit`; ``out`` is then ignored).
    With ``steps``, a short run of at most that many steps is made instead (in ``out``, else in the cache), for
    smoke tests and tiny budgets; it is reused when it exists.
    """
    from pyseqrl.lm.pretrain import SUMMARY, PretrainConfig, cached_chibit, pretrain

    if steps is None:
        path = cached_chibit(text, max_chars=max_chars, seed=seed)
        print(f"using the pretrained ChibiT in {path}")
        return path, json.loads((path / SUMMARY).read_text())["summary"]
    key = f"chibit-{'+'.join(Path(t).name for t in text)}-{steps}-{max_chars}-{seed}"
    out = Path(out or CACHE / key)
    if (out / SUMMARY).exists() and (out / "model.safetensors").exists():
        print(f"reusing the pretrained ChibiT in {out}")
        return out, json.loads((out / SUMMARY).read_text())["summary"]
    summary = pretrain(
        PretrainConfig(
            text=list(text),
            run_dir=str(out),
            max_steps=steps,
            max_chars=max_chars,
            seed=seed,
            warmup_steps=max(1, min(200, steps // 10)),
            eval_every=max(1, steps // 5),
            max_minutes=None,
        )
    )
    return out, summary


# ------------------------------------------------------------------------------------------------ DT runs
def train_dt(
    recipe: str,
    dataset: Path,
    run_dir: Path,
    steps: int,
    seed: int = 0,
    backbone: str | None = None,
    eval_every: int = 0,
    eval_episodes: int = 5,
    lm_text: Sequence[str] = ("ovos-wiki",),
    checkpoint_every: int | None = None,
    **overrides: Any,
) -> dict[str, float]:
    """``pyseqrl train <recipe>`` through the Python API; returns the final metrics.

    ``checkpoint_every``: checkpoint period (None: only at the end); a run resumes from its last checkpoint.
    """
    from pyseqrl.algos.dt import TrainConfig, resolve, train

    short_run = {  # schedules scaled to the run's length; ``overrides`` may set them too
        "warmup_steps": max(1, min(1000, steps // 10)),
        "tensorboard": False,
        "log_every": max(1, steps // 20),
        "align_anneal_steps": max(1, steps // 5),
    }
    cfg = TrainConfig(
        recipe=recipe,
        dataset=str(dataset),
        run_dir=str(run_dir),
        steps=steps,
        seed=seed,
        backbone=backbone,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        lm_text=list(lm_text),
        checkpoint_every=checkpoint_every or steps,
        **{**short_run, **overrides},
    )
    return train(resolve(cfg))


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """Rows of ``run_dir/metrics.csv`` as floats (empty cells dropped)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def curve(run_dir: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the first metric whose name starts with ``prefix`` (e.g. ``"eval/score_"``)."""
    steps, values = [], []
    for row in read_metrics(run_dir):
        key = next((k for k in row if k.startswith(prefix)), None)
        if key is not None:
            steps.append(row["step"])
            values.append(row[key])
    return np.asarray(steps), np.asarray(values)


def steps_to_fraction(steps: np.ndarray, values: np.ndarray, fraction: float = 0.9) -> float:
    """First step at which a curve reaches ``fraction`` of its final value (Wiki-RL's convergence measure)."""
    if len(values) == 0:
        return math.nan
    final = values[-1]
    reached = np.flatnonzero(values >= fraction * final) if final > 0 else np.flatnonzero(values >= final)
    return float(steps[reached[0]]) if len(reached) else math.nan


# ------------------------------------------------------------------------------------------------ WSRL runs
def train_calql(
    dataset: Path,
    run_dir: Path,
    steps: int,
    seed: int = 0,
    checkpoint_every: int | None = None,
    progress: bool = True,
    calql: bool = True,
    eval_every: int = 0,
    eval_episodes: int = 10,
    **agent: Any,
) -> Path:
    """Cal-QL (``calql=False``: CQL) offline pretraining; returns the checkpoint path.

    Resumes from ``run_dir/checkpoint.pt`` (a finished run is not trained again); ``checkpoint_every``: checkpoint
    period (None: only at the end); ``eval_every``: evaluate the policy on the dataset's environment every this many
    steps with ``eval_episodes`` episodes (0: never); ``agent``: :class:`AgentConfig` fields.
    """
    from pyseqrl.algos.calql import CalQLConfig
    from pyseqrl.algos.calql import train_calql as _train

    cfg = CalQLConfig(
        dataset=str(dataset),
        steps=steps,
        seed=seed,
        run_dir=str(run_dir),
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        checkpoint_every=checkpoint_every or steps,
        log_every=max(1, steps // 10),
        tensorboard=False,
        progress=progress,
    )
    cfg = replace(cfg, cql=replace(cfg.cql, calql=calql), agent=replace(cfg.agent, **agent))
    _train(cfg)
    return Path(run_dir) / "checkpoint.pt"


def train_wsrl(
    checkpoint: Path,
    run_dir: Path,
    mode: str,
    env_id: str,
    total_steps: int,
    warmup_steps: int,
    seed: int = 0,
    dataset: Path | None = None,
    eval_every: int = 0,
    min_buffer: int | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    log_every: int | None = None,
    log_episodes: int = 10,
    idle_steps: bool = True,
    **agent: Any,
) -> dict[str, Any]:
    """One WSRL run (or a baseline ``mode``); returns the online episode returns and the switch metrics.

    ``min_buffer``: online transitions before the first update (None: the official rule, a UTD round's worth).
    ``checkpoint_every``: checkpoint period (None: only at the end; every checkpoint cuts the running episodes).
    ``log_every``: metrics period in environment steps (None: 20 rows per run).
    ``log_episodes``: episodes after the first update whose returns are logged one by one, with the step at which
    each ended (``switch/episode_return``).
    ``idle_steps``: :attr:`pyseqrl.algos.wsrl.WSRLConfig.idle_steps`.
    """
    from pyseqrl.algos.wsrl import WSRLConfig
    from pyseqrl.algos.wsrl import train_wsrl as _train

    offline = str(dataset) if dataset and mode.startswith("keep_offline") else None  # only those modes use it
    cfg = WSRLConfig(
        checkpoint="" if mode == "scratch" else str(checkpoint),
        mode=mode,
        env_id=env_id,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        seed=seed,
        run_dir=str(run_dir),
        eval_every=eval_every,
        eval_episodes=5,
        checkpoint_every=checkpoint_every or total_steps,
        log_every=log_every or max(1, total_steps // 20),
        tensorboard=False,
        dataset=offline,
        min_buffer=min_buffer,
        progress=progress,
        first_episodes_to_log=log_episodes,
        idle_steps=idle_steps,
    )
    if mode == "scratch":  # the other modes take their agent from the checkpoint
        cfg = replace(cfg, agent=replace(cfg.agent, **agent))
    result = _train(cfg)
    return {
        "episode_returns": list(map(float, result.episode_returns)),
        "switch": result.switch_metrics,
        "config": asdict(cfg),
    }


# ------------------------------------------------------------------------------------------------ output
def mean_std(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.1f} ± {v.std():.1f}" if v.size > 1 else f"{v[0]:.1f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    vline: float | None = None,
) -> Path | None:
    """Mean ± std over seeds of each named list of (x, y) curves, as a PNG; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot %s (pip install 'pyseqrl[plot]')", path)
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in curves.items():
        runs = [(x, y) for x, y in runs if len(x)]
        if not runs:
            continue
        n = min(len(x) for x, _ in runs)
        x = runs[0][0][:n]
        ys = np.stack([y[:n] for _, y in runs])
        ax.plot(x, ys.mean(0), label=f"{name} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(x, ys.mean(0) - ys.std(0), ys.mean(0) + ys.std(0), alpha=0.2)
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle="--", linewidth=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # (no curve yet: an empty frame, without a legend warning)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
