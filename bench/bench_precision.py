"""Do pyseqrl's speed-ups train DT as well as the plain path? Action loss after N steps, several seeds, one dataset.

``--compare precision`` (default): ``pyseqrl train dt`` (the DT baseline recipe, 128 x 3 layers) with
``--precision fp32`` and ``--precision bf16``. ``--compare dropout``: at the default precision, the backbone's
dropout masks drawn natively (pyseqrl.ops.dropout, the default) and by torch's own ``nn.Dropout``. Every variant of
a seed sees the same batches (the sampler's stream depends on the seed only). Reports the action loss averaged
over the last ``--tail`` logged steps, per seed and as mean ± std, with the steps/s of each run. bf16 needs a CPU
with AVX512-BF16 or AMX, or a GPU.

    python bench/bench_precision.py --dataset hopper-medium.h5 --steps 3000 --seeds 0 1 2 [--threads 1]
    python bench/bench_precision.py --compare dropout --dataset hopper-medium.h5 --steps 3000
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def final_loss(run_dir: Path, tail: int) -> float:
    with open(run_dir / "metrics.csv") as f:
        losses = [float(r["train/action_loss"]) for r in csv.DictReader(f) if r.get("train/action_loss")]
    return statistics.fmean(losses[-tail:])


def main() -> None:
    import pyseqrl.models.decision_transformer as dt_model
    from pyseqrl.algos.dt import TrainConfig, train
    from pyseqrl.utils.precision import bf16_supported

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tail", type=int, default=10, help="logged steps averaged at the end (logged every 50)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup-steps", type=int, default=None, help="default: the recipe's (10,000)")
    ap.add_argument("--compare", choices=["precision", "dropout"], default="precision")
    args = ap.parse_args()
    # variant -> (precision, native dropout masks)
    variants = {"fp32": ("fp32", True), "bf16": ("bf16", True)}
    if args.compare == "dropout":
        variants = {"torch dropout": ("auto", False), "native dropout": ("auto", True)}
    native_swap = dt_model.use_native_dropout
    if args.compare == "precision" and not bf16_supported(torch.device("cpu")):
        raise SystemExit("this CPU has no bf16 matmuls (AVX512-BF16 or AMX): nothing to compare")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
          f"threads {args.threads or torch.get_num_threads()}; dataset {args.dataset}; {args.steps} steps, "
          f"batch {args.batch_size}")  # fmt: skip
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for name, (precision, native) in variants.items():
                dt_model.use_native_dropout = native_swap if native else (lambda module: 0)
                run = Path(tmp) / f"{name.replace(' ', '-')}-{seed}"
                t0 = time.perf_counter()
                train(
                    TrainConfig(
                        dataset=args.dataset, run_dir=str(run), steps=args.steps, batch_size=args.batch_size,
                        seed=seed, precision=precision, eval_every=0, log_every=50, checkpoint_every=args.steps,
                        progress=False, tensorboard=False, export=False, threads=args.threads,
                        warmup_steps=args.warmup_steps,
                    )
                )  # fmt: skip
                rate = args.steps / (time.perf_counter() - t0)
                results[name].append((final_loss(run, args.tail), rate))
                print(f"seed {seed} {name}: action loss {results[name][-1][0]:.5f}, {rate:.1f} steps/s")
    print(f"\n| {args.compare} | action loss per seed | mean ± std | steps/s (mean) |\n|---|---|---|---|")
    for precision, rows in results.items():
        losses = [loss for loss, _ in rows]
        std = statistics.stdev(losses) if len(losses) > 1 else 0.0
        print(
            f"| {precision} | {', '.join(f'{x:.5f}' for x in losses)} | {statistics.fmean(losses):.5f} ± {std:.5f} "
            f"| {statistics.fmean(r for _, r in rows):.1f} |"
        )
    first, second = results.values()
    diffs = [b[0] - a[0] for a, b in zip(first, second)]
    names = list(results)
    print(f"\n{names[1]} - {names[0]} per seed (same batches): {', '.join(f'{d:+.5f}' for d in diffs)}")


if __name__ == "__main__":
    main()
