"""Tiny Decision Transformer training step on one GPU: host batching vs GPU batching, SDPA vs pyseqrl attention,
eager vs CUDA graph; then a long graphed training run.

The model is the DT paper's (hidden 128, 3 layers, 1 head -> head dim 128, K = 20, batch 64, dropout 0.1) on a
hopper-sized dataset (synthetic unless --dataset names a file pyseqrl.data.load reads). A step is everything:
batch, forward, backward, gradient clipping, learning-rate warmup and AdamW. Times are CUDA-event medians.

Targets on one H100: full step <= 1 ms; 100k steps <= 3 min.

    python bench/bench_gpu_dt.py                       # the step table + a 100k-step graphed run
    python bench/bench_gpu_dt.py --run-steps 0         # the step table only
    python bench/bench_gpu_dt.py --dataset ../shared/data/d4rl/hopper-medium-v2.hdf5 --out bench/results/gpu_dt.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, table

import pyseqrl
from pyseqrl.data import EpisodeDataset, torch_batches
from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
from pyseqrl.ops import _cuda
from pyseqrl.ops.gpu_sampler import GPUSegmentSampler
from pyseqrl.ops.graphed_step import TrainStep, dt_action_loss, make_capturable_adamw, use_pyseqrl_attention


def synthetic_dataset(steps: int, S: int = 11, A: int = 3, seed: int = 0) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < steps:
        lengths.append(int(rng.integers(50, 1001)))
    lengths[-1] -= sum(lengths) - steps
    terminals = np.zeros(steps, bool)
    terminals[np.cumsum(lengths) - 1] = True
    return EpisodeDataset.from_arrays(
        observations=rng.normal(size=(steps, S)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(steps, A)).astype(np.float32),
        rewards=rng.uniform(0, 3, size=steps).astype(np.float32),
        terminals=terminals,
        timeouts=np.zeros(steps, bool),
    )


def cuda_time_per_step(step: Callable[[], object], steps: int, repeat: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / steps)
    return statistics.median(times)


def build(ds: EpisodeDataset, args: argparse.Namespace, fused: bool, seed: int = 0):
    torch.manual_seed(seed)
    cfg = DTConfig(
        state_dim=ds.observation_dim,
        act_dim=ds.action_dim,
        context_len=args.context_len,
        hidden_size=128,
        n_layer=3,
        n_head=1,
        dropout=0.1,
        max_ep_len=1000,
    )
    model = DecisionTransformer(cfg).cuda().train()
    if fused:
        use_pyseqrl_attention(model)
    return model


def host_batching_step(ds: EpisodeDataset, args: argparse.Namespace) -> Callable[[], object]:
    """The usual loop (pyseqrl.algos.dt style): native CPU sampler, pinned copies, SDPA, eager AdamW."""
    mean, std = ds.state_stats()
    sampler = pyseqrl.SegmentSampler(
        ds, context_len=args.context_len, batch_size=args.batch_size, seed=0, state_mean=mean, state_std=std
    )
    batches = torch_batches(sampler, device="cuda")
    model = build(ds, args, fused=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10_000))

    def step() -> None:
        batch = next(batches)
        opt.zero_grad(set_to_none=True)
        dt_action_loss(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        sched.step()

    return step


def device_step(ds: EpisodeDataset, args: argparse.Namespace, fused: bool, graphed: bool) -> TrainStep:
    mean, std = ds.state_stats()
    sampler = GPUSegmentSampler(
        ds,
        context_len=args.context_len,
        batch_size=args.batch_size,
        seed=0,
        state_mean=mean,
        state_std=std,
        device="cuda",
    )
    model = build(ds, args, fused=fused)
    step = TrainStep(
        lambda b: dt_action_loss(model, b),
        list(model.parameters()),
        make_capturable_adamw(model, lr=1e-4, weight_decay=1e-4),
        sampler,
        grad_clip=0.25,
        warmup_steps=10_000,
    )
    if graphed:
        step.capture()
    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=None, help="a dataset file (default: synthetic 1M steps)")
    parser.add_argument("--steps", type=int, default=1_000_000, help="size of the synthetic dataset")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--context-len", type=int, default=20)
    parser.add_argument("--time-steps", type=int, default=200, help="steps per CUDA-event timing")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--run-steps", type=int, default=100_000, help="length of the graphed training run (0: skip)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    if not _cuda.cuda_kernels_available():
        print("bench_gpu_dt: needs a CUDA GPU and pyseqrl built with its kernels (PYSEQRL_CUDA=ON)")
        return 1

    ds = pyseqrl.data.load(args.dataset) if args.dataset else synthetic_dataset(args.steps)
    header = [
        machine_header(),
        f"device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); pyseqrl {pyseqrl.__version__}",
        (
            f"tiny DT: hidden 128, 3 layers, 1 head, K={args.context_len}, B={args.batch_size}, dropout 0.1; dataset "
            f"{args.dataset or 'synthetic'} ({len(ds)} steps, {ds.num_episodes} episodes, S={ds.observation_dim}, "
            f"A={ds.action_dim})"
        ),
    ]
    print("\n".join(header), flush=True)

    variants: list[tuple[str, Callable[[], Callable[[], object]]]] = [
        ("host batching, SDPA, eager (baseline)", lambda: host_batching_step(ds, args)),
        ("GPU batching, SDPA, eager", lambda: device_step(ds, args, fused=False, graphed=False)),
        ("GPU batching, pyseqrl attention, eager", lambda: device_step(ds, args, fused=True, graphed=False)),
        ("GPU batching, SDPA, CUDA graph", lambda: device_step(ds, args, fused=False, graphed=True)),
        (
            "GPU batching, pyseqrl attention, CUDA graph",
            lambda: device_step(ds, args, fused=True, graphed=True),
        ),
    ]
    rows, base = [], None
    for name, make in variants:
        try:
            t = cuda_time_per_step(make(), args.time_steps, args.repeat)
        except Exception as e:  # noqa: BLE001 - report and continue: one failing variant should not hide the others
            rows.append([name, f"failed: {type(e).__name__}: {e}"[:80], ""])
            print(rows[-1], flush=True)
            continue
        base = base or t
        rows.append([name, f"{t * 1e3:.3f}", f"{base / t:.2f}x"])
        print(rows[-1], flush=True)
    report = [
        table(["training step (batching included)", "ms / step", "vs baseline"], rows),
        "target: <= 1 ms per step on one H100",
    ]

    if args.run_steps > 0:
        step = device_step(ds, args, fused=True, graphed=True)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        losses = []
        start.record()
        for i in range(args.run_steps):
            loss = step()
            if (i + 1) % 10_000 == 0:
                losses.append(loss.clone())
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1e3
        trace = ", ".join(f"{float(v):.4f}" for v in losses)
        report.append(
            f"\n{args.run_steps} graphed steps (pyseqrl attention): {seconds:.1f} s "
            f"({seconds / args.run_steps * 1e3:.3f} ms/step; target <= 180 s for 100k)\n"
            f"action loss every 10k steps: {trace}"
        )
    text = "\n".join(report)
    print("\n" + text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(header) + "\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
