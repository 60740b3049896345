"""DT evaluation: KV-cached DTPolicy vs full recomputation of the context, per vectorised-env step.

Times only the policy (act + observe) on synthetic observations, so the environment's cost does not hide the
difference. Model 128 x 3 layers x 1 head, K = 20, episodes of --steps steps in --envs parallel environments.

    python bench/bench_dt_eval.py [--envs 16] [--steps 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from pyseqrl.models import DecisionTransformer, DTConfig, DTPolicy


def run(policy: DTPolicy, n: int, steps: int, S: int) -> float:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(steps, n, S)).astype(np.float32)
    rew = rng.normal(size=(steps, n)).astype(np.float32)
    policy.reset(np.arange(n))
    t0 = time.perf_counter()
    for t in range(steps):
        policy.act(obs[t])
        policy.observe(rew[t])
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    S, A, K = 11, 3, 20
    torch.manual_seed(0)
    model = DecisionTransformer(DTConfig(state_dim=S, act_dim=A, context_len=K)).eval()
    variants = {
        "full recompute (DT paper loop)": {"use_cache": False, "refresh_every": 1},
        "KV cache, exact window (refresh_every=1)": {"use_cache": True, "refresh_every": 1},
        "KV cache, refresh_every=K/2": {"use_cache": True, "refresh_every": K // 2},
        "KV cache, refresh_every=K": {"use_cache": True, "refresh_every": K},
    }
    print(
        f"# DT evaluation, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}; model 128x3x1, K={K}, envs={args.envs}, steps={args.steps}"
    )
    policies = {name: DTPolicy(model, 3600.0, 1000.0, **kw) for name, kw in variants.items()}
    for policy in policies.values():
        run(policy, args.envs, 30, S)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in policies}
    for _ in range(args.repeats):  # round robin, so a change of machine load hits every variant alike
        for name, policy in policies.items():
            times[name].append(run(policy, args.envs, args.steps, S))
    results = {name: statistics.median(v) for name, v in times.items()}
    base = results["full recompute (DT paper loop)"]
    print("| policy | ms / vector step | env-steps/s | speedup vs full |")
    print("|---|---|---|---|")
    for name, sec in results.items():
        print(f"| {name} | {sec * 1e3:.2f} | {args.envs / sec:,.0f} | {base / sec:.2f}x |")


if __name__ == "__main__":
    main()
