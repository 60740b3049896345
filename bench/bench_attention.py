"""Masked causal attention, forward + backward: pyseqrl's CUDA kernel vs every torch SDPA backend that takes the mask.

The DT setting: L = 60 tokens (K = 20 steps x 3), left padding, a key padding mask. SDPA gets the equivalent 4-D
bool mask (causal & key mask; fully padded rows opened so they stay finite); FlashAttention refuses explicit masks
and shows as n/a. Times are CUDA-event medians of fwd+bwd per call (``--inner`` calls per timing, ``--repeat``
timings, after warm-up); the ratio is best-SDPA time / pyseqrl time (target on one H100: >= 1.3x).

    python bench/bench_attention.py                    # the full matrix: B {64,256,512} x H {1,12} x D {64,128}
    python bench/bench_attention.py --quick            # one configuration, for a smoke run
    python bench/bench_attention.py --out bench/results/attention_h100.md
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, table

import pyseqrl
from pyseqrl.ops import _cuda, attention
from pyseqrl.ops.attention import attention_math, causal_attention

BACKENDS = {
    "sdpa-math": SDPBackend.MATH,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
}


def cuda_time(fn: Callable[[], object], inner: int, repeat: int, warmup: int = 5) -> float:
    """Median seconds per call measured with CUDA events (never a host clock)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / inner)
    return statistics.median(times)


def make_inputs(B: int, H: int, L: int, D: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=dtype, generator=gen).requires_grad_() for _ in range(3))
    pads = torch.randint(0, L // 3, (B,), device="cuda", generator=gen) * 3  # left padding in whole DT steps
    key_mask = torch.arange(L, device="cuda")[None, :] >= pads[:, None]  # (B, L)
    grad = torch.randn(B, H, L, D, device="cuda", dtype=dtype, generator=gen)
    return q, k, v, key_mask, grad


def sdpa_mask(key_mask: torch.Tensor) -> torch.Tensor:
    L = key_mask.shape[1]
    allowed = torch.ones(L, L, dtype=torch.bool, device=key_mask.device).tril()[None, None] & key_mask[:, None, None]
    return allowed | ~allowed.any(-1, keepdim=True)  # (B, 1, L, L)


def bench_config(B: int, H: int, D: int, L: int, dtype: torch.dtype, inner: int, repeat: int) -> dict[str, object]:
    q, k, v, key_mask, grad = make_inputs(B, H, L, D, dtype)
    mask4 = sdpa_mask(key_mask)
    row = {}

    # correctness guard: the kernel agrees with the float64 oracle before it is timed
    with torch.no_grad():
        out = causal_attention(q, k, v, key_mask, backend="kernel").double()
        ref = attention_math(q.double()[:4], k.double()[:4], v.double()[:4], key_mask[:4])
        err = ((out[:4] - ref).abs().max() / ref.abs().max()).item()
    row["max rel err"] = f"{err:.1e}"

    def ours() -> None:
        torch.autograd.grad(causal_attention(q, k, v, key_mask, backend="kernel"), (q, k, v), grad)

    row["pyseqrl"] = cuda_time(ours, inner, repeat)
    row["pyseqrl-simt"] = None
    if dtype != torch.float32 and L <= 64:  # the automatic choice is the tensor-core kernel: time SIMT as well
        attention.KERNEL_ALGO = 1
        try:
            row["pyseqrl-simt"] = cuda_time(ours, inner, repeat)
        finally:
            attention.KERNEL_ALGO = 0
    for name, backend in BACKENDS.items():

        def sdpa(backend=backend) -> None:
            with sdpa_kernel([backend]):
                torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, attn_mask=mask4), (q, k, v), grad)

        try:
            row[name] = cuda_time(sdpa, inner, repeat)
        except RuntimeError:  # this backend does not accept the mask / shape / dtype
            row[name] = None
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--heads", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--head-dim", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--seq-len", type=int, default=60)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--inner", type=int, default=20, help="calls per CUDA-event timing")
    parser.add_argument("--repeat", type=int, default=15, help="timings per configuration (median reported)")
    parser.add_argument("--quick", action="store_true", help="one configuration (B=256, H=12, D=64, bf16)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    args = parser.parse_args(argv)
    if not _cuda.cuda_kernels_available():
        print("bench_attention: needs a CUDA GPU and pyseqrl built with its kernels (PYSEQRL_CUDA=ON)")
        return 1
    if args.quick:
        args.batch, args.heads, args.head_dim, args.dtypes = [256], [12], [64], ["bfloat16"]
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for every contender

    header = [
        machine_header(),
        f"device: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})",
        f"pyseqrl {pyseqrl.__version__}; fwd+bwd per call, median of {args.repeat} x {args.inner} calls, "
        f"L={args.seq_len}",
    ]
    print("\n".join(header), flush=True)
    names = ["pyseqrl", "pyseqrl-simt", *BACKENDS]
    rows = []
    for dtype_name, B, H, D in itertools.product(args.dtypes, args.batch, args.heads, args.head_dim):
        dtype = getattr(torch, dtype_name)
        r = bench_config(B, H, D, args.seq_len, dtype, args.inner, args.repeat)
        sdpa_times = [r[n] for n in BACKENDS if r[n] is not None]
        best = min(sdpa_times) if sdpa_times else None
        ratio = f"{best / r['pyseqrl']:.2f}x" if best else "n/a"
        cells = [f"{r[n] * 1e6:.0f}" if r[n] is not None else "n/a" for n in names]
        rows.append([dtype_name, B, H, D, *cells, ratio, r["max rel err"]])
        print(" ".join(str(c) for c in rows[-1]), flush=True)
    report = table(["dtype", "B", "H", "D", *[f"{n} (us)" for n in names], "best SDPA / pyseqrl", "err"], rows)
    print("\n" + report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(header) + "\n\n" + report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
