"""``pyseqrl quickstart``: the whole pipeline at small scale, on a fresh machine, in minutes on 2 CPU cores.

1. a D4RL-style dataset from a built-in behaviour policy, collected with EnvPool;
2. a ChibiT-size LM pretrained on Wikipedia text (cached between runs);
3. Decision Transformers fine-tuned from random init (``dt``), from ChibiT (``wiki``) and with LaMo (``lamo``);
4. a short WSRL run: Cal-QL offline pretraining, warmup with the frozen policy, online SAC without offline data;
5. a results table (printed and written to ``<out>/results.md``) and learning-curve PNGs.

The budgets are tiny: the numbers show that every stage runs end to end, not what the methods reach (see
``pyseqrl reproduce`` and docs/RESULTS.md for that).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from pyseqrl import experiments as ex


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
    # about 6 minutes on 2 CPU cores once ChibiT is cached (measured: dataset 11 s, DTs 226 s, WSRL 124 s)
    "default": Budget(
        dataset_steps=50_000,
        lm_steps=None,
        lm_max_chars=2_000_000,
        dt_steps=500,
        dt_batch_size=32,
        dt_evals=2,
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
    env_id: str = "Hopper-v4"
    """environment (EnvPool MuJoCo)"""
    budget: Literal["default", "ci"] = "default"
    """size preset: default (~6 min on 2 cores) or ci (~1-2 min)"""
    policy: str | None = None
    """behaviour policy spec (default: pyseqrl's built-in policy for env_id, else a short SAC run)"""
    lm_text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Wikipedia text for ChibiT: 'ovos-wiki' (pip install 'pyseqrl[wiki]') or text files/directories"""
    seed: int = 0
    """seed of every stage"""
    threads: int = 0
    """torch CPU threads (0: torch's default)"""


def run(cfg: QuickstartConfig) -> dict:
    """Run every stage; returns the results written to ``<out>/results.json``."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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
    data_path = out / f"{cfg.env_id}-quickstart.hdf5"
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

    # 3. Decision Transformers -------------------------------------------------------------------------------
    dt_runs = {
        "DT (random init)": ("dt", None),
        "Wiki-RL (ChibiT)": ("wiki", str(lm_dir)),
        "LaMo (ChibiT)": ("lamo", str(lm_dir)),
    }
    dt_results = {}
    for i, (name, (recipe, backbone)) in enumerate(dt_runs.items()):
        print(f"=== 3/4 {name}: {b.dt_steps} steps ({i + 1}/{len(dt_runs)})")
        run_dir = out / recipe
        metrics = ex.train_dt(
            recipe,
            data_path,
            run_dir,
            b.dt_steps,
            seed=cfg.seed,
            backbone=backbone,
            eval_every=max(1, b.dt_steps // b.dt_evals),
            eval_episodes=b.eval_episodes,
            lm_text=cfg.lm_text,
            lm_max_chars=b.lm_max_chars,
            kmeans_clusters=64,
            batch_size=b.dt_batch_size,
            lm_batch_size=max(1, b.dt_batch_size // 4),
            lm_seq_len=64,
            resume=False,
            overwrite=True,
        )
        steps, values = ex.curve(run_dir, "eval/score_")
        dt_results[name] = {
            "recipe": recipe,
            "final_score": float(values[-1]) if len(values) else None,
            "curve": [steps.tolist(), values.tolist()],
            "train_loss": metrics.get("train/action_loss", metrics.get("train/loss")),
        }
    stage("decision transformers")

    # 4. WSRL ------------------------------------------------------------------------------------------------
    print(
        f"=== 4/4 WSRL: Cal-QL {b.calql_steps} steps, then {b.wsrl_warmup} warmup + "
        f"{b.wsrl_steps - b.wsrl_warmup} online steps without offline data"
    )
    # 2 critics instead of WSRL's 10 (the `pyseqrl train wsrl` default): with 10, Cal-QL runs ~1 step/s on 2 cores
    agent = dict(hidden_dims=(256, 256), num_critics=2)
    ckpt = ex.train_calql(data_path, out / "calql", b.calql_steps, seed=cfg.seed, **agent)
    wsrl = ex.train_wsrl(
        ckpt,
        out / "wsrl",
        "wsrl",
        cfg.env_id,
        b.wsrl_steps,
        b.wsrl_warmup,
        seed=cfg.seed,
        min_buffer=b.wsrl_min_buffer,
        **agent,
    )
    stage("wsrl")

    # results ------------------------------------------------------------------------------------------------
    returns = np.asarray(wsrl["episode_returns"])
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
        rows.append([name, f"{b.dt_steps} steps", f"D4RL score {score}", ""])
    rows.append(
        [
            "WSRL",
            f"Cal-QL {b.calql_steps} + online {b.wsrl_steps} steps",
            f"return of online episodes {ex.mean_std(returns.tolist())}",
            f"{timings['wsrl']:.0f} s",
        ]
    )
    table = ex.markdown_table(["stage", "budget", "result", "time"], rows)
    total = sum(timings.values())
    report = (
        f"# pyseqrl quickstart ({cfg.env_id}, budget {cfg.budget})\n\n{table}\n\n"
        f"Decision Transformer time: {timings['decision transformers']:.0f} s; total {total:.0f} s.\n"
        "Tiny budgets: these numbers show the pipeline runs, not what the methods reach.\n"
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
        "wsrl": {"episode_returns": wsrl["episode_returns"], "switch": wsrl["switch"]},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print("\n" + report + f"\nwrote {out}/results.md, results.json and learning-curve PNGs")
    return results


def main(argv: list[str] | None = None) -> int:
    import tyro

    run(tyro.cli(QuickstartConfig, args=argv, prog="pyseqrl quickstart"))
    return 0
