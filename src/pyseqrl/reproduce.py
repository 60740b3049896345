"""``pyseqrl reproduce <suite>``: the papers' comparisons, at a scale that fits the machine.

Suites (each writes ``<out>/<suite>/results.md``, ``results.json`` and PNG plots):

* ``wikirl`` -- Reid et al. 2022: DT from random init vs Wiki-RL from ChibiT (and from any local Hugging Face
  LM given with ``--lm``) on medium datasets. Reports the final score and the steps to reach 90% of it (the
  paper's convergence measure).
* ``lamo`` -- Shi et al. 2023: DT vs LaMo on 1%, 10% and 100% of a medium dataset's trajectories (by count).
* ``wsrl`` -- Zhou et al. 2024: Cal-QL pretraining, then WSRL vs no warmup vs keeping the offline data (50/50
  batches) vs SAC from scratch, with the return curve around the offline-to-online switch.

Protocol, at every scale: D4RL-normalised scores of the **last** evaluation (not the best), mean ± std over
seeds, evaluation episodes and budgets as in the scale preset (printed into the report). Datasets are
D4RL-style medium sets collected with EnvPool from ``--policy`` (default: pyseqrl's built-in policy for the
environment, else the RL-Zoo agent named in ``MEDIUM_POLICIES`` from ../shared, else a short SAC run) with
Gaussian action noise 0.1.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pyseqrl import experiments as ex

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "policies"
#: RL-Zoo agents of ../shared closest to D4RL's "medium" level in the v4 environments (see its MANIFEST.md)
MEDIUM_POLICIES = {
    "Hopper-v4": "sb3:" + str(SHARED / "a2c_Hopper-v3.zip"),  # D4RL score ~21-29 in v4
    "HalfCheetah-v4": "sb3:" + str(SHARED / "ppo_HalfCheetah-v3.zip"),  # ~50
    "Walker2d-v4": "sb3:" + str(SHARED / "ars_Walker2d-v3.zip"),  # ~35-37
}


@dataclass
class Scale:
    """Budgets of a scale preset."""

    dataset_steps: int
    dt_steps: int
    dt_batch_size: int
    evals: int
    eval_episodes: int
    lm_steps: int | None  # None: the ChibiT pretrained to convergence, once per machine (cached)
    lm_max_chars: int
    calql_steps: int
    wsrl_warmup: int
    wsrl_steps: int
    wsrl_min_buffer: int | None = None  # None: official first update after a UTD round of online data (1,024)


SCALES = {
    # seconds: what the tests run
    "tiny": Scale(
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
        wsrl_min_buffer=60,  # so that the few online steps of the tiny scale do update
    ),
    # 10-30 minutes per suite and seed on 2 CPU cores: what docs/RESULTS.md reports from the development VM
    "small": Scale(
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
    ),
    # hours per suite on 2 CPU cores
    "cpu": Scale(
        dataset_steps=100_000,
        dt_steps=2000,
        dt_batch_size=32,
        evals=5,
        eval_episodes=5,
        lm_steps=None,
        lm_max_chars=5_000_000,
        calql_steps=5000,
        wsrl_warmup=2000,
        wsrl_steps=20_000,
    ),
    # the papers' budgets, for a GPU
    "gpu": Scale(
        dataset_steps=1_000_000,
        dt_steps=100_000,
        dt_batch_size=64,
        evals=10,
        eval_episodes=10,
        lm_steps=None,
        lm_max_chars=50_000_000,
        calql_steps=1_000_000,
        wsrl_warmup=5000,
        wsrl_steps=300_000,
    ),
}


@dataclass
class ReproduceConfig:
    """Options of ``pyseqrl reproduce``."""

    suite: Literal["wikirl", "lamo", "wsrl"] = "wikirl"
    """which comparison to run"""
    scale: Literal["tiny", "small", "cpu", "gpu"] = "small"
    """budget preset (see SCALES)"""
    envs: list[str] = field(default_factory=lambda: ["Hopper-v4"])
    """environments (Hopper-v4, HalfCheetah-v4, Walker2d-v4, ...)"""
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """seeds; every method runs with each"""
    policy: list[str] = field(default_factory=list)
    """behaviour policy spec per environment (same order as envs); default: built-in, else MEDIUM_POLICIES"""
    lm: list[str] = field(default_factory=list)
    """[wikirl] more LM backbones to compare (local Hugging Face GPT-2-family directories or hub names)"""
    lm_text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Wikipedia text for ChibiT pretraining and LM co-training"""
    ratios: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    """[lamo] data ratios"""
    num_critics: int = 10
    """[wsrl] critics in the ensemble of Cal-QL and SAC (WSRL uses 10; fewer are much cheaper on a CPU)"""
    out: str = "runs/reproduce"
    """output directory"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""


def _policy_for(cfg: ReproduceConfig, s: Scale, i: int, env_id: str, out: Path) -> str:
    """--policy, else the built-in policy, else the RL-Zoo agent of ../shared, else a short SAC run."""
    from pyseqrl.policies import builtin_policies

    if i < len(cfg.policy):
        return cfg.policy[i]
    if env_id not in builtin_policies() and env_id in MEDIUM_POLICIES and SHARED.is_dir():
        return MEDIUM_POLICIES[env_id]
    return ex.behaviour_policy(env_id, sac_steps=max(2000, s.dataset_steps), run_dir=out / f"sac-{env_id}")


def _datasets(cfg: ReproduceConfig, s: Scale, out: Path) -> dict[str, Path]:
    paths = {}
    for i, env_id in enumerate(cfg.envs):
        path = out / "datasets" / f"{env_id}-medium-{s.dataset_steps}.hdf5"
        path.parent.mkdir(parents=True, exist_ok=True)
        ex.build_dataset(env_id, _policy_for(cfg, s, i, env_id, out), s.dataset_steps, path, seed=1000)
        paths[env_id] = path
    return paths


def _dt_run(
    recipe: str, data: Path, run_dir: Path, s: Scale, seed: int, backbone: str | None, lm_text: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    ex.train_dt(
        recipe,
        data,
        run_dir,
        s.dt_steps,
        seed=seed,
        backbone=backbone,
        eval_every=max(1, s.dt_steps // s.evals),
        eval_episodes=s.eval_episodes,
        lm_text=lm_text,
        lm_max_chars=s.lm_max_chars,
        batch_size=s.dt_batch_size,
        resume=True,
        progress=False,
    )
    return ex.curve(run_dir, "eval/score_")


def _chibit(cfg: ReproduceConfig, s: Scale, out: Path) -> tuple[Path, dict]:
    """The converged, cached ChibiT; at the tiny scale a short run of ``s.lm_steps`` steps."""
    if s.lm_steps is None:
        return ex.chibit(cfg.lm_text)
    return ex.chibit(cfg.lm_text, s.lm_steps, out=out / "chibit", max_chars=s.lm_max_chars)


def suite_wikirl(cfg: ReproduceConfig, s: Scale, out: Path) -> tuple[str, dict]:
    lm_dir, lm_summary = _chibit(cfg, s, out)
    methods = {"DT (random init)": ("dt", None), "Wiki-RL (ChibiT)": ("wiki", str(lm_dir))}
    methods.update({f"Wiki-RL ({Path(lm).name or lm})": ("wiki", lm) for lm in cfg.lm})
    rows, results = [], {"chibit": lm_summary}
    for env_id, data in _datasets(cfg, s, out).items():
        curves: dict[str, list] = {}
        for name, (recipe, backbone) in methods.items():
            runs = [
                _dt_run(
                    recipe,
                    data,
                    out / env_id / f"{recipe}-{Path(backbone or 'random').name}-s{seed}",
                    s,
                    seed,
                    backbone,
                    cfg.lm_text,
                )
                for seed in cfg.seeds
            ]
            curves[name] = runs
            finals = [float(v[-1]) for _, v in runs if len(v)]
            to90 = [ex.steps_to_fraction(x, v) for x, v in runs]
            rows.append([env_id, name, ex.mean_std(finals), ex.mean_std(to90)])
            results[f"{env_id}/{name}"] = {
                "final": finals,
                "steps_to_90": to90,
                "curves": [[x.tolist(), v.tolist()] for x, v in runs],
            }
        ex.plot_curves(
            curves, out / f"wikirl_{env_id}.png", f"Wiki-RL vs DT, {env_id}", "gradient step", "D4RL-normalised score"
        )
    table = ex.markdown_table(["env", "method", "final score (last eval)", "steps to 90% of final"], rows)
    return table, results


def suite_lamo(cfg: ReproduceConfig, s: Scale, out: Path) -> tuple[str, dict]:
    from pyseqrl.data import load

    lm_dir, lm_summary = _chibit(cfg, s, out)
    rows, results = [], {"chibit": lm_summary}
    for env_id, data in _datasets(cfg, s, out).items():
        full = load(data)
        for ratio in cfg.ratios:
            sub = out / "datasets" / f"{data.stem}-{ratio:g}.hdf5"
            if not sub.exists():  # LaMo's data ratios: a random fraction of the trajectories, by count
                (full if ratio >= 1.0 else full.subset_episodes(ratio, seed=0)).save(sub)
            for name, (recipe, backbone) in {"DT": ("dt", None), "LaMo": ("lamo", str(lm_dir))}.items():
                runs = [
                    _dt_run(recipe, sub, out / env_id / f"{recipe}-{ratio:g}-s{seed}", s, seed, backbone, cfg.lm_text)
                    for seed in cfg.seeds
                ]
                finals = [float(v[-1]) for _, v in runs if len(v)]
                rows.append([env_id, f"{ratio:g}", name, len(load(sub)), ex.mean_std(finals)])
                results[f"{env_id}/{ratio:g}/{name}"] = {"final": finals}
    table = ex.markdown_table(["env", "data ratio", "method", "steps in dataset", "final score (last eval)"], rows)
    return table, results


WSRL_MODES = {
    "WSRL": "wsrl",
    "no warmup": "no_warmup",
    "keep offline data (50/50)": "keep_offline_mixed",
    "SAC from scratch": "scratch",
}


def suite_wsrl(cfg: ReproduceConfig, s: Scale, out: Path) -> tuple[str, dict]:
    from pyseqrl.evaluation import evaluate
    from pyseqrl.policies import load_policy

    rows, results = [], {}
    for env_id, data in _datasets(cfg, s, out).items():
        curves: dict[str, list] = {}
        for name, mode in WSRL_MODES.items():
            finals, firsts, runs = [], [], []
            for seed in cfg.seeds:
                ckpt = ex.train_calql(
                    data, out / env_id / f"calql-s{seed}", s.calql_steps, seed=seed, num_critics=cfg.num_critics
                )
                run_dir = out / env_id / f"{mode}-s{seed}"
                warmup = s.wsrl_warmup if mode in ("wsrl", "scratch") else 0  # scratch: random-action warmup
                r = ex.train_wsrl(
                    ckpt,
                    run_dir,
                    mode,
                    env_id,
                    s.wsrl_steps,
                    warmup,
                    seed=seed,
                    dataset=data,
                    min_buffer=s.wsrl_min_buffer,
                    num_critics=cfg.num_critics,
                )
                score = evaluate(
                    load_policy(f"sac:{run_dir / 'checkpoint.pt'}"),
                    env_id,
                    episodes=s.eval_episodes,
                    seed=10_000 + seed,
                ).normalized_score
                finals.append(score)
                returns = np.asarray(r["episode_returns"])
                _, after_switch = ex.curve(run_dir, "switch/episode_return")  # the first online episodes
                firsts.append(float(after_switch.mean()) if len(after_switch) else float("nan"))
                runs.append((np.arange(len(returns)), returns))
            curves[name] = runs
            rows.append([env_id, name, ex.mean_std(firsts), ex.mean_std(finals)])
            results[f"{env_id}/{name}"] = {
                "final": finals,
                "first_online_returns": firsts,
                "episode_returns": [y.tolist() for _, y in runs],
            }
        ex.plot_curves(curves, out / f"wsrl_{env_id}.png", f"Online fine-tuning, {env_id}", "online episode", "return")
    table = ex.markdown_table(["env", "method", "return of the first online episodes", "final score (last eval)"], rows)
    return table, results


SUITES = {"wikirl": suite_wikirl, "lamo": suite_lamo, "wsrl": suite_wsrl}


def run(cfg: ReproduceConfig) -> dict:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    s = SCALES[cfg.scale]
    out = Path(cfg.out) / cfg.suite
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    table, results = SUITES[cfg.suite](cfg, s, out)
    seconds = time.perf_counter() - t0
    report = (
        f"# pyseqrl reproduce {cfg.suite} (scale {cfg.scale})\n\n{table}\n\n"
        f"Envs {cfg.envs}, seeds {cfg.seeds}; budgets {asdict(s)}; {seconds / 60:.1f} min.\n"
        "Scores: D4RL-normalised, last evaluation, mean ± std over seeds.\n"
    )
    (out / "results.md").write_text(report)
    (out / "results.json").write_text(
        json.dumps(
            {"config": asdict(cfg), "scale": asdict(s), "seconds": seconds, "results": results}, indent=2, default=float
        )
    )
    print("\n" + report)
    return results


def main(argv: list[str] | None = None) -> int:
    import tyro

    if argv and argv[0] in SUITES:  # `pyseqrl reproduce wikirl --scale cpu`
        argv = ["--suite", argv[0], *argv[1:]]
    run(tyro.cli(ReproduceConfig, args=argv, prog="pyseqrl reproduce"))
    return 0
