"""Online fine-tuning throughput: env steps/s of SAC at UTD 4 with a 10-critic ensemble, pyseqrl vs d3rlpy.

Both run one Hopper environment, 256x256 networks (LayerNorm in the critics), batch 256, 10 critics and 4
gradient updates per environment step, on the CPU with the same number of torch threads. Each system first
collects ``--warmup`` random steps (not timed), then ``--steps`` steps with updates are timed; the median over
``--repeats`` windows is reported. pyseqrl runs the body of its online loop (``pyseqrl.algos.sac``): one
``EnvRunner`` step, the replay buffer, then per transition one ``SACAgent.update`` round.

Systems:
  pyseqrl (like for like)  4 x (critic + actor + temperature) updates per step on d3rlpy's networks (plain MLP
                           actor, temperature on log pi(a|s)): the work of d3rlpy's n_updates=4
  pyseqrl (WSRL defaults)  4 critic updates, then 1 actor/temperature update on the 1,024 transitions of the
                           round, actor with LayerNorm, temperature on log pi(a'|s') (the official WSRL recipe)
  d3rlpy                   SAC(n_critics=10).fit_online(n_updates=4, update_interval=1)

Note: pyseqrl's TD target uses 2 random target critics (the WSRL/REDQ rule, part of the algorithm), d3rlpy's
all 10.

    python bench/bench_online_sac.py --steps 100 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch


def bench_pyseqrl(args: argparse.Namespace, like_for_like: bool) -> list[float]:
    from pyseqrl import ReplayBuffer
    from pyseqrl.algos.rl_agent import AgentConfig, SACAgent, SACPolicy
    from pyseqrl.algos.rl_online import make_runner, sample_batches
    from pyseqrl.policies import RandomPolicy

    torch.manual_seed(0)
    np.random.seed(0)
    runner = make_runner(args.env, 1, seed=0, backend="auto")
    env = runner.env
    cfg = AgentConfig(hidden_dims=(args.hidden,) * 2, num_critics=args.critics)
    if like_for_like:  # d3rlpy's SAC: no LayerNorm in the actor, temperature on the actor step's own log pi(a|s)
        cfg = AgentConfig(
            hidden_dims=(args.hidden,) * 2,
            num_critics=args.critics,
            actor_layer_norm=False,
            temperature_states="current",
        )
    actor_update = "every" if like_for_like else "all"
    agent = SACAgent(env.observation_dim, env.action_dim, cfg, env.action_low, env.action_high)
    rb = ReplayBuffer(100_000, obs_shape=(env.observation_dim,), action_shape=(env.action_dim,), seed=0)
    learner = SACPolicy(agent.actor, deterministic=False)

    def steps(policy, n: int, update: bool) -> None:  # the body of train_sac's loop
        for _ in range(n):
            t = runner.step(policy)
            if len(t):
                rb.add(t.observations, t.actions, t.rewards, t.next_observations, t.terminated)
            if update:
                for _ in range(len(t)):
                    agent.update(sample_batches(rb, args.batch, args.utd), actor_update)

    steps(RandomPolicy(env.action_low, env.action_high, seed=0), args.warmup, update=False)
    rates = []
    for _ in range(args.repeats + 1):  # the first window warms up the allocator and autograd caches
        t0 = time.perf_counter()
        steps(learner, args.steps, update=True)
        rates.append(args.steps / (time.perf_counter() - t0))
    env.close()
    return rates[1:]


def bench_d3rlpy(args: argparse.Namespace) -> list[float]:
    import logging

    import d3rlpy
    import gymnasium as gym
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    d3rlpy.seed(0)
    env = gym.make(args.env)
    # the same architecture as pyseqrl's: a plain MLP actor, critics with LayerNorm after each hidden layer
    actor_enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[args.hidden] * 2)
    critic_enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[args.hidden] * 2, use_layer_norm=True)
    sac = d3rlpy.algos.SACConfig(
        batch_size=args.batch,
        n_critics=args.critics,
        actor_encoder_factory=actor_enc,
        critic_encoder_factory=critic_enc,
    ).create(device="cpu:0")
    buffer = d3rlpy.dataset.create_fifo_replay_buffer(limit=100_000, env=env)
    stamps: dict[int, float] = {}

    def callback(algo, epoch: int, total_step: int) -> None:
        stamps[total_step] = time.perf_counter()

    total = args.warmup + (args.repeats + 1) * args.steps
    sac.fit_online(
        env,
        buffer,
        n_steps=total,
        n_steps_per_epoch=total,
        update_interval=1,
        n_updates=args.utd,
        update_start_step=args.warmup,
        random_steps=args.warmup,
        save_interval=10**9,
        experiment_name="bench_online_sac",
        with_timestamp=True,
        show_progress=False,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
        callback=callback,
    )
    steps = sorted(stamps)
    rates = []
    for r in range(1, args.repeats + 1):
        a = args.warmup + r * args.steps
        b = a + args.steps
        a_key = min(steps, key=lambda s: abs(s - a))
        b_key = min(steps, key=lambda s: abs(s - b))
        rates.append((b_key - a_key) / (stamps[b_key] - stamps[a_key]))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v4")
    p.add_argument("--steps", type=int, default=100, help="timed environment steps per window")
    p.add_argument("--repeats", type=int, default=3, help="timed windows (median reported)")
    p.add_argument("--warmup", type=int, default=300, help="random steps collected before timing")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--critics", type=int, default=10)
    p.add_argument("--utd", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--systems", default="pyseqrl_like,pyseqrl_wsrl,d3rlpy")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import d3rlpy

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}, d3rlpy {d3rlpy.__version__}"
    )
    print(
        f"sizes: {args.env}, hidden {args.hidden}x{args.hidden}, {args.critics} critics, batch {args.batch}, "
        f"UTD {args.utd}, {args.steps} steps x {args.repeats} windows"
    )
    results: dict[str, list[float]] = {}
    for name in args.systems.split(","):
        if name == "pyseqrl_like":
            results["pyseqrl (like for like: 4 full updates/step)"] = bench_pyseqrl(args, like_for_like=True)
        elif name == "pyseqrl_wsrl":
            results["pyseqrl (WSRL defaults: 4 critic + 1 actor on 1024)"] = bench_pyseqrl(args, like_for_like=False)
        elif name == "d3rlpy":
            results["d3rlpy SAC fit_online"] = bench_d3rlpy(args)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    base = statistics.median(results["d3rlpy SAC fit_online"]) if "d3rlpy SAC fit_online" in results else None
    print("\n| system | env steps/s (median) | min | max | vs d3rlpy |\n|---|---|---|---|---|")
    for name, rates in results.items():
        med = statistics.median(rates)
        ratio = f"{med / base:.2f}x" if base else "-"
        print(f"| {name} | {med:.1f} | {min(rates):.1f} | {max(rates):.1f} | {ratio} |")


if __name__ == "__main__":
    main()
