"""A tiny workload for compute-sanitizer: every pyseqrl CUDA kernel once or twice, on small shapes.

bench/gpu_check.sh runs it under ``compute-sanitizer --tool memcheck|racecheck|synccheck``. It launches the attention
forward and backward kernels (SIMT fp32, tensor cores bf16 with D 64 and 128, SIMT bf16/fp16 with L > 64, a forced
SIMT bf16 call, dropout, strided GPT-2-style inputs, a fully padded row), the dropout-mask kernel and the GPU segment
sampler, and checks the results against float64 / CPU references (loose tolerances: the point is the sanitizer).

    python bench/gpu_check_tiny.py                  # on the GPU (needs pyseqrl built with its kernels)
    python bench/gpu_check_tiny.py --device cpu     # the same calls on the CPU fallbacks (dry run)

Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import pyseqrl
from pyseqrl.ops import _cuda, attention
from pyseqrl.ops.attention import attention_math, causal_attention, dropout_keep_mask
from pyseqrl.ops.gpu_sampler import GPUSegmentSampler

FAILURES: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name} {detail}", flush=True)
    if not ok:
        FAILURES.append(name)


def qkv(B: int, H: int, L: int, D: int, dtype: torch.dtype, device: str, seed: int, strided: bool = False):
    """q, k, v [B, H, L, D] (as views of a GPT-2 [B, L, 3, H, D] tensor when ``strided``) and a left-padding mask."""
    gen = torch.Generator().manual_seed(seed)
    if strided:
        packed = torch.randn(B, L, 3, H, D, generator=gen).to(device=device, dtype=dtype)
        q, k, v = (packed[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, L, D), last dim contiguous
    else:
        q, k, v = (torch.randn(B, H, L, D, generator=gen).to(device=device, dtype=dtype) for _ in range(3))
    pads = torch.randint(0, L, (B,), generator=gen)
    pads[0] = L  # one fully padded row: zeros out, zero gradients
    mask = (torch.arange(L)[None, :] >= pads[:, None]).to(device)
    return [t.detach().requires_grad_() for t in (q, k, v)], mask


def attention_case(
    name: str,
    B: int,
    H: int,
    L: int,
    D: int,
    dtype: torch.dtype,
    device: str,
    algo: int = 0,
    dropout_p: float = 0.0,
    strided: bool = False,
    seed: int = 0,
) -> None:
    (q, k, v), mask = qkv(B, H, L, D, dtype, device, seed, strided)
    backend = "kernel" if device == "cuda" else "auto"
    attention.KERNEL_ALGO = algo
    try:
        out = causal_attention(q, k, v, mask, dropout_p=dropout_p, backend=backend)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device=device, dtype=dtype)
        dq, dk, dv = torch.autograd.grad(out, (q, k, v), grad)
        if device == "cuda":
            torch.cuda.synchronize()
    finally:
        attention.KERNEL_ALGO = 0
    finite = all(bool(torch.isfinite(t).all()) for t in (out, dq, dk, dv))
    padded_row_zero = bool((out[0] == 0).all()) and bool((dq[0] == 0).all())
    detail = f"B={B} H={H} L={L} D={D} {str(dtype).removeprefix('torch.')} algo={algo} p={dropout_p}"
    if dropout_p > 0.0:  # the mask is random: finiteness and the padded row only
        check(f"attention {name}", finite and padded_row_zero, detail)
        return
    q64, k64, v64 = (t.detach().double().cpu().requires_grad_() for t in (q, k, v))
    ref = attention_math(q64, k64, v64, mask.cpu())
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), grad.double().cpu())
    ref = ref.detach()
    tol = 1e-4 if dtype == torch.float32 else 5e-2

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.detach().double().cpu() - b).abs().max() / b.abs().max().clamp(min=1e-12))

    errs = [rel(out, ref), *(rel(g, r) for g, r in zip((dq, dk, dv), ref_grads))]
    ok = finite and padded_row_zero and max(errs) < tol
    check(f"attention {name}", ok, f"{detail} max rel err out/dq/dk/dv {', '.join(f'{e:.1e}' for e in errs)}")


def random_dataset(lengths: list[int], S: int = 4, A: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    terminals = np.zeros(n, bool)
    terminals[np.cumsum(lengths) - 1] = True
    return pyseqrl.data.EpisodeDataset.from_arrays(
        observations=rng.normal(size=(n, S)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, A)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=terminals,
        timeouts=np.zeros(n, bool),
    )


def sampler_case(device: str) -> None:
    ds = random_dataset([3, 25, 1, 40, 7, 60, 2])
    mean, std = ds.state_stats()
    kw = {"context_len": 6, "batch_size": 5, "seed": 7, "state_mean": mean, "state_std": std}
    gpu = GPUSegmentSampler(ds, device=device, **kw)
    cpu = pyseqrl.SegmentSampler(ds, prefetch=0, **kw)
    ok = True
    for got, ref in ((gpu.sample(), cpu.sample()), (gpu.batch_at(3), cpu.batch_at(3))):
        for name, arr in ref.items():
            ok &= bool(np.array_equal(got[name].cpu().numpy(), arr))
    check("gpu sampler", ok, f"on_gpu={gpu.on_gpu}, bit-exact against SegmentSampler")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    args = parser.parse_args(argv)
    device = args.device
    if device == "cuda" and not _cuda.cuda_kernels_available():
        print(
            f"gpu_check_tiny: needs a CUDA device and pyseqrl's kernels (torch.cuda.is_available()="
            f"{torch.cuda.is_available()}, compiled with CUDA={_cuda.compiled_with_cuda()})"
        )
        return 1
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    attention_case("simt fp32", 2, 2, 37, 64, f32, device)
    attention_case("simt fp32 D=128 strided", 2, 2, 60, 128, f32, device, strided=True)
    attention_case("tensor cores bf16 D=64", 2, 2, 60, 64, bf16, device)
    attention_case("tensor cores bf16 D=128", 2, 2, 60, 128, bf16, device)
    attention_case("tensor cores fp16 D=32 strided", 2, 3, 24, 32, f16, device, strided=True)
    attention_case("simt bf16 forced", 2, 2, 60, 32, bf16, device, algo=1)
    attention_case("simt fp16 L=100 D=128", 2, 1, 100, 128, f16, device)
    attention_case("dropout simt fp32", 2, 2, 20, 32, f32, device, dropout_p=0.1)
    attention_case("dropout tensor cores bf16", 2, 2, 60, 64, bf16, device, dropout_p=0.1)
    if device == "cuda":
        philox = torch.tensor([1234, 0], dtype=torch.int64, device="cuda")
        keep = dropout_keep_mask(2, 2, 30, 0.25, philox)
        rate = float(keep.float().mean())
        check("dropout mask", 0.6 < rate < 0.9, f"keep rate {rate:.3f} (expected about 0.75)")
    sampler_case(device)
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_check_tiny: {len(FAILURES)} failed check(s){': ' + ', '.join(FAILURES) if FAILURES else ''}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
