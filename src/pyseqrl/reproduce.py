"""``pyseqrl reproduce <suite>``: the papers' comparisons as resumable sweeps of seeds x methods x datasets.

Suites (each writes ``<out>/<suite>-<scale>/results.md``, ``results.json``, PNG learning curves with seed bands and
one directory per run):

* ``wikirl`` -- Reid et al. 2022: DT from random init vs Wiki-RL from ChibiT (and from any backbone given with
  ``--lm``, e.g. ``smollm2``) on medium datasets, and on ``--ablation-envs`` Wiki-RL's recipe on an untrained
  backbone of ChibiT's architecture (what the pretrained weights add beyond the recipe) and DT with its timestep
  table initialised at Wiki-RL's scale (what that one recipe difference does). Reports the final
  evaluation, the mean of the last three, the best evaluation, the steps to reach 90% of the final score (the
  paper's convergence measure) and the steps to reach the dataset's own average score.
* ``lamo`` -- Shi et al. 2023: DT vs LaMo on 1%, 10% and 100% of a medium dataset's trajectories (by count).
* ``wsrl`` -- Zhou et al. 2024: CQL pretraining (``--pretrain calql``: Cal-QL), then WSRL vs no warmup vs keeping
  the offline data (appended to the online buffer, or in 50/50 batches) vs SAC from scratch, with the return curve
  of the online episodes; at the cpu scale, whose online runs step only the networks an update trains, WSRL once
  more with the official update's idle optimizer steps (``WSRLConfig.idle_steps``).

Every run is a separate process (one per core; torch threads 1) that checkpoints as it goes. Stop the sweep at any
moment (Ctrl-C, ``kill``) and run the same command again: finished runs are kept, half-finished ones resume from
their checkpoint, failed ones are tried again; a corrupt checkpoint is reported and its run goes on from the
checkpoint before it (``checkpoint.pt.prev``), else from scratch.
``--status`` prints where every run stands without running anything. A run that still fails is shown as failed in
the status and in the results table (which counts the seeds behind every number), never left out silently.
``--only`` runs a subset (shell patterns on the run names, e.g. ``'*/lamo-1-s*'``). ``--keep DIR`` records every
finished run's options and results (a few kB, no checkpoints) in ``DIR/<suite>-<scale>/`` as it finishes; kept
under version control, the record restores the finished runs on a fresh machine (they are copied in, not rerun)
and ``--report`` rebuilds the tables from it. Runs match by their options; a dataset rebuilt from the same
parameters on another machine can be another sample of the same policy, so every result names its dataset's
fingerprint (``dataset_sha256``) and the table names the samples behind it. A recorded run finished again with
another result (a pretraining rerun on another machine, for the online runs that start from its checkpoint) is
kept beside its record, never over it, and the WSRL table pairs each online run with the pretraining of its own
sample.

Datasets are D4RL-style medium sets collected with EnvPool from ``--policy`` (default: pyseqrl's built-in policy for
the environment) with Gaussian action noise 0.1, built once per machine (cached by their parameters) before the
runs start. Scores are D4RL-normalised; mean ± std (population) over the seeds that finished.

Budgets (:data:`SCALES`), from step times measured with one torch thread on a 2-core machine whose other core was
busy: a DT step of the 128x3 model ~0.07 s at batch 32 (bf16 autocast on a CPU with AVX512-BF16; ~0.15 s in fp32),
Wiki-RL from ChibiT about the same, LaMo ~2.4x (co-training on 2 x 128-token blocks; LaMo's 2 x 1,024 would be
~8x), a CQL step with 2 critics ~0.16 s; 100k dataset steps collect in 15 s.

* ``tiny``  -- seconds per run; what the tests run.
* ``small`` -- minutes per run; Hopper, 2 seeds.
* ``cpu``   -- each suite in about 3-4 hours on 2 cores (the first sweep on a machine also pretrains ChibiT,
  ~30 min, cached): datasets of 1M steps (D4RL's medium size); wikirl 24 runs (Hopper, HalfCheetah, Walker2d x DT,
  Wiki-RL x 3 seeds, and the two ablations on HalfCheetah) of 10,000 DT steps at batch 32 with 10
  evaluations of 10 episodes (~15 min per run; DT from random init first reaches the Hopper dataset's level after
  5,000-9,000 steps, and still falls in some later evaluations); lamo 18 runs (Hopper x 1%, 10%, 100% x DT,
  LaMo x 3 seeds) of the same budget (~22 min per LaMo run beside another run); wsrl on Hopper, 3 CQL runs of
  30,000 steps (~80 min each beside another run; 5,000 left policies at D4RL 2-4) and 15 online runs of 20,000
  environment steps (5 modes x 3 seeds, 11-33 min each), 2 critics, about 4-5 hours in all. The lamo suite's DT
  runs on the full dataset are the wikirl suite's Hopper DT runs: a suite copies the finished runs it shares with
  another sweep under the same ``--out`` instead of running them again. SmolLM2-135M is left out (one fine-tuning
  step takes ~5 s on one core); add it with ``--lm smollm2`` at a smaller ``--seeds`` / ``--envs``.
* ``gpu``   -- the papers' budgets: 100k DT steps at batch 64, 250k CQL steps (the official locomotion runs), 300k
  online steps, 10 critics, 5 seeds; wikirl and lamo also compare SmolLM2-135M.

Start a suite in the background (resumable: the same command continues it) and look at it at any time::

    nohup pyseqrl reproduce wikirl --scale cpu > wikirl-cpu.log 2>&1 &
    pyseqrl reproduce wikirl --scale cpu --status
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pyseqrl import experiments as ex
from pyseqrl import sweep as sw
from pyseqrl.utils import checks


@dataclass
class Scale:
    """Budgets of a scale preset."""

    envs: list[str]
    """default environments"""
    seeds: list[int]
    """default seeds"""
    dataset_steps: int
    dt_steps: int
    dt_batch_size: int
    evals: int
    """evaluations per DT run (learning-curve points)"""
    eval_episodes: int
    lm_steps: int | None  # None: the ChibiT pretrained to convergence, once per machine (cached)
    lm_max_chars: int
    calql_steps: int
    wsrl_warmup: int
    wsrl_steps: int
    num_critics: int
    """critics of the pretraining and SAC (WSRL uses 10; 2 are ~4x cheaper on a CPU)"""
    checkpoints: int = 10
    """checkpoints per run (what a stopped run loses is at most 1/checkpoints of it)"""
    wsrl_min_buffer: int | None = None  # None: official first update after a UTD round of online data (1,024)
    wsrl_idle_steps: bool = True
    """the online runs' idle optimizer steps (``WSRLConfig.idle_steps``; True as the official update_high_utd)"""
    wsrl_idle_ablation: bool = False
    """also run WSRL with the other idle-step setting (one more row, ``wsrl-idle-s*`` or ``wsrl-noidle-s*``)"""
    envs_lamo_wsrl: list[str] | None = None
    """environments of the lamo and wsrl suites (None: envs)"""
    lamo_lm_seq_len: int | None = None
    """LaMo's LM co-training block length (None: the recipe's 1,024 tokens, capped at the backbone's positions)"""
    lms: list[str] = field(default_factory=list)
    """LM backbones the wikirl and lamo suites compare besides ChibiT (``--lm`` adds more)"""
    ablation_envs: list[str] = field(default_factory=list)
    """environments where wikirl also runs its two ablations: Wiki-RL's recipe on an untrained backbone of ChibiT's
    architecture, and DT with a timestep table initialised at Wiki-RL's scale (N(0, 0.02) instead of N(0, 1))"""


HOPPER = ["Hopper-v4"]
MEDIUM = ["Hopper-v4", "HalfCheetah-v4", "Walker2d-v4"]
SCALES = {
    "tiny": Scale(
        envs=HOPPER,
        seeds=[0],
        dataset_steps=2000,
        dt_steps=6,
        dt_batch_size=8,
        evals=2,
        eval_episodes=2,
        lm_steps=5,
        lm_max_chars=100_000,
        calql_steps=10,
        wsrl_warmup=50,
        wsrl_steps=120,
        num_critics=2,
        checkpoints=2,
        wsrl_min_buffer=60,  # so that the few online steps of the tiny scale do update
        ablation_envs=HOPPER,
    ),
    "small": Scale(
        envs=HOPPER,
        seeds=[0, 1],
        dataset_steps=50_000,
        dt_steps=800,
        dt_batch_size=32,
        evals=4,
        eval_episodes=5,
        lm_steps=None,
        lm_max_chars=2_000_000,
        calql_steps=1000,
        wsrl_warmup=1000,
        wsrl_steps=3000,
        num_critics=2,
    ),
    "cpu": Scale(
        envs=MEDIUM,
        seeds=[0, 1, 2],
        dataset_steps=1_000_000,
        dt_steps=10_000,
        dt_batch_size=32,
        evals=10,
        eval_episodes=10,
        lm_steps=None,
        lm_max_chars=5_000_000,
        calql_steps=30_000,
        wsrl_warmup=2000,
        wsrl_steps=20_000,
        num_critics=2,
        wsrl_idle_steps=False,  # only the trained networks step (stated deviation) ...
        wsrl_idle_ablation=True,  # ... and WSRL once more with the official idle steps
        envs_lamo_wsrl=HOPPER,
        lamo_lm_seq_len=128,  # LM co-training on 2 x 1,024 tokens would make a LaMo step ~8x a DT step
        ablation_envs=["HalfCheetah-v4"],  # where Wiki-RL and DT differ at this budget
    ),
    "gpu": Scale(
        envs=MEDIUM,
        seeds=[0, 1, 2, 3, 4],
        dataset_steps=1_000_000,
        dt_steps=100_000,
        dt_batch_size=64,
        evals=10,
        eval_episodes=10,
        lm_steps=None,
        lm_max_chars=50_000_000,
        calql_steps=250_000,
        wsrl_warmup=5000,
        wsrl_steps=300_000,
        num_critics=10,
        lms=["smollm2"],
        ablation_envs=MEDIUM,
    ),
}


@dataclass
class ReproduceConfig:
    """Options of ``pyseqrl reproduce``."""

    suite: Literal["wikirl", "lamo", "wsrl"] = "wikirl"
    """which comparison to run"""
    scale: Literal["tiny", "small", "cpu", "gpu"] = "small"
    """budget preset (see SCALES; cpu: each suite in about 3 hours on 2 cores, resumable)"""
    status: bool = False
    """print where every run of the sweep stands (finished / at step N of M / not started / failed) and exit"""
    report: bool = False
    """write results.md, results.json and the plots from the runs finished so far, without running anything"""
    envs: list[str] | None = None
    """environments (None: the scale's; Hopper-v4, HalfCheetah-v4, Walker2d-v4, ...)"""
    seeds: list[int] | None = None
    """seeds; every method runs with each (None: the scale's)"""
    policy: list[str] = field(default_factory=list)
    """behaviour policy spec per environment (same order as envs); none given: the built-in one, else a short SAC run"""
    lm: list[str] = field(default_factory=list)
    """[wikirl, lamo] more LM backbones to compare ('smollm2', local Hugging Face directories or hub names; the gpu
    scale compares smollm2 already)"""
    ablation_envs: list[str] | None = None
    """[wikirl] environments where two ablations also run: Wiki-RL's recipe on an untrained backbone of ChibiT's
    architecture (separates the pretrained weights from the rest of the recipe) and DT with its timestep table
    initialised at N(0, 0.02) (None: the scale's; cpu: HalfCheetah-v4)"""
    lm_text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Wikipedia text for ChibiT pretraining and LM co-training"""
    ratios: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    """[lamo] data ratios"""
    num_critics: int | None = None
    """[wsrl] critics in the ensemble of the pretraining and SAC (None: the scale's)"""
    pretrain: Literal["cql", "calql"] = "cql"
    """[wsrl] offline pretraining: CQL (the official locomotion runs: Monte-Carlo returns are hard to estimate
    there) or Cal-QL (the official runs on the other domains)"""
    out: str = "runs/reproduce"
    """output directory (the sweep goes to <out>/<suite>-<scale>)"""
    only: list[str] = field(default_factory=list)
    """run only the runs whose names match one of these shell patterns (e.g. '*/lamo-1-s*'), and the runs they
    need; the table still lists every run of the suite"""
    keep: str | None = None
    """a directory that keeps a record of every finished run (its options and results, a few kB, no checkpoint) in
    <keep>/<suite>-<scale>/, e.g. under version control; finished runs recorded there are restored, not rerun"""
    workers: int = 0
    """runs at a time (0: one per CPU core)"""
    retries: int = 2
    """starts of a failed run after its first (the first resumes from its checkpoint, the second starts over)"""
    threads: int = 1
    """torch CPU threads of each run"""


# ------------------------------------------------------------------------------------------------ jobs (one per run)
def dt_job(run_dir: Path, dataset: str, **kwargs: Any) -> dict[str, Any]:
    """One Decision Transformer run (``ex.train_dt`` arguments); returns its evaluation curve."""
    recipe, steps = kwargs.pop("recipe"), kwargs.pop("steps")
    ex.train_dt(recipe, Path(dataset), run_dir, steps, resume=True, progress=False, **kwargs)
    steps, scores = ex.curve(run_dir, "eval/score_")
    return {"steps": steps.tolist(), "scores": scores.tolist(), "dataset_sha256": ex.dataset_fingerprint(dataset)}


def calql_job(
    run_dir: Path,
    dataset: str,
    steps: int,
    seed: int,
    num_critics: int,
    checkpoint_every: int,
    env_id: str | None = None,
    eval_episodes: int = 0,
    calql: bool = True,
    eval_every: int = 0,
) -> dict:
    """Offline pretraining of the WSRL suite (Cal-QL, or CQL with ``calql=False``); with ``env_id`` and
    ``eval_episodes``, also the D4RL score of the pretrained policy, deterministic (``score``) and sampling its
    actions as the online episodes do (``sampled_score``): the level the online phase starts from. With
    ``eval_every``, the evaluation curve of the pretraining (``steps``, ``scores``)."""
    ex.train_calql(
        Path(dataset),
        run_dir,
        steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
        progress=False,
        calql=calql,
        num_critics=num_critics,
        **({"eval_every": eval_every, "eval_episodes": eval_episodes} if eval_every else {}),
    )
    result: dict[str, Any] = {"dataset_sha256": ex.dataset_fingerprint(dataset)}
    if eval_every:
        curve_steps, scores = ex.curve(run_dir, "eval/normalized_score")
        result.update(steps=curve_steps.tolist(), scores=scores.tolist())
    if env_id and eval_episodes:
        for name, deterministic in (("", True), ("sampled_", False)):
            result[f"{name}score"] = _evaluate_sac(run_dir, env_id, eval_episodes, seed, deterministic)
    return result


def _evaluate_sac(run_dir: Path, env_id: str, episodes: int, seed: int, deterministic: bool = True) -> float:
    """D4RL score of the actor in ``run_dir``'s checkpoint over ``episodes`` episodes (seeds apart from training)."""
    from pyseqrl.evaluation import evaluate
    from pyseqrl.policies import load_policy

    policy = load_policy(f"sac:{run_dir / 'checkpoint.pt'}", deterministic=deterministic)
    return float(evaluate(policy, env_id, episodes=episodes, seed=10_000 + seed).normalized_score)


def wsrl_job(
    run_dir: Path, pretrained: str | None, eval_episodes: int, idle_steps: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """One online run (``ex.train_wsrl`` arguments) after the pretraining run ``pretrained`` (a sibling directory): the
    final policy's score, every online episode after the first update (its return, as a D4RL score, and the step
    at which it ended) and the policy's Q-values. ``idle_steps`` is named in a run's arguments only when it is on
    (a spec without it is a run without idle steps, so that every recorded run keeps its meaning)."""
    from pyseqrl.scores import normalized_score, reference_scores

    ckpt = run_dir.parent / pretrained / "checkpoint.pt" if pretrained else Path()
    dataset = Path(kwargs.pop("dataset"))
    env_id = kwargs["env_id"]
    log_episodes = kwargs["total_steps"]
    r = ex.train_wsrl(
        ckpt, run_dir, dataset=dataset, progress=False, log_episodes=log_episodes, idle_steps=idle_steps, **kwargs
    )
    final = _evaluate_sac(run_dir, env_id, eval_episodes, kwargs["seed"])
    ep_steps, after_switch = ex.curve(run_dir, "switch/episode_return")  # the online episodes after the switch
    q_steps, q_pi = ex.curve(run_dir, "actor/q_pi")  # Q of the policy's actions on the training batches
    return {
        "final": final,
        "first_online_return": float(after_switch[:10].mean()) if len(after_switch) else None,
        "online_scores": [ep_steps.tolist(), normalized_score(after_switch, *reference_scores(env_id)).tolist()],
        "episode_returns": r["episode_returns"],
        "q_pi": [q_steps.tolist(), q_pi.tolist()],
        "dataset_sha256": ex.dataset_fingerprint(dataset),
    }


def q_dip(result: dict[str, Any]) -> tuple[float, float, float] | None:
    """(Q at the first update, lowest Q after it, Q at the end) of a WSRL-suite run's ``actor/q_pi`` curve:
    the dip of the Q-values after the switch to online learning, and where they ended."""
    q = np.asarray(result.get("q_pi", ([], []))[1], dtype=float)
    if not len(q):
        return None
    return float(q[0]), float(q.min()), float(q[-1])


def _moving_mean(y: np.ndarray, window: int) -> np.ndarray:
    """``out[i]``: the mean of ``y[i : i + window]`` (``len(y) - window + 1`` values)."""
    return np.convolve(y, np.ones(window) / window, mode="valid")


def return_dip(
    result: dict[str, Any], reference: float | None, total_steps: int, first: int = 10, window: int = 5
) -> dict[str, float]:
    """What a WSRL-suite run's online episodes (``online_scores``: end steps and D4RL scores, after the first
    update) show around the switch: the mean and the worst of the ``first`` episodes (the dip), the first of them
    and the mean of the others, the mean and the number of the episodes that ended in the last 10% of the run (the
    return after its online steps), and the first step at which the mean of ``window`` consecutive episodes reached
    ``reference`` (the pretrained policy's score with sampled actions: the recovery; NaN if never, or without a
    reference)."""
    steps, scores = (np.asarray(v, dtype=float) for v in result.get("online_scores", ([], [])))
    nan = math.nan
    if not len(scores):
        keys = ("first", "worst_first", "end", "recovered_at", "first_episode", "next_episodes", "end_episodes")
        return dict.fromkeys(keys, nan)
    late = scores[steps >= 0.9 * total_steps]
    recovered_at = nan
    if reference is not None and len(scores) >= window:
        means = _moving_mean(scores, window)
        hit = np.flatnonzero(means >= reference)
        recovered_at = float(steps[hit[0] + window - 1]) if len(hit) else nan
    return {
        "first": float(scores[:first].mean()),
        "worst_first": float(scores[:first].min()),
        "end": float(late.mean()) if len(late) else nan,
        "recovered_at": recovered_at,
        "first_episode": float(scores[0]),
        "next_episodes": float(scores[1:first].mean()) if len(scores) > 1 else nan,
        "end_episodes": float(len(late)),
    }


# ------------------------------------------------------------------------------------------------ plans
@dataclass
class Plan:
    """The runs of a suite and how to read them into a table."""

    runs: list[sw.Run]
    cells: dict[tuple, list[str]]
    """(env, method[, ratio]) -> the run names behind that row, one per seed"""
    datasets: dict[str, Path]
    """environment (or ``env/ratio``) -> dataset path"""
    reference: dict[str, str] = field(default_factory=dict)
    """[wsrl] online run -> the pretraining run of its seed (the level it starts from, or for SAC from scratch the
    level to reach)"""


def _every(steps: int, times: int) -> int:
    return max(1, math.ceil(steps / max(1, times)))


def _datasets(cfg: ReproduceConfig, s: Scale, envs: list[str], build: bool) -> dict[str, Path]:
    """The suite's datasets: built (cached per machine) when ``build``, else only their cache paths."""
    paths = {}
    for i, env_id in enumerate(envs):
        policy = cfg.policy[i] if i < len(cfg.policy) else None
        if build:
            policy = ex.behaviour_policy(env_id, policy, sac_steps=max(2000, s.dataset_steps // 10))
            paths[env_id] = ex.cached_dataset(env_id, policy, s.dataset_steps, seed=1000)
        else:
            paths[env_id] = ex.dataset_path(env_id, policy or f"builtin:{env_id}", s.dataset_steps, seed=1000)
    return paths


def _chibit(cfg: ReproduceConfig, s: Scale, out: Path, build: bool) -> str:
    """The converged, cached ChibiT; at the tiny scale a short run of ``s.lm_steps`` steps."""
    if not build:
        return "chibit"
    if s.lm_steps is None:
        return str(ex.chibit(cfg.lm_text)[0])
    return str(ex.chibit(cfg.lm_text, s.lm_steps, out=out / "chibit", max_chars=s.lm_max_chars)[0])


def dt_run(
    name: str,
    recipe: str,
    dataset: str | Path,
    backbone: str | None,
    seed: int,
    steps: int,
    evals: int,
    eval_episodes: int,
    lm_text: list[str],
    lm_max_chars: int,
    batch_size: int,
    **options: Any,
) -> sw.Run:
    """The sweep run of one Decision Transformer (:func:`dt_job`): ``evals`` evaluations spread over ``steps``;
    ``options`` are further ``ex.train_dt`` arguments.

    Raises:
        ValueError: ``steps``, ``evals``, ``eval_episodes`` or ``batch_size`` is not an integer >= 1.
    """
    budgets = {"steps": steps, "evals": evals, "eval_episodes": eval_episodes, "batch_size": batch_size}
    for what, value in budgets.items():
        checks.integer(f"run {name!r}: {what}", value, 1)
    args = {
        "recipe": recipe,
        "dataset": str(dataset),
        "steps": steps,
        "seed": seed,
        "backbone": backbone,
        "eval_every": _every(steps, evals),
        "eval_episodes": eval_episodes,
        "lm_text": list(lm_text),
        "lm_max_chars": lm_max_chars,
        "batch_size": batch_size,
        **options,
    }
    return sw.Run(name, "pyseqrl.reproduce:dt_job", args, steps=steps)


def _dt_run(
    name: str,
    cfg: ReproduceConfig,
    s: Scale,
    data: Path,
    recipe: str,
    backbone: str | None,
    seed: int,
    extra: dict[str, Any] | None = None,
) -> sw.Run:
    options: dict[str, Any] = {"checkpoint_every": _every(s.dt_steps, s.checkpoints)}
    if recipe == "lamo" and s.lamo_lm_seq_len:
        options["lm_seq_len"] = s.lamo_lm_seq_len
    options.update(extra or {})  # a method's own options (only when it has some: the other runs keep their specs)
    common = {"evals": s.evals, "eval_episodes": s.eval_episodes, "batch_size": s.dt_batch_size}
    lm = {"lm_text": cfg.lm_text, "lm_max_chars": s.lm_max_chars}
    return dt_run(name, recipe, data, backbone, seed, s.dt_steps, **common, **lm, **options)


def _more_lms(cfg: ReproduceConfig, s: Scale) -> list[str]:
    """The scale's extra backbones, then ``--lm``'s, each once."""
    return list(dict.fromkeys([*s.lms, *cfg.lm]))


def plan_wikirl(cfg: ReproduceConfig, s: Scale, out: Path, build: bool) -> Plan:
    envs, seeds = cfg.envs or s.envs, cfg.seeds if cfg.seeds is not None else s.seeds
    datasets = _datasets(cfg, s, envs, build)
    lm_dir = _chibit(cfg, s, out, build)
    ablate = set(cfg.ablation_envs if cfg.ablation_envs is not None else s.ablation_envs)
    # method -> (recipe, backbone, run-name tag, its own options, ablation only)
    methods: dict[str, tuple[str, str | None, str, dict[str, Any], bool]] = {
        "DT (random init)": ("dt", None, "random", {}, False),
        "Wiki-RL (ChibiT)": ("wiki", lm_dir, "chibit", {}, False),
    }
    methods.update(
        {f"Wiki-RL ({Path(lm).name or lm})": ("wiki", lm, Path(lm).name, {}, False) for lm in _more_lms(cfg, s)}
    )
    methods[UNTRAINED] = ("wiki", lm_dir, "untrained-chibit", {"backbone_weights": "untrained"}, True)
    methods[SMALL_TIMESTEPS] = ("dt", None, "random-ts0.02", {"timestep_init_std": 0.02}, True)
    runs, cells = [], {}
    for env_id, data in datasets.items():
        for method, (recipe, backbone, tag, extra, ablation) in methods.items():
            if ablation and env_id not in ablate:
                continue
            names = [f"{env_id}/{recipe}-{tag}-s{seed}" for seed in seeds]
            runs += [_dt_run(n, cfg, s, data, recipe, backbone, seed, extra) for n, seed in zip(names, seeds)]
            cells[(env_id, method)] = names
    return Plan(runs, cells, datasets)


UNTRAINED = "Wiki-RL recipe, untrained ChibiT architecture"
"""Ablation: everything of Wiki-RL (ChibiT) but the pretrained weights."""
SMALL_TIMESTEPS = "DT (random init), timestep table N(0, 0.02)"
"""Ablation: DT with only its timestep table's initial scale changed to that of the table Wiki-RL copies from its LM."""


def plan_lamo(cfg: ReproduceConfig, s: Scale, out: Path, build: bool) -> Plan:
    envs, seeds = cfg.envs or s.envs_lamo_wsrl or s.envs, cfg.seeds if cfg.seeds is not None else s.seeds
    full = _datasets(cfg, s, envs, build)
    lm_dir = _chibit(cfg, s, out, build)
    methods = {"DT": ("dt", None, ""), "LaMo": ("lamo", lm_dir, "")}
    methods.update({f"LaMo ({Path(lm).name or lm})": ("lamo", lm, f"{Path(lm).name}-") for lm in _more_lms(cfg, s)})
    runs, cells, datasets = [], {}, dict(full)
    for env_id, data in full.items():
        for ratio in cfg.ratios:
            sub = ex.cached_subset(data, ratio) if build else ex.subset_path(data, ratio)
            datasets[f"{env_id}/{ratio:g}"] = sub
            for method, (recipe, backbone, tag) in methods.items():
                names = [f"{env_id}/{recipe}-{tag}{ratio:g}-s{seed}" for seed in seeds]
                runs += [_dt_run(n, cfg, s, sub, recipe, backbone, seed) for n, seed in zip(names, seeds)]
                cells[(env_id, f"{ratio:g}", method)] = names
    return Plan(runs, cells, datasets)


WSRL_MODES = {
    "WSRL": "wsrl",
    "no warmup": "no_warmup",
    "keep offline data (appended)": "keep_offline_append",
    "keep offline data (50/50)": "keep_offline_mixed",
    "SAC from scratch": "scratch",
}


IDLE_ON = "WSRL, idle optimizer steps (official update)"
"""Ablation of a scale without idle steps: WSRL with them (``WSRLConfig.idle_steps``)."""
IDLE_OFF = "WSRL, only trained networks step"
"""Ablation of a scale with idle steps: WSRL without them."""


def plan_wsrl(cfg: ReproduceConfig, s: Scale, out: Path, build: bool) -> Plan:
    envs, seeds = cfg.envs or s.envs_lamo_wsrl or s.envs, cfg.seeds if cfg.seeds is not None else s.seeds
    datasets = _datasets(cfg, s, envs, build)
    critics = cfg.num_critics or s.num_critics
    methods = {method: (mode, s.wsrl_idle_steps, mode) for method, mode in WSRL_MODES.items()}
    if s.wsrl_idle_ablation:  # (mode, idle steps, run name)
        methods[IDLE_OFF if s.wsrl_idle_steps else IDLE_ON] = (
            "wsrl",
            not s.wsrl_idle_steps,
            "wsrl-noidle" if s.wsrl_idle_steps else "wsrl-idle",
        )
    runs, cells, reference = [], {}, {}
    for env_id, data in datasets.items():
        for seed in seeds:
            args = {"dataset": str(data), "steps": s.calql_steps, "seed": seed, "num_critics": critics}
            args["checkpoint_every"] = _every(s.calql_steps, s.checkpoints)
            args.update(env_id=env_id, eval_episodes=s.eval_episodes)  # the pretrained policy's score
            args.update(calql=cfg.pretrain == "calql", eval_every=_every(s.calql_steps, s.evals))
            name = f"{env_id}/{cfg.pretrain}-s{seed}"
            runs.append(sw.Run(name, "pyseqrl.reproduce:calql_job", args, steps=s.calql_steps))
        for method, (mode, idle, tag) in methods.items():
            names = []
            for seed in seeds:
                pretrained = None if mode == "scratch" else f"{cfg.pretrain}-s{seed}"
                args = {
                    "pretrained": pretrained,
                    "mode": mode,
                    "env_id": env_id,
                    "dataset": str(data),
                    "total_steps": s.wsrl_steps,
                    "warmup_steps": s.wsrl_warmup if mode in ("wsrl", "scratch") else 0,  # scratch: random actions
                    "seed": seed,
                    "min_buffer": s.wsrl_min_buffer,
                    "eval_episodes": s.eval_episodes,
                    "checkpoint_every": _every(s.wsrl_steps, max(1, s.checkpoints // 2)),  # each cuts the episodes
                    "log_every": _every(s.wsrl_steps, 100),  # Q-values around the switch
                }
                if mode == "scratch":
                    args["num_critics"] = critics
                if idle:
                    args["idle_steps"] = True
                name = f"{env_id}/{tag}-s{seed}"
                reference[name] = f"{env_id}/{cfg.pretrain}-s{seed}"
                after = (reference[name],) if pretrained else ()
                runs.append(sw.Run(name, "pyseqrl.reproduce:wsrl_job", args, steps=s.wsrl_steps, after=after))
                names.append(name)
            cells[(env_id, method)] = names
    return Plan(runs, cells, datasets, reference)


PLANS = {"wikirl": plan_wikirl, "lamo": plan_lamo, "wsrl": plan_wsrl}
SUITES = tuple(PLANS)


# ------------------------------------------------------------------------------------------------ tables
def _seeds_cell(states: list[sw.RunState]) -> str:
    """``3/3``, or ``2/3 (s2 failed)``: how many seeds a row's numbers stand on, and what happened to the others."""
    done = sum(st.state == "finished" for st in states)
    missing = [f"{st.name.rsplit('-', 1)[-1]} {st.state}" for st in states if st.state != "finished"]
    return f"{done}/{len(states)}" + (f" ({', '.join(missing)})" if missing else "")


def _dt_curves(states: list[sw.RunState]) -> list[tuple[list[float], list[float]] | None]:
    return [(st.result["steps"], st.result["scores"]) if st.result else None for st in states]


def report_dt(suite: str, plan: Plan, states: dict[str, sw.RunState], out: Path) -> tuple[str, dict]:
    """The table of a DT suite (wikirl, lamo): final, best, steps to 90% of final and to the dataset's average."""
    headers = ["env", "method", "seeds", "final score", "last 3 evaluations", "best evaluation"]
    headers += ["steps to 90% of final"]
    headers += ["steps to the dataset's average (seeds)"]
    if suite == "lamo":
        headers.insert(1, "data ratio")
        headers.insert(3, "steps in dataset")
    rows, results, plots = [], {}, {}
    for key, names in plan.cells.items():
        env_id = key[0]
        data = plan.datasets[env_id if suite == "wikirl" else f"{env_id}/{key[1]}"]
        row_states = [states[n] for n in names]
        curves = _dt_curves(row_states)
        threshold = ex.dataset_score(data) if data.exists() else None
        summary = sw.curve_summary(curves, threshold)
        to90 = sw.summarize([ex.steps_to_fraction(np.asarray(c[0]), np.asarray(c[1])) for c in curves if c])
        level = "n/a" if threshold is None else f"{threshold:.1f}"
        reached = f"{summary['to_threshold']:.0f} ({summary['reached']}/{len(names)} reached {level})"
        row = [env_id, key[-1], _seeds_cell(row_states), summary["final"], summary["last"], summary["best"]]
        row.append(f"{to90:.0f}")  # (steps: whole numbers)
        row.append(reached)
        if suite == "lamo":
            from pyseqrl.data import load

            row.insert(1, key[1])
            row.insert(3, len(load(data)) if data.exists() else "n/a")
        rows.append(row)
        results["/".join(key)] = {**summary, "steps_to_90": to90, "threshold": threshold, "curves": curves}
        plots.setdefault(env_id, {})[" ".join(key[1:])] = [tuple(map(np.asarray, c)) for c in curves if c]
    for env_id, curves in plots.items():
        ex.plot_curves(curves, out / f"{suite}_{env_id}.png", f"{suite}: {env_id}", "gradient step", "D4RL score")
    return ex.markdown_table(headers, rows), results


def _episodes_on_grid(curves: list, window: int = 5, points: int = 100) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeds' episode curves (end steps, scores), each smoothed over ``window`` episodes, interpolated onto the
    steps that all of them cover (episodes end at different steps in each seed; a seed band needs one x axis)."""
    smooth = []
    for c in curves:
        if c is None or len(c[1]) < window:
            continue
        x, y = np.asarray(c[0], dtype=float), np.asarray(c[1], dtype=float)
        smooth.append((x[window - 1 :], _moving_mean(y, window)))
    if not smooth:
        return []
    lo, hi = max(x[0] for x, _ in smooth), min(x[-1] for x, _ in smooth)
    grid = np.linspace(lo, hi, points) if hi > lo else np.asarray([lo])
    return [(grid, np.interp(grid, x, y)) for x, y in smooth]


def _pretraining_of(st: sw.RunState, reference: sw.RunState, others: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The result of the pretraining run an online run started from: ``reference``'s, or one of ``others`` (other
    results of the same pretraining run, kept from other machines), the one trained on the same dataset sample as
    the online run; None when none of them was (the pretraining that run started from is not on record)."""
    fingerprint = (st.result or {}).get("dataset_sha256")
    for result in [reference.result or {}, *others]:
        if fingerprint is None or result.get("dataset_sha256") in (None, fingerprint):
            return result
    return None


def report_wsrl(
    plan: Plan, states: dict[str, sw.RunState], out: Path, others: dict[str, list[dict]] | None = None
) -> tuple[str, dict]:
    """The WSRL table, about the switch to online learning: the pretrained (CQL / Cal-QL) policy's score, the online
    episodes' scores after the first update (the first ten, their worst, those at the end of the run, and the step at
    which they reached the pretrained policy's level), the policy's Q-values at the first update, at their lowest
    after it and at the end, and the final policy's score; score and Q curves with seed bands. ``others``:
    pretraining run -> its other recorded results (:func:`_pretraining_of` pairs each online run with its own)."""
    headers = ["env", "method", "seeds", "pretrained policy", "first 10 online episodes", "worst of them"]
    headers += ["online episodes, last 10% of steps", "step when 5 episodes average the pretrained level (seeds)"]
    headers += ["Q(s, π(s)) at the first update", "lowest Q after it", "Q at the end", "final score"]
    rows, per_run, results, plots, q_plots, unpaired = [], [], {}, {}, {}, []
    by_name = {r.name: r for r in plan.runs}
    for (env_id, method), names in plan.cells.items():
        row_states = [states[n] for n in names]
        dips, pretrained, res = [], [], []
        for st in row_states:
            if not st.result:
                continue
            ref = plan.reference[st.name]
            run, calql = by_name[st.name], _pretraining_of(st, states[ref], (others or {}).get(ref, []))
            if calql is None:
                unpaired.append(st.name)
                calql = {}
            dip = return_dip(st.result, calql.get("sampled_score"), run.steps)
            dips.append(dip)
            pretrained.append(calql.get("score") if run.after else None)  # SAC from scratch starts from nothing
            res.append(st.result)
            start = f"{calql['score']:.1f} / {calql.get('sampled_score', math.nan):.1f}" if run.after and calql else "-"
            recovered = "n/a" if math.isnan(dip["recovered_at"]) else f"{dip['recovered_at']:.0f}"
            per_run.append(
                [env_id, method, str(run.args["seed"]), start, f"{dip['first_episode']:.1f}"]
                + [f"{dip['next_episodes']:.1f}", f"{dip['worst_first']:.1f}"]
                + [f"{dip['end']:.1f} ({dip['end_episodes']:.0f})", recovered]
                + [f"{st.result['final']:.1f}"]
            )
        cell = {k: sw.summarize([d[k] for d in dips]) for k in ("first", "worst_first", "end", "recovered_at")}
        reached = sum(not math.isnan(d["recovered_at"]) for d in dips)
        cell["pretrained"] = sw.summarize(pretrained)
        cell["final"] = sw.summarize([r["final"] for r in res])
        qs = [d for d in map(q_dip, res) if d is not None]
        cell["q_first_update"], cell["q_lowest"], cell["q_end"] = (sw.summarize([d[i] for d in qs]) for i in range(3))
        rows.append(
            [env_id, method, _seeds_cell(row_states), cell["pretrained"], cell["first"], cell["worst_first"]]
            + [cell["end"], f"{cell['recovered_at']:.0f} ({reached}/{len(names)})"]
            + [cell["q_first_update"], cell["q_lowest"], cell["q_end"], cell["final"]]
        )
        results[f"{env_id}/{method}"] = {**cell, "recovered": reached, "runs": res}
        plots.setdefault(env_id, {})[method] = _episodes_on_grid([r.get("online_scores") for r in res])
        q_plots.setdefault(env_id, {})[method] = [tuple(map(np.asarray, r["q_pi"])) for r in res if r.get("q_pi")]
    for env_id, curves in plots.items():
        title = f"Online episodes after the first update, {env_id}"
        ex.plot_curves(curves, out / f"wsrl_{env_id}.png", title, "environment step", "D4RL score")
    for env_id, curves in q_plots.items():
        title = f"Q(s, π(s)) during online fine-tuning, {env_id}"
        ex.plot_curves(curves, out / f"wsrl_q_{env_id}.png", title, "environment step", "Q")
    pretraining: dict[str, dict[str, list]] = {}
    for run in plan.runs:
        result = states[run.name].result or {}
        if run.job.endswith(":calql_job") and result.get("steps"):
            method = "Cal-QL" if run.args["calql"] else "CQL"
            curve = (np.asarray(result["steps"]), np.asarray(result["scores"]))
            pretraining.setdefault(run.args["env_id"], {}).setdefault(method, []).append(curve)
    for env_id, curves in pretraining.items():
        title = f"Offline pretraining (deterministic policy), {env_id}"
        ex.plot_curves(curves, out / f"wsrl_pretrain_{env_id}.png", title, "gradient step", "D4RL score")
    run_headers = ["env", "method", "seed", "pretrained policy (deterministic / sampled)", "first online episode"]
    run_headers += ["next 9 episodes", "worst of the first 10", "online episodes, last 10% of steps (count)"]
    run_headers += ["step when 5 episodes average the pretrained level", "final score"]
    text = ex.markdown_table(headers, rows)
    if per_run:  # seeds whose pretrained policies differ (one good, one collapsed) make a mean hide the switch
        text += "\n\nOne row per run:\n\n" + ex.markdown_table(run_headers, per_run)
    if unpaired:
        text += (
            f"\n\nThe pretraining runs that {unpaired} started from are not on record (those on record trained on"
            " another sample of the dataset): their pretrained level is missing from the table."
        )
    return text, results


# ------------------------------------------------------------------------------------------------ entry points
def sweep_dir(cfg: ReproduceConfig) -> Path:
    return Path(cfg.out) / f"{cfg.suite}-{cfg.scale}"


def status(cfg: ReproduceConfig) -> str:
    """Where every run of the sweep stands (reads the run directories; builds and runs nothing)."""
    s = SCALES[cfg.scale]
    plan = PLANS[cfg.suite](cfg, s, sweep_dir(cfg), False)
    return f"pyseqrl reproduce {cfg.suite} --scale {cfg.scale}: {sweep_dir(cfg)}\n" + sw.status_table(
        sweep_dir(cfg), plan.runs
    )


def keep_dir(cfg: ReproduceConfig) -> Path | None:
    """Where ``--keep`` records this suite's runs (None without ``--keep``).

    Raises:
        ValueError: ``--keep`` names something that is not a directory.
    """
    if not cfg.keep:
        return None
    if Path(cfg.keep).exists() and not Path(cfg.keep).is_dir():
        raise ValueError(f"--keep must be a directory, got {cfg.keep!r}, which is a file")
    return Path(cfg.keep) / f"{cfg.suite}-{cfg.scale}"


def select(runs: list[sw.Run], patterns: list[str]) -> list[sw.Run]:
    """The runs whose names match one of the shell ``patterns`` (all of them when there is none), and every run
    they wait for.

    Raises:
        ValueError: a pattern matches no run (the message lists the runs' names).
    """
    from fnmatch import fnmatchcase

    if not patterns:
        return list(runs)
    for pattern in patterns:
        if not any(fnmatchcase(r.name, pattern) for r in runs):
            raise ValueError(f"--only {pattern!r} matches none of the suite's runs: {[r.name for r in runs]}")
    by_name = {r.name: r for r in runs}
    wanted = {r.name for r in runs if any(fnmatchcase(r.name, p) for p in patterns)}
    todo = list(wanted)
    while todo:
        for dep in by_name[todo.pop()].after:
            if dep not in wanted:
                wanted.add(dep)
                todo.append(dep)
    return [r for r in runs if r.name in wanted]


def _sources(cfg: ReproduceConfig, out: Path) -> list[Path]:
    """Where the finished runs this sweep shares can be: its sibling sweeps under --out and --keep's record."""
    keep = keep_dir(cfg)
    return [p for p in Path(cfg.out).iterdir() if p.is_dir() and p != out] + ([keep] if keep else [])


def _adopt(cfg: ReproduceConfig, plan: Plan, out: Path) -> None:
    """Copy in the finished runs this sweep shares with its sibling sweeps and with --keep's record."""
    for name, src in sw.adopt(out, plan.runs, _sources(cfg, out)):
        print(f"{name}: the same run finished in {src}; copied, not rerun")


def run(cfg: ReproduceConfig) -> dict:
    """Build the datasets, run every unfinished run, then write the table; returns what results.json holds."""
    s, keep = SCALES[cfg.scale], keep_dir(cfg)
    out = sweep_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = PLANS[cfg.suite](cfg, s, out, True)  # datasets and ChibiT are built here, before the runs fan out
    todo = select(plan.runs, cfg.only)
    _adopt(cfg, plan, out)
    ran = sw.run_sweep(out, todo, cfg.workers, cfg.retries, cfg.threads, keep=keep)
    states = {r.name: ran[r.name] if r.name in ran else sw.inspect(out, r) for r in plan.runs}
    return write_report(cfg, plan, states, time.perf_counter() - t0)


def report(cfg: ReproduceConfig) -> dict:
    """``--report``: the table, results.json and plots of the runs finished so far (with ``--keep``, also those
    recorded there); runs nothing."""
    out = sweep_dir(cfg)
    if not out.is_dir() and keep_dir(cfg) is None:
        raise ValueError(f"{out}: no sweep there yet (run `pyseqrl reproduce {cfg.suite} --scale {cfg.scale}`)")
    out.mkdir(parents=True, exist_ok=True)
    plan = PLANS[cfg.suite](cfg, SCALES[cfg.scale], out, False)
    _adopt(cfg, plan, out)
    states = {run.name: sw.inspect(out, run) for run in plan.runs}
    # a recorded pretraining run is not copied in while runs that start from its checkpoint are unfinished (they
    # would rerun it); its result still belongs in the table
    by_name = {run.name: run for run in plan.runs}
    for name, src in sw.find_finished(out, plan.runs, _sources(cfg, out)).items():
        states[name] = sw.inspect_dir(src, by_name[name])
    keep = keep_dir(cfg)
    if keep is not None:
        for run in plan.runs:
            sw.keep_record(out, run, keep)
    return write_report(cfg, plan, states, None)


DT_LEGEND = (
    "Scores: D4RL-normalised; final = last evaluation, last 3 = mean of each run's last three evaluations, "
    "best = best of the evaluations of each run.\n"
)
WSRL_LEGEND = (
    "Scores: D4RL-normalised. Pretrained policy: the CQL (or Cal-QL) policy, deterministic, before any online step. "
    "Online episodes: the training episodes after the first update (actions sampled), the recovery step compared "
    "with the pretrained policy evaluated with sampled actions. Q: the critics' mean Q(s, π(s)) on the training "
    "batches. Final score: the final policy, deterministic.\n"
)


def _other_results(cfg: ReproduceConfig, plan: Plan, out: Path) -> dict[str, list[dict]]:
    """[wsrl] pretraining run -> its finished results in the sweep's sources (sibling sweeps, --keep's record,
    and the results kept beside a record), for :func:`_pretraining_of`."""
    found: dict[str, list[dict]] = {}
    for run in plan.runs:
        if run.name not in plan.reference.values():
            continue
        for src in _sources(cfg, out):
            for d in sw.finished_results(src, run):
                result = sw.inspect_dir(d, run).result
                if result:
                    found.setdefault(run.name, []).append(result)
    return found


def dataset_samples(plan: Plan, states: dict[str, sw.RunState]) -> str:
    """A line naming the dataset sample (``dataset_sha256``) behind the finished runs of each dataset; where runs
    of one dataset trained on different samples (datasets rebuilt on different machines), the runs of each."""
    by_dataset: dict[str, dict[str, list[str]]] = {}
    for run in plan.runs:
        st = states.get(run.name)
        fingerprint = (st.result or {}).get("dataset_sha256") if st is not None else None
        if fingerprint is not None and "dataset" in run.args:
            by_dataset.setdefault(Path(run.args["dataset"]).name, {}).setdefault(fingerprint, []).append(run.name)
    if not by_dataset:
        return ""
    parts = []
    for name, samples in by_dataset.items():  # the sample most runs used, then the others with their runs
        (main, most), *rest = sorted(samples.items(), key=lambda kv: -len(kv[1]))
        parts.append(f"{name}: {main} ({len(most)} runs)" + "".join(f", {fp} ({', '.join(r)})" for fp, r in rest))
    note = "" if all(len(v) == 1 for v in by_dataset.values()) else " (runs of one dataset, different samples)"
    return f"Dataset samples{note}: " + "; ".join(parts) + ".\n"


def write_report(cfg: ReproduceConfig, plan: Plan, states: dict[str, sw.RunState], seconds: float | None) -> dict:
    """Write ``results.md``, ``results.json`` and the plots of a suite into its sweep directory; ``seconds``: how
    long this call ran the sweep (None: a ``--report`` that ran nothing)."""
    s, out = SCALES[cfg.scale], sweep_dir(cfg)
    if cfg.suite == "wsrl":
        table, results = report_wsrl(plan, states, out, _other_results(cfg, plan, out))
    else:
        table, results = report_dt(cfg.suite, plan, states, out)
    failed = [st for st in states.values() if st.state != "finished"]
    scores = {k: round(ex.dataset_score(p), 1) for k, p in plan.datasets.items() if "/" not in k and p.exists()}
    text = (
        f"# pyseqrl reproduce {cfg.suite} (scale {cfg.scale})\n\n{table}\n\n"
        f"Seeds {cfg.seeds if cfg.seeds is not None else s.seeds}; budgets {asdict(s)}.\n"
        f"Datasets' average D4RL score (the behaviour policy's level): {scores}.\n"
        + (WSRL_LEGEND if cfg.suite == "wsrl" else DT_LEGEND)
        + "Mean ± std (population) over the seeds that finished.\n"
        + dataset_samples(plan, states)
        + (
            "Report of the runs finished so far (`--report`); nothing was run.\n"
            if seconds is None
            else f"This call: {seconds / 60:.1f} min.\n"
        )
    )
    if failed:
        text += "\nUnfinished runs (rerun the command to continue or retry them):\n\n" + "\n".join(
            f"- {st.name}: {st.describe()}" for st in failed
        )
        text += "\n"
    (out / "results.md").write_text(text)
    record = {"config": asdict(cfg), "scale": asdict(s), "seconds": seconds, "results": sw.as_json(results)}
    record["runs"] = {n: {"state": st.state, "error": st.error} for n, st in states.items()}
    (out / "results.json").write_text(json.dumps(record, indent=2, default=float))
    print("\n" + text)
    return record


def main(argv: list[str] | None = None) -> int:
    import tyro

    if argv and argv[0] in PLANS:  # `pyseqrl reproduce wikirl --scale cpu`
        argv = ["--suite", argv[0], *argv[1:]]
    cfg = tyro.cli(ReproduceConfig, args=argv, prog="pyseqrl reproduce", description=__doc__)
    if cfg.status:
        print(status(cfg))
        return 0
    if cfg.report:
        report(cfg)
        return 0
    try:
        record = run(cfg)
    except KeyboardInterrupt:
        print(f"\nstopped; run the same command again to continue ({sweep_dir(cfg)})")
        return 130
    return 0 if all(v["state"] == "finished" for v in record["runs"].values()) else 1
