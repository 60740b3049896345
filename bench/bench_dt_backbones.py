"""Decision-Transformer training speed and peak memory per backbone on this machine (B=64, K=20 by default).

Each configuration runs in its own process (so peak memory is its own): build the model exactly as
``pyseqrl train`` does, then time full training steps -- forward, action loss, backward, gradient clip, AdamW --
on batches of the right shapes, in fp32 and under bf16 autocast (where the CPU or GPU supports it).

    python bench/bench_dt_backbones.py                          # all backbones, 2 timed steps each after 1 warm-up
    python bench/bench_dt_backbones.py --only dt chibit --steps 20

Backbones: ``dt`` (random GPT-2 128 x 3 x 1, the DT baseline), ``chibit`` (the cached pretrained ChibiT, same
size, LM head included), ``smollm2-full`` (SmolLM2-135M, every weight trained), ``smollm2-lamo`` (SmolLM2 frozen,
LoRA r=16 on q/k/v, MLP embeddings and head). The step excludes LM co-training, so the rows compare the RL step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

CONFIGS = {
    "dt": {"recipe": "dt"},
    "chibit": {"recipe": "wiki", "backbone": "chibit"},
    "smollm2-full": {"recipe": "wiki", "backbone": "smollm2"},
    "smollm2-lamo": {"recipe": "lamo", "backbone": "smollm2"},
}


def one(name: str, precision: str, batch: int, K: int, steps: int, threads: int) -> dict:
    import torch

    from pyseqrl.algos.dt import DTObjective, TrainConfig, build_model, param_groups, resolve
    from pyseqrl.utils.precision import autocast_bf16

    torch.set_num_threads(threads)
    spec = dict(CONFIGS[name])
    if spec.get("backbone") == "chibit":
        from pyseqrl.lm.pretrain import cached_chibit

        spec["backbone"] = str(cached_chibit())
    cfg = resolve(
        TrainConfig(
            dataset="-", context_len=K, batch_size=batch, align_weight=0.0, lm_weight=0.0, precision=precision, **spec
        )
    )
    torch.manual_seed(0)
    S, A = 11, 3  # Hopper
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_build = time.perf_counter()
    model = build_model(cfg, S, A)
    build_s = time.perf_counter() - t_build
    objective = DTObjective(model, None, 0.0)
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.lm_lr, float(cfg.weight_decay)), foreach=True)
    bf16 = autocast_bf16(precision, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    batch_t = {
        "states": torch.randn(batch, K, S, generator=g),
        "actions": torch.rand(batch, K, A, generator=g) * 2 - 1,
        "returns_to_go": torch.rand(batch, K, 1, generator=g),
        "timesteps": torch.randint(0, 1000, (batch, K)),
        "attention_mask": torch.ones(batch, K),
    }
    batch_t["attention_mask"][: batch // 4, : K // 2] = 0  # some left padding, as in real batches

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = objective(batch_t, 0.0, None)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        return float(loss.detach())

    step()  # warm-up
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    dt = (time.perf_counter() - t0) / steps
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "name": name,
        "precision": "bf16" if bf16 else "fp32",
        "s_per_step": dt,
        "steps_per_s": 1.0 / dt,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_before_gb": rss0 / 2**20,
        "params_m": n_all / 1e6,
        "trainable_m": n_train / 1e6,
        "build_s": build_s,
        "loss": losses[-1],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--precision", nargs="*", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--context-len", type=int, default=20)
    p.add_argument("--steps", type=int, default=2, help="timed steps per configuration (after one warm-up step)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.precision[0], args.batch_size, args.context_len, args.steps, args.threads)))
        return 0
    import torch

    from pyseqrl.experiments import markdown_table
    from pyseqrl.utils.precision import bf16_supported

    rows, out = [], []
    for name in args.only:
        for prec in args.precision:
            if prec == "bf16" and not bf16_supported(torch.device("cpu")):
                continue
            cmd = [
                sys.executable,
                __file__,
                "--one",
                name,
                "--precision",
                prec,
                "--batch-size",
                str(args.batch_size),
                "--context-len",
                str(args.context_len),
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(f"{name} {prec}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out.append(r)
            rows.append(
                [
                    name,
                    r["precision"],
                    f"{r['params_m']:.1f} M / {r['trainable_m']:.2f} M",
                    f"{r['s_per_step'] * 1e3:.0f} ms",
                    f"{r['steps_per_s']:.2f}",
                    f"{r['peak_rss_gb']:.2f} GB",
                ]
            )
            print(
                f"{name} {r['precision']}: {r['s_per_step'] * 1e3:.0f} ms/step, peak {r['peak_rss_gb']:.2f} GB",
                flush=True,
            )
    print(
        f"\nDT training step, B={args.batch_size}, K={args.context_len}, {args.threads} threads, "
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"{args.steps} timed steps after 1 warm-up\n"
    )
    print(
        markdown_table(
            ["backbone", "precision", "params (all / trained)", "time per step", "steps/s", "peak memory (process)"],
            rows,
        )
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
