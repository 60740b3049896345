"""Benchmarks of the native data core against named baselines, measured in the same run.

    python bench/bench_data.py [--steps 1000000] [--quick]

1. returns_to_go on 1M steps vs DT's per-step Python loop and a vectorised numpy version.
2. SegmentSampler at B in {64, 256, 1024}, K=20, S=17, A=6 on 1M steps vs DT's per-sample get_batch loop, a
   vectorised numpy batcher, and torchrl's SliceSampler (which gathers slices but neither pads, masks,
   normalises nor computes returns-to-go: it does less work than the others).
3. ReplayBuffer at capacity 1M: add of 16, sample of 256/1024, vs cpprb, torchrl (LazyTensorStorage) and a numpy
   ring buffer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_time, machine_header, table, time_call, time_interleaved  # noqa: E402

import pyseqrl  # noqa: E402
from pyseqrl.data import EpisodeDataset  # noqa: E402
from pyseqrl.data.reference import (  # noqa: E402
    NumpyReplayBuffer,
    dt_get_batch,
    returns_to_go_loop,
    returns_to_go_numpy,
    segment_batch_numpy,
)

S, A, K = 17, 6, 20


def make_dataset(steps: int, seed: int = 0) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(100, 1001, size=steps // 300)
    lengths = lengths[np.cumsum(lengths) <= steps]
    lengths = np.append(lengths, steps - lengths.sum()) if steps > lengths.sum() else lengths
    ends = np.cumsum(lengths)
    terminals = np.zeros(steps, bool)
    terminals[ends - 1] = True
    return EpisodeDataset.from_arrays(
        observations=rng.normal(size=(steps, S)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, A)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        terminals=terminals,
    )


def bench_returns(ds: EpisodeDataset, quick: bool) -> str:
    r, ends = ds.rewards, ds.episode_ends
    rows = []
    for gamma in (1.0, 0.99):
        native = time_call(lambda: pyseqrl.returns_to_go(r, ends, gamma), repeat=20)
        native_1t = time_call(lambda: pyseqrl._native.core.returns_to_go(r, ends, gamma, False), repeat=20)
        vec = time_call(lambda: returns_to_go_numpy(r, ends, gamma), repeat=5)
        loop = time_call(lambda: returns_to_go_loop(r, ends, gamma), repeat=1, warmup=0) if not quick else float("nan")
        rows.append(
            [
                gamma,
                fmt_time(native),
                fmt_time(native_1t),
                fmt_time(vec),
                fmt_time(loop),
                f"{vec / native:.1f}x",
                f"{loop / native:.0f}x",
            ]
        )
    return table(
        [
            "gamma",
            "pyseqrl",
            "pyseqrl 1 thread",
            "numpy (per-episode cumsum/lfilter)",
            "DT Python loop",
            "vs numpy",
            "vs loop",
        ],
        rows,
    )


def torchrl_slice_sampler(ds: EpisodeDataset, B: int):
    try:
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
    except ImportError:
        return None
    n = len(ds)
    storage = LazyTensorStorage(n)
    rb = TensorDictReplayBuffer(
        storage=storage, sampler=SliceSampler(slice_len=K, traj_key="episode", strict_length=False), batch_size=B * K
    )
    td = TensorDict(
        {
            "observation": torch.from_numpy(ds.observations),
            "action": torch.from_numpy(ds.actions),
            "reward": torch.from_numpy(ds.rewards),
            "episode": torch.from_numpy(ds.episode_index()),
        },
        batch_size=[n],
    )
    rb.extend(td)
    return rb.sample


def loop_wait(sample, work_s: float = 1e-3, steps: int = 200) -> float:
    """Median time a training loop waits in ``sample()`` when it computes for ``work_s`` between calls."""
    a = np.random.default_rng(0).normal(size=(96, 96))
    waits = []
    for _ in range(steps):
        t0 = time.perf_counter()
        sample()
        waits.append(time.perf_counter() - t0)
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < work_s:  # busy work on this core, like a training step
            a = np.tanh(a @ a * 1e-2)
    return float(np.median(waits[10:]))


def bench_sampler(ds: EpisodeDataset, quick: bool) -> str:
    mean, std = ds.state_stats()
    rtg = ds.returns_to_go()
    rows = []
    for B in (64, 256, 1024):
        s0 = pyseqrl.SegmentSampler(ds, context_len=K, batch_size=B, seed=0, state_mean=mean, state_std=std, prefetch=0)
        s2 = pyseqrl.SegmentSampler(ds, context_len=K, batch_size=B, seed=0, state_mean=mean, state_std=std, prefetch=2)
        rng = np.random.default_rng(0)

        def draws():  # the same draw distribution as the native sampler: length-proportional, uniform start
            step = rng.integers(0, len(ds), B)
            eps = np.searchsorted(ds.episode_ends, step, side="right")
            return eps, (rng.random(B) * ds.episode_lengths()[eps]).astype(np.int64)

        def numpy_batch():
            e, st = draws()
            return segment_batch_numpy(
                ds.observations, ds.actions, ds.rewards, rtg, ds.episode_ends, e, st, K, mean, std, 1000.0
            )

        def loop_batch():
            e, st = draws()
            return dt_get_batch(ds.observations, ds.actions, ds.rewards, ds.episode_ends, e, st, K, mean, std, 1000.0)

        # the native sampler and its main baseline alternate, so that both see the same load
        t_native, t_numpy = time_interleaved([s0.sample, numpy_batch], numbers=[5, 1], repeat=50)
        t_prefetch = loop_wait(s2.sample)
        t_loop = time_call(loop_batch, repeat=3 if not quick else 1, warmup=1)
        trl = torchrl_slice_sampler(ds, B) if not quick else None
        t_trl = time_call(trl, repeat=10) if trl is not None else float("nan")
        rows.append(
            [
                B,
                fmt_time(t_native),
                fmt_time(t_prefetch),
                fmt_time(t_numpy),
                fmt_time(t_loop),
                fmt_time(t_trl),
                f"{t_numpy / t_native:.1f}x",
                f"{t_loop / t_native:.0f}x",
                f"{t_trl / t_native:.1f}x",
            ]
        )
    return table(
        [
            "B",
            "pyseqrl (no prefetch)",
            "pyseqrl prefetch: loop waits",
            "numpy vectorised",
            "DT Python loop",
            "torchrl SliceSampler",
            "vs numpy",
            "vs loop",
            "vs torchrl",
        ],
        rows,
    ) + (
        "\n\nRatios compare the synchronous fill (no prefetch) with each baseline; it is timed in alternation with the "
        "numpy batcher. 'loop waits': median time a loop "
        "that computes for 1 ms between batches spends in sample() with 2 batches prefetched in the background."
    )


def bench_replay(quick: bool) -> str:
    cap = 1_000_000
    rng = np.random.default_rng(0)
    fill = 200_000
    obs = rng.normal(size=(fill, S)).astype(np.float32)
    act = rng.normal(size=(fill, A)).astype(np.float32)
    rew = rng.normal(size=fill).astype(np.float32)
    term = np.zeros(fill, np.float32)
    small = (obs[:16], act[:16], rew[:16], obs[:16], term[:16])

    impls = {}
    rb = pyseqrl.ReplayBuffer(cap, (S,), (A,), seed=0)
    rb.add(obs, act, rew, obs, term)
    impls["pyseqrl"] = (lambda: rb.add(*small), lambda b: rb.sample(b))
    nb = NumpyReplayBuffer(cap, S, A)
    nb.add(obs, act, rew, obs, term)
    impls["numpy ring"] = (lambda: nb.add(*small), lambda b: nb.sample(b))
    try:
        import cpprb

        cb = cpprb.ReplayBuffer(
            cap, env_dict={"obs": {"shape": S}, "act": {"shape": A}, "rew": {}, "next_obs": {"shape": S}, "done": {}}
        )
        cb.add(obs=obs, act=act, rew=rew, next_obs=obs, done=term)
        impls["cpprb"] = (
            lambda: cb.add(obs=small[0], act=small[1], rew=small[2], next_obs=small[3], done=small[4]),
            lambda b: cb.sample(b),
        )
    except ImportError:
        pass
    try:
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage
        from torchrl.data import ReplayBuffer as TorchRLBuffer

        tb = TorchRLBuffer(storage=LazyTensorStorage(cap))

        def td(o, a, r, n, t):
            return TensorDict(
                {
                    "obs": torch.from_numpy(o),
                    "act": torch.from_numpy(a),
                    "rew": torch.from_numpy(r),
                    "next_obs": torch.from_numpy(n),
                    "done": torch.from_numpy(t),
                },
                batch_size=[len(r)],
            )

        tb.extend(td(obs, act, rew, obs, term))
        small_td = td(*small)
        impls["torchrl"] = (lambda: tb.extend(small_td), lambda b: tb.sample(b))
    except ImportError:
        pass

    results = {}
    for name, (add, sample) in impls.items():
        results[name] = (
            time_call(add, repeat=30, number=50),
            time_call(lambda: sample(256), repeat=30, number=20),
            time_call(lambda: sample(1024), repeat=30, number=10),
        )
    base = results["pyseqrl"]
    rows = [
        [
            name,
            fmt_time(a),
            fmt_time(s1),
            fmt_time(s2),
            f"{a / base[0]:.1f}x",
            f"{s1 / base[1]:.1f}x",
            f"{s2 / base[2]:.1f}x",
        ]
        for name, (a, s1, s2) in results.items()
    ]
    return table(
        ["buffer", "add 16", "sample 256", "sample 1024", "pyseqrl speed-up add", "sample 256", "sample 1024"], rows
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="skip the slowest baselines (smoke run)")
    args = p.parse_args()
    print(machine_header())
    ds = make_dataset(args.steps)
    print(f"dataset: {len(ds)} steps, {ds.num_episodes} episodes, S={S}, A={A}, K={K}\n")
    print("## returns_to_go\n" + bench_returns(ds, args.quick) + "\n")
    print("## SegmentSampler\n" + bench_sampler(ds, args.quick) + "\n")
    print("## ReplayBuffer (capacity 1M)\n" + bench_replay(args.quick))


if __name__ == "__main__":
    main()
