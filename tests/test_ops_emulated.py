"""The CUDA kernels' own device code, run on the CPU by a small emulator (tests/ops_cuda_emu), against the oracles.

No GPU needed: csrc/kernels/*_kernel.cuh are compiled by g++ with the CUDA headers and run one std::thread per
CUDA thread (barriers for __syncthreads, buffers for warp shuffles). This catches indexing, masking, causal,
dropout and synchronisation bugs where no device is available. Needs g++ (C++20) and the CUDA headers.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_dataset

import pyseqrl
from pyseqrl.ops.attention import attention_math, attention_reference

REPO = Path(__file__).resolve().parents[1]
EMU = Path(__file__).resolve().parent / "ops_cuda_emu"
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
I64_3 = ctypes.c_int64 * 3
P = ctypes.c_void_p


def cuda_include() -> Path | None:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_bf16.h").is_file():
            return Path(root) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = Path(nvcc).resolve().parents[1] / "include"
        if (inc / "cuda_bf16.h").is_file():
            return inc
    return None


def build_emulator(out_dir: Path, defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    cxx, inc = shutil.which("g++"), cuda_include()
    if cxx is None or inc is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_bf16.h) to emulate the kernels")
    out = out_dir / "emu_kernels.so"
    cmd = [
        cxx,
        *[f"-D{d}" for d in defines],
        "-std=c++20",
        "-O1",
        "-shared",
        "-fPIC",
        "-pthread",
        f"-I{REPO / 'csrc'}",
        f"-I{inc}",
        str(EMU / "emu_kernels.cpp"),
        "-o",
        str(out),
    ]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"emulator build failed:\n{' '.join(cmd)}\n{res.stderr[-4000:]}")
    lib = ctypes.CDLL(str(out))
    lib.emu_attention_forward.restype = ctypes.c_int
    lib.emu_attention_backward.restype = ctypes.c_int
    lib.emu_last_error.restype = ctypes.c_char_p
    return lib


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> ctypes.CDLL:
    return build_emulator(tmp_path_factory.mktemp("emu"))


def ptr(t: torch.Tensor | np.ndarray | None) -> P:
    if t is None:
        return P(0)
    return P(t.data_ptr() if isinstance(t, torch.Tensor) else t.ctypes.data)


def strides3(t: torch.Tensor) -> ctypes.Array:
    return I64_3(t.stride(0), t.stride(1), t.stride(2))


def run_attention(lib, q, k, v, mask, scale, dropout_p=0.0, philox=None, grad=None, algo=1):
    """Forward then backward through the emulated kernels, every output pre-filled with NaN."""
    B, H, L, D = q.shape
    code = DTYPE_CODES[q.dtype]
    out = torch.full((B, L, H, D), float("nan"), dtype=q.dtype).transpose(1, 2)  # GPT-2's output layout
    lse = torch.full((B, H, L), float("nan"))
    m = None if mask is None else mask.to(torch.uint8).contiguous()
    mstride = 0 if m is None else m.stride(0)
    ph = None if philox is None else np.ascontiguousarray(philox, np.int64)
    rc = lib.emu_attention_forward(
        code,
        ptr(q),
        strides3(q),
        ptr(k),
        strides3(k),
        ptr(v),
        strides3(v),
        ptr(out),
        strides3(out),
        ptr(lse),
        ptr(m),
        ctypes.c_int64(mstride),
        B,
        H,
        L,
        D,
        ctypes.c_float(scale),
        ctypes.c_float(dropout_p),
        ptr(ph),
        algo,
    )
    assert rc != 3, f"forward launch failed: {lib.emu_last_error().decode()}"
    assert rc == 0, "unsupported dtype/D in the emulator build"
    if grad is None:
        return out, lse, None
    dq, dk, dv = (torch.full_like(q, float("nan")) for _ in range(3))
    delta = torch.full((B, H, L), float("nan"))
    tensors = (q, k, v, out, grad, dq, dk, dv)
    all_strides = (ctypes.c_int64 * 24)(*[s for t in tensors for s in (t.stride(0), t.stride(1), t.stride(2))])
    rc = lib.emu_attention_backward(
        code,
        ptr(q),
        ptr(k),
        ptr(v),
        ptr(out),
        ptr(grad),
        ptr(dq),
        ptr(dk),
        ptr(dv),
        all_strides,
        ptr(lse),
        ptr(delta),
        ptr(m),
        ctypes.c_int64(mstride),
        B,
        H,
        L,
        D,
        ctypes.c_float(scale),
        ctypes.c_float(dropout_p),
        ptr(ph),
        algo,
    )
    assert rc != 3, f"backward launch failed: {lib.emu_last_error().decode()}"
    assert rc == 0
    return out, lse, (dq, dk, dv)


def left_padding(B: int, L: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    pads = torch.randint(0, L + 1, (B,), generator=gen)
    pads[0] = L  # one fully padded row
    return torch.arange(L)[None, :] >= pads[:, None]


def oracle(q, k, v, mask, scale, grad, keep=None, p=0.0):
    refs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    out = attention_math(*refs, mask, scale=scale, keep=keep, dropout_p=p)
    out.backward(grad.double())
    return out.detach(), [t.grad for t in refs]


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


slow = pytest.mark.slow  # the emulator runs ~100 OS threads per block: keep the default suite to small shapes


@pytest.mark.parametrize(
    "B, H, L, D, strided",
    [
        (3, 1, 17, 32, True),
        (2, 1, 1, 32, False),
        (2, 1, 16, 64, True),
        (2, 1, 21, 32, "misaligned"),
        pytest.param(2, 2, 60, 64, False, marks=slow),
        pytest.param(1, 2, 33, 128, False, marks=slow),
        pytest.param(1, 1, 100, 32, False, marks=slow),
    ],
)
def test_emulated_fp32_forward_backward(emu, B, H, L, D, strided):
    gen = torch.Generator().manual_seed(L * D)
    if strided == "misaligned":  # rows of D + 1 elements starting 4 bytes in: the element-wise staging path
        q, k, v = (torch.randn(B, H, L, D + 1, generator=gen)[..., 1:] for _ in range(3))
    elif strided:  # GPT-2 layout: one (B, L, 3, H, D) buffer viewed as q, k, v (B, H, L, D)
        buf = torch.randn(B, L, 3, H, D, generator=gen)
        q, k, v = (buf[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(B, H, L, D, generator=gen) for _ in range(3))
    mask = left_padding(B, L, seed=L)
    grad = torch.randn(B, H, L, D, generator=gen)
    scale = D**-0.5
    out, lse, (dq, dk, dv) = run_attention(emu, q, k, v, mask, scale, grad=grad)
    ref, (gq, gk, gv) = oracle(q, k, v, mask, scale, grad)
    for name, x in (("out", out), ("lse", lse), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert not torch.isnan(x).any(), f"{name}: unwritten (NaN) elements"
    assert rel_err(out, ref) < 1e-5
    for ours, theirs in ((dq, gq), (dk, gk), (dv, gv)):
        assert rel_err(ours, theirs) < 1e-5
    assert torch.isinf(lse[0]).all() and torch.all(out[0] == 0) and torch.all(dq[0] == 0)
    assert torch.all(dk[0] == 0) and torch.all(dv[0] == 0)
    # lse is log2-sum-exp of the scaled scores for non-empty rows
    allowed = torch.ones(L, L, dtype=torch.bool).tril() & mask[:, None, None, :]  # (B, 1, L, L)
    s = (q.double() @ k.double().transpose(-1, -2)) * scale
    lse_ref = torch.logsumexp(s.masked_fill(~allowed, float("-inf")), -1) / np.log(2.0)
    finite = torch.isfinite(lse_ref)
    torch.testing.assert_close(lse[finite].double(), lse_ref[finite], rtol=1e-5, atol=1e-5)


def test_emulated_without_mask(emu):
    gen = torch.Generator().manual_seed(3)
    q, k, v, grad = (torch.randn(2, 1, 20, 32, generator=gen) for _ in range(4))
    out, _, (dq, dk, dv) = run_attention(emu, q, k, v, None, 0.3, grad=grad)
    ref, grads = oracle(q, k, v, None, 0.3, grad)
    assert rel_err(out, ref) < 1e-5
    for ours, theirs in zip((dq, dk, dv), grads):
        assert rel_err(ours, theirs) < 1e-5


@pytest.mark.parametrize("dtype, D", [(torch.bfloat16, 64), (torch.float16, 32)], ids=["bf16", "fp16"])
def test_emulated_low_precision_within_twice_torch_error(emu, dtype, D):
    B, H, L = 2, 1, 24
    gen = torch.Generator().manual_seed(D)
    q, k, v, grad = (torch.randn(B, H, L, D, generator=gen).to(dtype) for _ in range(4))
    mask = left_padding(B, L, seed=1)
    out, _, (dq, dk, dv) = run_attention(emu, q, k, v, mask, D**-0.5, grad=grad)
    ref, grads = oracle(q, k, v, mask, D**-0.5, grad)
    lows = [t.clone().requires_grad_() for t in (q, k, v)]
    low = attention_reference(*lows, mask)
    low.backward(grad)
    assert rel_err(out, ref) <= 2 * rel_err(low.detach(), ref) + 1e-3
    for ours, theirs, torch_low in zip((dq, dk, dv), grads, lows):
        assert not torch.isnan(ours).any()
        assert rel_err(ours, theirs) <= 2 * rel_err(torch_low.grad, theirs) + 1e-3


def test_emulated_dropout(emu):
    from test_ops_attention import philox4x32_10_numpy

    B, H, L, D, p = 2, 1, 24, 32, 0.25
    seed, offset = 987654321123, 5
    philox = np.array([seed, offset], np.int64)
    keep = np.zeros((B, H, L, L), np.uint8)
    emu.emu_dropout_mask(B, H, L, ctypes.c_float(p), ptr(philox), ptr(keep))
    bh, i, j = np.meshgrid(np.arange(B * H), np.arange(L), np.arange(L), indexing="ij")
    counters = np.stack([(i * L + j).ravel(), bh.ravel(), np.full(bh.size, offset), np.zeros(bh.size)], axis=1)
    words = philox4x32_10_numpy(counters.astype(np.uint64), seed & 0xFFFFFFFF, seed >> 32)
    np.testing.assert_array_equal(keep.reshape(-1), (words >= np.uint32(int(p * 2**32))).astype(np.uint8))

    gen = torch.Generator().manual_seed(0)
    q, k, v, grad = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    mask = left_padding(B, L, seed=2)
    out, _, (dq, dk, dv) = run_attention(emu, q, k, v, mask, D**-0.5, dropout_p=p, philox=philox, grad=grad)
    ref, grads = oracle(q, k, v, mask, D**-0.5, grad, keep=torch.from_numpy(keep).bool(), p=p)
    assert rel_err(out, ref) < 1e-5
    for ours, theirs in zip((dq, dk, dv), grads):
        assert rel_err(ours, theirs) < 1e-5


def test_emulated_launchers_raise_shared_memory_of_every_kernel(emu):
    """Each kernel launched with more than 48 KiB of dynamic shared memory has its own limit raised first.

    The emulated runtime keeps cudaFuncAttributeMaxDynamicSharedMemorySize per kernel (function pointer) and fails
    a launch above it with cudaErrorInvalidValue, as a GPU does. Kernels of one signature -- every tensor-core
    forward, every tensor-core backward, the SIMT dQ and dK/dV pair -- once shared a single 'done' flag, so only the
    first of them launched in a process got the attribute. Run from a fresh attribute table, in one process.
    """
    emu.emu_reset_func_attributes()
    B, H, L = 1, 1, 8
    gen = torch.Generator().manual_seed(5)
    # (dtype, D, algo): two tensor-core kernels of each signature (71 and 110 KiB forward), then the SIMT backward
    # at D=128 (dQ and dK/dV, 50 KiB each)
    for dtype, D, algo in ((torch.bfloat16, 64, 2), (torch.bfloat16, 128, 2), (torch.float32, 128, 1)):
        q, k, v, grad = (torch.randn(B, H, L, D, generator=gen).to(dtype) for _ in range(4))
        mask = torch.ones(B, L, dtype=torch.bool)
        out, _, (dq, dk, dv) = run_attention(emu, q, k, v, mask, D**-0.5, grad=grad, algo=algo)
        ref, grads = oracle(q, k, v, mask, D**-0.5, grad)
        tol = 1e-5 if dtype == torch.float32 else 3e-2
        assert rel_err(out, ref) < tol, (dtype, D)
        for ours, theirs in zip((dq, dk, dv), grads):
            assert rel_err(ours, theirs) < tol, (dtype, D)


def test_emulated_launch_above_the_limit_fails_like_a_gpu(emu):
    """The emulator's check itself: without the attribute a >48 KiB launch fails and the launch check says so."""
    emu.emu_reset_func_attributes()
    assert emu.emu_probe_launch(64 * 1024, 0) == 3, "a launch above 48 KiB without the attribute did not fail"
    assert b"'probe_kernel' failed to launch: cudaErrorInvalidValue" in emu.emu_last_error()
    assert emu.emu_probe_launch(64 * 1024, 64 * 1024) == 0
    assert emu.emu_probe_launch(48 * 1024, 0) == 0  # the default limit needs no attribute


@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("sample_by", ["length", "uniform"])
@pytest.mark.parametrize("context_len", [1, 8, 70])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_emulated_gather_is_bit_exact(emu, normalise, sample_by, context_len, padding):
    ds = random_dataset([3, 25, 1, 40, 7, 60, 2] * 3, obs_dim=5, act_dim=3, seed=4)
    mean, std = ds.state_stats() if normalise else (None, None)
    gamma, scale, max_ep_len, B = 0.99, 100.0, 30, 9
    ref = pyseqrl.SegmentSampler(
        ds,
        context_len=context_len,
        batch_size=B,
        seed=13,
        state_mean=mean,
        state_std=std,
        sample_by=sample_by,
        gamma=gamma,
        return_scale=scale,
        max_ep_len=max_ep_len,
        padding=padding,
        prefetch=0,
    )
    obs, act = np.ascontiguousarray(ds.observations), np.ascontiguousarray(ds.actions)
    rew, ends = np.ascontiguousarray(ds.rewards), np.ascontiguousarray(ds.episode_ends, np.int64)
    rtg = pyseqrl.returns_to_go(rew, ends, gamma)
    inv_std = None if std is None else np.float32(1.0) / np.asarray(std, np.float32)
    mean = None if mean is None else np.asarray(mean, np.float32)
    K, S, A = context_len, ds.observation_dim, ds.action_dim
    for index in (0, 1, 57):
        out = ref.empty_batch()
        idx = np.array([index], np.int64)
        emu.emu_segment_gather(
            ptr(obs),
            ptr(act),
            ptr(rew),
            ptr(rtg),
            ptr(ends),
            ptr(mean),
            ptr(inv_std),
            ctypes.c_int64(len(ds)),
            ctypes.c_int64(S),
            ctypes.c_int64(A),
            ctypes.c_int64(len(ends)),
            ctypes.c_int64(B),
            ctypes.c_int64(K),
            ctypes.c_int64(max_ep_len),
            ctypes.c_uint64(13),
            int(sample_by == "length"),
            ctypes.c_float(np.float32(1.0 / scale)),
            ctypes.c_float(-10.0),
            int(padding == "right"),
            ptr(idx),
            ptr(out["states"]),
            ptr(out["actions"]),
            ptr(out["rewards"]),
            ptr(out["returns_to_go"]),
            ptr(out["timesteps"]),
            ptr(out["attention_mask"]),
        )
        expected = ref.batch_at(index)
        for name, arr in expected.items():
            np.testing.assert_array_equal(out[name], arr, err_msg=f"{name} of batch {index}")


@pytest.mark.slow
@pytest.mark.parametrize("warps, rows", [(8, 8), (2, 1), (3, 5)])
def test_emulated_other_tile_configurations(tmp_path, warps, rows):
    """The tuning knobs (PYSEQRL_ATTN_WARPS / _ROWS_PER_WARP) change speed only: any setting is exact."""
    lib = build_emulator(tmp_path, (f"PYSEQRL_ATTN_WARPS={warps}", f"PYSEQRL_ATTN_ROWS_PER_WARP={rows}"))
    gen = torch.Generator().manual_seed(warps * 10 + rows)
    B, H, L, D = 2, 1, 37, 32
    q, k, v, grad = (torch.randn(B, H, L, D, generator=gen) for _ in range(4))
    mask = left_padding(B, L, seed=7)
    out, _, (dq, dk, dv) = run_attention(lib, q, k, v, mask, D**-0.5, grad=grad)
    ref, grads = oracle(q, k, v, mask, D**-0.5, grad)
    assert rel_err(out, ref) < 1e-5
    for ours, theirs in zip((dq, dk, dv), grads):
        assert not torch.isnan(ours).any()
        assert rel_err(ours, theirs) < 1e-5


@pytest.mark.parametrize(
    "dtype, D, L, strided, dropout_p",
    [
        (torch.bfloat16, 64, 24, True, 0.0),
        pytest.param(torch.bfloat16, 64, 60, True, 0.0, marks=slow),  # ~30 s emulated
        (torch.bfloat16, 64, 17, False, 0.2),
        (torch.bfloat16, 64, 9, "misaligned", 0.0),
        pytest.param(torch.float16, 32, 64, False, 0.0, marks=slow),
        pytest.param(torch.bfloat16, 128, 33, False, 0.0, marks=slow),
        pytest.param(torch.float16, 32, 5, False, 0.1, marks=slow),
    ],
    ids=str,
)
def test_emulated_tensor_core_path(emu, dtype, D, L, strided, dropout_p):
    """The L <= 64 WMMA kernels (algo=2): same oracle, dropout stream and padding semantics as the SIMT ones."""
    B, H = 3, 1
    gen = torch.Generator().manual_seed(L + D)
    if strided == "misaligned":
        q, k, v = (torch.randn(B, H, L, D + 1, generator=gen).to(dtype)[..., 1:] for _ in range(3))
    elif strided:
        buf = torch.randn(B, L, 3, H, D, generator=gen).to(dtype)
        q, k, v = (buf[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(B, H, L, D, generator=gen).to(dtype) for _ in range(3))
    grad = torch.randn(B, H, L, D, generator=gen).to(dtype)
    mask = left_padding(B, L, seed=L)
    philox = np.array([1234567, 89], np.int64)
    keep = None
    if dropout_p > 0:
        keep_np = np.zeros((B, H, L, L), np.uint8)
        emu.emu_dropout_mask(B, H, L, ctypes.c_float(dropout_p), ptr(philox), ptr(keep_np))
        keep = torch.from_numpy(keep_np).bool()
    scale = D**-0.5
    out, lse, (dq, dk, dv) = run_attention(emu, q, k, v, mask, scale, dropout_p, philox, grad, algo=2)
    simt = run_attention(emu, q, k, v, mask, scale, dropout_p, philox, grad, algo=1)
    ref, grads = oracle(q, k, v, mask, scale, grad, keep=keep, p=dropout_p)
    for name, x in (("out", out), ("lse", lse), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert not torch.isnan(x).any(), f"{name}: unwritten (NaN) elements"
    assert torch.isinf(lse[0]).all() and torch.all(out[0] == 0)
    for t in (dq, dk, dv):
        assert torch.all(t[0] == 0)
    torch.testing.assert_close(lse, simt[1], rtol=1e-4, atol=1e-4)  # both from fp32 scores
    # tensor cores round P and dS to the storage dtype before the second product: low-precision tolerance
    lows = [t.clone().requires_grad_() for t in (q, k, v)]
    if dropout_p == 0:
        low = attention_reference(*lows, mask)
        low.backward(grad)
        assert rel_err(out, ref) <= 2 * rel_err(low.detach(), ref) + 1e-3
        for ours, theirs, torch_low in zip((dq, dk, dv), grads, lows):
            assert rel_err(ours, theirs) <= 2 * rel_err(torch_low.grad, theirs) + 1e-3
    else:
        assert rel_err(out, ref) < 2e-2
        for ours, theirs in zip((dq, dk, dv), grads):
            assert rel_err(ours, theirs) < 3e-2
