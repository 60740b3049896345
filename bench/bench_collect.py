"""Collection throughput: EnvPool vs gymnasium SyncVectorEnv / AsyncVectorEnv with a real MLP policy.

Each configuration runs :class:`pyseqrl.collect.EnvRunner` (policy inference + env step + dropping autoreset rows,
i.e. exactly what ``pyseqrl collect`` does) for a fixed number of vector steps after a warm-up, repeated; the table
reports the median environment steps per second (real transitions / s) and the ratio to each gymnasium baseline
measured in the same run.

Policy: the RL-Zoo SAC actor ``sac_<Env>-v3.zip`` from ../shared/data/policies when present (256x256 ReLU MLP),
otherwise a randomly initialised torch MLP of the same size.

    python bench/bench_collect.py                      # Hopper-v4, 8 and 16 envs
    python bench/bench_collect.py --env-id HalfCheetah-v4 --num-envs 4 8 16 --steps 500 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def make_policy(env_id: str, env):  # -> (Policy, description)
    import torch

    from pyseqrl.policies import Policy
    from pyseqrl.policies.sb3 import load_sb3

    zoo = SHARED / "data" / "policies" / f"sac_{env_id.split('-')[0]}-v3.zip"
    if zoo.exists():
        return load_sb3(zoo, env), f"SB3 zoo SAC actor ({zoo.name}, 256x256 MLP)"

    class MLPPolicy(Policy):
        name = "mlp"

        def __init__(self) -> None:
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(
                torch.nn.Linear(env.observation_dim, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, 256),
                torch.nn.ReLU(),
                torch.nn.Linear(256, env.action_dim),
                torch.nn.Tanh(),
            ).eval()

        def act(self, obs: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return self.net(torch.as_tensor(obs)).numpy()

    return MLPPolicy(), "random-init torch MLP 256x256 (../shared not found)"


def measure(
    env_id: str, backends: list[str], num_envs: int, steps: int, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Env steps/s of each backend; repeats are interleaved across backends so all see the same machine load."""
    from pyseqrl.collect import EnvRunner
    from pyseqrl.envs import make

    envs = {b: make(env_id, num_envs, seed=0, backend=b) for b in backends}
    try:
        runners = {b: EnvRunner(env) for b, env in envs.items()}
        policies = {b: make_policy(env_id, env)[0] for b, env in envs.items()}
        for b in backends:
            for _ in range(warmup):
                runners[b].step(policies[b])
        rates: dict[str, list[float]] = {b: [] for b in backends}
        for _ in range(repeats):
            for b in backends:
                runner, policy = runners[b], policies[b]
                before, t0 = runner.transitions, time.perf_counter()
                for _ in range(steps):
                    runner.step(policy)
                rates[b].append((runner.transitions - before) / (time.perf_counter() - t0))
    finally:
        for env in envs.values():
            env.close()
    return rates


def versions() -> str:
    import gymnasium
    import mujoco
    import torch

    try:
        import envpool

        ep = envpool.__version__
    except ImportError:
        ep = "missing"
    return (
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, envpool {ep}, "
        f"gymnasium {gymnasium.__version__}, mujoco {mujoco.__version__}"
    )


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env-id", default="Hopper-v4")
    ap.add_argument("--num-envs", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--steps", type=int, default=300, help="vector steps per repeat")
    ap.add_argument("--warmup", type=int, default=30, help="vector steps before timing")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", nargs="+", default=["envpool", "gymnasium", "gymnasium-async"])
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from pyseqrl.envs import make

    with make(args.env_id, 1, backend="gymnasium") as env:
        _, policy_desc = make_policy(args.env_id, env)
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}")
    print(f"versions: {versions()}")
    print(
        f"env {args.env_id}; policy: {policy_desc}; torch threads 1; {args.steps} vector steps x {args.repeats} "
        f"repeats after {args.warmup} warm-up steps; median env steps/s (real transitions, autoreset rows excluded)"
    )
    print()
    header = f"| num_envs | {' | '.join(f'{b} steps/s' for b in args.backends)} |"
    ratios = [b for b in args.backends if b != "envpool"] if "envpool" in args.backends else []
    header += "".join(f" envpool / {b} |" for b in ratios)
    print(header)
    print("|" + "---|" * (1 + len(args.backends) + len(ratios)))
    for n in args.num_envs:
        rates = measure(args.env_id, args.backends, n, args.steps, args.warmup, args.repeats)
        med = {b: statistics.median(r) for b, r in rates.items()}
        row = (
            f"| {n} | "
            + " | ".join(f"{med[b]:,.0f} ({min(rates[b]):,.0f}-{max(rates[b]):,.0f})" for b in args.backends)
            + " |"
        )
        row += "".join(f" {med['envpool'] / med[b]:.2f}x |" for b in ratios)
        print(row, flush=True)
    print()
    print("cells: median (min-max) over the repeats; ratios of medians")
    return 0


if __name__ == "__main__":
    sys.exit(main())
