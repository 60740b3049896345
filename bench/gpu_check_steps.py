"""Decision-Transformer training-step time on one GPU for three backbone sizes, at B=64 and K=20.

Backbones, all with random weights of the right configuration:

* ``dt``: the DT paper's GPT-2 (hidden 128, 3 layers, 1 head, relu), DT options (linear heads, dropout 0.1).
* ``chibit``: a ChibiT-size GPT-2 LM (hidden 128, 3 layers, 1 head, vocabulary 8192), Wiki-RL options.
* ``smollm2``: a SmolLM2-135M-size Llama (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, vocabulary 49152,
  tied embeddings), Wiki-RL options, every weight trained.

The LM backbones are saved with ``save_pretrained`` to a temporary directory and loaded by
``DecisionTransformer(DTConfig(backbone=<dir>))``, the path ``pyseqrl train`` takes. A step is everything:
GPU batching (``GPUSegmentSampler`` on a synthetic hopper-sized dataset), forward, action loss, backward, gradient
clipping, learning-rate warmup and capturable AdamW (``pyseqrl.ops.graphed_step.TrainStep``). Each backbone is
timed with SDPA and with pyseqrl's fused attention, in fp32 with TF32 matmuls ("tf32") and under bf16 autocast
("bf16"), eagerly and replayed from a CUDA graph. Times are CUDA-event medians. Batches are left padded (segments
at the start of an episode); there is no right-padding option to time.

Each backbone runs in its own worker process, so a crash or a broken CUDA context loses one backbone only.

    python bench/gpu_check_steps.py --json steps.json                 # all of it (about 2 minutes on an H200)
    python bench/gpu_check_steps.py --models dt --modes graph
    python bench/gpu_check_steps.py --device cpu --tiny               # tiny shapes on the CPU (a rehearsal)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("dt", "chibit", "smollm2")
ATTENTIONS = ("sdpa", "pyseqrl")
MODES = ("eager", "graph")
# Build cost and the least time a variant needs, in seconds: a model is skipped when less is left.
MIN_SECONDS = {"dt": 4.0, "chibit": 4.0, "smollm2": 12.0}


# ------------------------------------------------------------------------------------------------ worker side


def backbone_config(name: str, tiny: bool):
    """transformers config of the LM backbone (None for the DT's own random GPT-2)."""
    from transformers import GPT2Config, LlamaConfig

    if name == "chibit":
        size = dict(n_embd=32, n_layer=2, vocab_size=100) if tiny else dict(n_embd=128, n_layer=3, vocab_size=8192)
        return GPT2Config(n_positions=1024, n_head=1, bos_token_id=0, eos_token_id=0, **size)
    if name == "smollm2":
        size = (
            dict(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=128,
                vocab_size=100,
            )
            if tiny
            else dict(
                hidden_size=576,
                num_hidden_layers=30,
                num_attention_heads=9,
                num_key_value_heads=3,
                intermediate_size=1536,
                vocab_size=49152,
            )
        )
        return LlamaConfig(
            max_position_embeddings=8192,
            rope_theta=100000.0,
            rms_norm_eps=1e-5,
            hidden_act="silu",
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
            **size,
        )
    return None


def build_model(name: str, S: int, A: int, K: int, tiny: bool, tmp: str):
    import torch
    from transformers import AutoModelForCausalLM

    from pyseqrl.models import DecisionTransformer, DTConfig

    torch.manual_seed(0)
    if name == "dt":
        size = dict(hidden_size=32, n_layer=2) if tiny else dict(hidden_size=128, n_layer=3)
        return DecisionTransformer(
            DTConfig(state_dim=S, act_dim=A, context_len=K, n_head=1, dropout=0.1, max_ep_len=1000, **size)
        )
    path = Path(tmp) / name
    AutoModelForCausalLM.from_config(backbone_config(name, tiny)).save_pretrained(path)
    # Wiki-RL's options (pyseqrl train wiki): tied action head, timestep embedding after the LayerNorm, dropout 0.2
    return DecisionTransformer(
        DTConfig(
            state_dim=S,
            act_dim=A,
            context_len=K,
            backbone=str(path),
            dropout=0.2,
            action_head="tied",
            time_embedding="after_ln",
            timestep_from_lm=None,
            max_ep_len=1000,
        )
    )


class StaticBatches:
    """One batch kept on the device (when the GPU sampler is unavailable): sample_into copies it, capturable."""

    def __init__(self, cpu_sampler, device):
        import torch

        self.src = {k: torch.from_numpy(v).to(device) for k, v in cpu_sampler.sample().items()}

    def empty_batch(self):
        import torch

        return {k: torch.empty_like(v) for k, v in self.src.items()}

    def sample_into(self, out):
        for k, v in self.src.items():
            out[k].copy_(v)


def set_attention(model, impl: str) -> None:
    from pyseqrl.ops.graphed_step import use_pyseqrl_attention

    if impl == "pyseqrl":
        use_pyseqrl_attention(model)
    else:
        model.lm.set_attn_implementation(impl)
        model.cfg.attn_implementation = impl


def time_per_step(step, device, tiny: bool) -> tuple[float, int]:
    """Median seconds per step (CUDA events on a GPU) and the number of steps timed."""
    import statistics

    import torch

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(0 if tiny and not cuda else 3):
        step()
    sync()
    if not cuda:
        n = 1 if tiny else 3
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        return (time.perf_counter() - t0) / n, n
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    sync()
    estimate = (time.perf_counter() - t0) / 3
    n = int(min(500, max(5, 0.2 / max(estimate, 1e-6))))
    times = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / n)
    return statistics.median(times), 3 * n


def time_variant(model, sampler, device, attn: str, precision: str, mode: str, tiny: bool) -> dict:
    """Time one (attention, precision, mode) variant of the full training step; row fields to add."""
    import contextlib

    import torch

    from pyseqrl.ops.graphed_step import TrainStep, dt_action_loss, make_capturable_adamw

    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.allow_tf32 = precision != "fp32"
        torch.cuda.reset_peak_memory_stats()
    set_attention(model, attn)

    def amp():
        if precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)  # no cache: graph-safe

    def loss_fn(batch):
        with amp():
            return dt_action_loss(model, batch)

    step = TrainStep(
        loss_fn,
        list(model.parameters()),
        make_capturable_adamw(model, lr=1e-4, weight_decay=1e-4),
        sampler,
        grad_clip=0.25,
        warmup_steps=1000,
    )
    if mode == "graph":
        step.capture(warmup_iters=3)
    seconds, n = time_per_step(step if mode == "graph" else step.eager, device, tiny)
    row = {"status": "ok", "ms_per_step": round(seconds * 1e3, 4), "steps_timed": n, "loss": round(float(step.loss), 5)}
    if cuda:
        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return row


def worker(args: argparse.Namespace) -> int:
    import gc
    import traceback

    import torch

    import pyseqrl
    from pyseqrl.ops import _cuda
    from pyseqrl.ops.gpu_sampler import GPUSegmentSampler

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gpu_dt import synthetic_dataset

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("gpu_check_steps: torch sees no CUDA device", flush=True)
        return 1
    kernels = _cuda.cuda_kernels_available() if cuda else False
    B, K = args.batch_size, args.context_len
    ds = synthetic_dataset(2_000 if args.tiny else 200_000)
    S, A = ds.observation_dim, ds.action_dim
    mean, std = ds.state_stats()
    skw = dict(context_len=K, batch_size=B, seed=0, state_mean=mean, state_std=std)
    batching = "GPU sampler" if kernels or not cuda else "one static batch (no GPU sampler: kernels not built)"

    def emit(kind: str, obj: dict) -> None:
        with open(args.jsonl, "a") as f:
            f.write(json.dumps({kind: obj}) + "\n")

    emit(
        "meta",
        {
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "pyseqrl_kernels": kernels,
            "batch_size": B,
            "context_len": K,
            "padding": "left only (segments at episode starts); no right-padding option exists",
            "batching": batching,
            "tiny": args.tiny,
        },
    )
    seen_errors: set[str] = set()
    precisions = args.precisions or (["tf32", "bf16"] if cuda else ["fp32", "bf16"])
    with tempfile.TemporaryDirectory(prefix="gpu_check_steps_") as tmp:
        for name in args.models:
            base = {"model": name}
            if time.time() > args.deadline - MIN_SECONDS[name]:
                emit("row", {**base, "status": "skipped", "error": "time budget spent"})
                continue
            try:
                t0 = time.perf_counter()
                model = build_model(name, S, A, K, args.tiny, tmp).to(device).train()
                build_s = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - report and go on with the next backbone
                traceback.print_exc()
                emit("row", {**base, "status": "failed", "error": f"build: {type(e).__name__}: {e}"[:400]})
                continue
            base["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
            base["trainable_m"] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 3)
            print(
                f"== {name}: {base['params_m']} M parameters ({base['trainable_m']} M trained), built in "
                f"{build_s:.1f} s",
                flush=True,
            )
            if cuda and kernels:
                sampler = GPUSegmentSampler(ds, device=device, **skw)
            elif cuda:
                sampler = StaticBatches(pyseqrl.SegmentSampler(ds, prefetch=0, **skw), device)
            else:
                sampler = GPUSegmentSampler(ds, device="cpu", **skw)
            for precision in precisions:
                for attn in args.attn:
                    for mode in args.modes:
                        row = {**base, "attn": attn, "precision": precision, "mode": mode}
                        if mode == "graph" and not cuda:
                            emit("row", {**row, "status": "skipped", "error": "CUDA graphs need a GPU"})
                            continue
                        if time.time() > args.deadline - MIN_SECONDS[name] / 4:
                            emit("row", {**row, "status": "skipped", "error": "time budget spent"})
                            continue
                        try:
                            row.update(time_variant(model, sampler, device, attn, precision, mode, args.tiny))
                        except Exception as e:  # noqa: BLE001 - one failing variant must not hide the others
                            if str(e) not in seen_errors:  # the whole traceback once per distinct error
                                seen_errors.add(str(e))
                                traceback.print_exc()
                            row.update(status="failed", error=f"{type(e).__name__}: {e}"[:400])
                        finally:
                            model.zero_grad(set_to_none=True)
                            if cuda:
                                gc.collect()  # the variant's graph, optimizer state and pools
                                torch.cuda.empty_cache()
                        print("   " + json.dumps(row), flush=True)
                        emit("row", row)
            model = sampler = None
            if cuda:
                gc.collect()
                torch.cuda.empty_cache()
    return 0


# ------------------------------------------------------------------------------------------------ parent side


def markdown(rows: list[dict]) -> str:
    head = ["model", "params (M, trained)", "attention", "precision", "mode", "ms / step", "peak GB", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        params = f"{r['params_m']} ({r['trainable_m']})" if "params_m" in r else ""
        ms = f"{r['ms_per_step']:.3f}" if "ms_per_step" in r else ""
        status = r["status"] + (f": {r['error'][:70]}" if r.get("error") else "")
        cells = [
            r["model"],
            params,
            r.get("attn", ""),
            r.get("precision", ""),
            r.get("mode", ""),
            ms,
            str(r.get("peak_mem_gb", "")),
            status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny backbones and batches (a CPU rehearsal)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--attn", nargs="+", default=list(ATTENTIONS), choices=ATTENTIONS)
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "tf32", "bf16"],
        help="default: tf32 bf16 on a GPU, fp32 bf16 on the CPU",
    )
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (4 with --tiny)")
    p.add_argument("--context-len", type=int, default=None, help="default 20 (5 with --tiny)")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for everything; later variants are skipped")
    p.add_argument("--json", type=Path, default=None, help="write {meta, rows} here (rewritten after each backbone)")
    p.add_argument(
        "--one-worker",
        action="store_true",
        help="all backbones in one worker process (default on the CPU; on a GPU one process each)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jsonl", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.batch_size = args.batch_size or (4 if args.tiny else 64)
    args.context_len = args.context_len or (5 if args.tiny else 20)
    if args.worker:
        return worker(args)

    deadline = time.time() + args.budget
    groups = [list(args.models)] if (args.one_worker or args.device == "cpu") else [[m] for m in args.models]
    meta: dict = {}
    rows: list[dict] = []
    worst = 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_steps_") as tmp:
        for i, group in enumerate(groups):
            jsonl = Path(tmp) / f"rows{i}.jsonl"
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--jsonl",
                str(jsonl),
                "--deadline",
                str(deadline),
                "--device",
                args.device,
                "--models",
                *group,
                "--attn",
                *args.attn,
                "--modes",
                *args.modes,
                "--batch-size",
                str(args.batch_size),
                "--context-len",
                str(args.context_len),
            ]
            if args.tiny:
                cmd.append("--tiny")
            if args.precisions:
                cmd += ["--precisions", *args.precisions]
            left = deadline - time.time()
            if left < MIN_SECONDS[group[0]]:
                rows += [{"model": m, "status": "skipped", "error": "time budget spent"} for m in group]
                continue
            print(f"-- worker for {', '.join(group)} ({left:.0f} s left)", flush=True)
            proc = subprocess.Popen(cmd)
            try:
                rc = proc.wait(timeout=left + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
                print(f"-- worker for {', '.join(group)} stopped at the time budget", flush=True)
            got = []
            if jsonl.exists():
                for line in jsonl.read_text().splitlines():
                    rec = json.loads(line)
                    if "meta" in rec:
                        meta = meta or rec["meta"]
                    else:
                        got.append(rec["row"])
            done = {r["model"] for r in got}
            if rc != 0:  # crashed or stopped: say so for the backbone in progress and those never started
                worst = rc
                if got:
                    got.append(
                        {
                            "model": got[-1]["model"],
                            "status": "failed",
                            "error": f"worker exited with {rc} after the rows above",
                        }
                    )
                got += [
                    {"model": m, "status": "failed", "error": f"worker exited with {rc}"}
                    for m in group
                    if m not in done
                ]
            rows += got
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    print()
    for key, value in meta.items():
        print(f"{key}: {value}")
    print()
    print(markdown(rows))
    ok = sum(r["status"] == "ok" for r in rows)
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"\n{ok} variant(s) timed, {failed} failed, {len(rows) - ok - failed} skipped")
    return 1 if worst or ok == 0 else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
