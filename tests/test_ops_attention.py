"""pyseqrl.ops.attention: the torch fallback and validation everywhere, the CUDA kernel on a GPU.

Oracle: explicit softmax(QK^T)V in float64 (attention_math). GPU tests carry the `gpu` marker; conftest skips them
without CUDA, and they also skip when pyseqrl was built without its kernels.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyseqrl.ops import _cuda
from pyseqrl.ops.attention import (
    attention_math,
    attention_reference,
    causal_attention,
    dropout_keep_mask,
    kernel_rejection,
)

needs_kernels = pytest.mark.skipif(not _cuda.compiled_with_cuda(), reason="pyseqrl built without CUDA kernels")


def left_padding_mask(B: int, L: int, gen: torch.Generator, fully_padded_row: bool = True) -> torch.Tensor:
    """bool [B, L]: each row starts with a random number of padded keys; row 0 may be all padding."""
    pads = torch.randint(0, L + 1, (B,), generator=gen)
    if fully_padded_row:
        pads[0] = L
    return torch.arange(L)[None, :] >= pads[:, None]


def random_qkv(B, H, L, D, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=gen, dtype=torch.float64) for _ in range(3))
    return [t.to(device=device, dtype=dtype) for t in (q, k, v)]


# ------------------------------------------------------------------------------------------------- CPU: reference


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 3),
    H=st.integers(1, 3),
    L=st.integers(1, 20),
    D=st.sampled_from([4, 8, 32]),
    seed=st.integers(0, 2**16),
    masked=st.booleans(),
)
def test_reference_matches_math_oracle(B, H, L, D, seed, masked):
    q, k, v = random_qkv(B, H, L, D, seed=seed)
    mask = left_padding_mask(B, L, torch.Generator().manual_seed(seed)) if masked else None
    ref = attention_reference(q, k, v, mask)
    oracle = attention_math(q, k, v, mask)
    assert not torch.isnan(ref).any()
    torch.testing.assert_close(ref, oracle, rtol=1e-10, atol=1e-10)
    if masked:  # row 0 is fully padded: zeros
        assert torch.all(ref[0] == 0)


def test_reference_gradients_zero_on_padding():
    B, H, L, D = 3, 2, 9, 8
    q, k, v = (t.requires_grad_() for t in random_qkv(B, H, L, D, seed=1))
    mask = left_padding_mask(B, L, torch.Generator().manual_seed(1))
    out = attention_reference(q, k, v, mask)
    out.square().sum().backward()
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all()
    assert torch.all(q.grad[0] == 0) and torch.all(k.grad[0] == 0) and torch.all(v.grad[0] == 0)
    padded_keys = ~mask[:, None, :, None].expand(B, H, L, D)
    assert torch.all(k.grad[padded_keys] == 0) and torch.all(v.grad[padded_keys] == 0)
    # gradients agree with the float64 oracle's
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    attention_math(q2, k2, v2, mask).square().sum().backward()
    for a, b in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_causal_attention_falls_back_on_cpu():
    q, k, v = random_qkv(2, 2, 12, 32, dtype=torch.float32, seed=2)
    mask = left_padding_mask(2, 12, torch.Generator().manual_seed(2))
    out = causal_attention(q, k, v, mask)
    torch.testing.assert_close(out, attention_reference(q, k, v, mask))
    assert kernel_rejection(q, k, v, mask).startswith("expected all tensors on one CUDA device")
    with pytest.raises(ValueError, match="CUDA kernel does not apply.*CUDA device"):
        causal_attention(q, k, v, mask, backend="kernel")


@pytest.mark.parametrize(
    "shape_q, shape_kv, dtype, mask_shape, match",
    [
        ((2, 2, 8, 48), (2, 2, 8, 48), torch.float32, None, r"head dim D in \(32, 64, 128\), got 48"),
        ((1, 1, 600, 32), (1, 1, 600, 32), torch.float32, None, r"1 <= L <= 512, got L=600"),
        (
            (2, 2, 8, 32),
            (2, 2, 8, 32),
            torch.float64,
            None,
            "float32, bfloat16 or float16, got torch.float64",
        ),
        ((2, 2, 1, 32), (2, 2, 8, 32), torch.float32, None, "one shape"),
        (
            (2, 2, 8, 32),
            (2, 2, 8, 32),
            torch.float32,
            (2, 7),
            r"key_padding_mask of shape \(B, L\) = \(2, 8\)",
        ),
    ],
)
def test_kernel_rejection_reasons(shape_q, shape_kv, dtype, mask_shape, match):
    q = torch.zeros(shape_q, dtype=dtype)
    k = v = torch.zeros(shape_kv, dtype=dtype)
    mask = None if mask_shape is None else torch.ones(mask_shape, dtype=torch.bool)
    reason = kernel_rejection(q, k, v, mask)
    assert reason is not None
    assert re.search(match, reason), reason


def test_causal_attention_argument_errors():
    q = torch.zeros(1, 1, 4, 32)
    with pytest.raises(ValueError, match="backend: expected"):
        causal_attention(q, q, q, backend="triton")
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\), got 1.0"):
        causal_attention(q, q, q, dropout_p=1.0)
    with pytest.raises(ValueError, match="4-D tensor"):
        causal_attention(q[0], q[0], q[0])


# ------------------------------------------------------------------------------------------------- CPU: transformers


def tiny_gpt2(impl: str, seed: int = 0, n_embd: int = 64, n_head: int = 2):
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(
        n_embd=n_embd,
        n_layer=2,
        n_head=n_head,
        n_positions=128,
        vocab_size=1,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    cfg._attn_implementation = impl
    torch.manual_seed(seed)
    return GPT2Model(cfg).eval()


def test_gpt2_uses_registered_implementation(monkeypatch):
    import pyseqrl.ops.attention as attn

    calls = []
    real = attn.causal_attention
    monkeypatch.setattr(attn, "causal_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref, ours = tiny_gpt2("sdpa"), tiny_gpt2("pyseqrl")
    assert ours.config._attn_implementation == "pyseqrl"
    x = torch.randn(3, 10, 64)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[0, :4] = 0
    mask[1, :1] = 0
    with torch.no_grad():
        a = ref(inputs_embeds=x, attention_mask=mask).last_hidden_state
        b = ours(inputs_embeds=x, attention_mask=mask).last_hidden_state
    assert len(calls) == 2  # one per layer
    assert not torch.isnan(b).any()
    torch.testing.assert_close(b[mask.bool()], a[mask.bool()], rtol=1e-5, atol=1e-5)


def test_gpt2_set_attn_implementation_and_cached_decoding():
    ref, ours = tiny_gpt2("eager"), tiny_gpt2("eager")
    ours.set_attn_implementation("pyseqrl")
    x = torch.randn(2, 7, 64)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :2] = 0
    with torch.no_grad():  # prefill 6 tokens, then decode the 7th with the cache (q_len 1 < kv_len 7: SDPA path)
        outs = []
        for model in (ref, ours):
            first = model(inputs_embeds=x[:, :6], attention_mask=mask[:, :6], use_cache=True)
            step = model(inputs_embeds=x[:, 6:], attention_mask=mask, cache=first.cache)
            outs.append(step.last_hidden_state)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_decision_transformer_with_pyseqrl_attention_matches_at_real_steps():
    from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
    from pyseqrl.ops.graphed_step import use_pyseqrl_attention

    cfg = DTConfig(state_dim=3, act_dim=2, context_len=5, hidden_size=32, n_layer=2, n_head=1, dropout=0.0)
    torch.manual_seed(0)
    base = DecisionTransformer(cfg).eval()
    fused = DecisionTransformer(cfg).eval()
    fused.load_state_dict(base.state_dict())
    use_pyseqrl_attention(fused)
    B, K = 3, 5
    s, a, r = torch.randn(B, K, 3), torch.randn(B, K, 2), torch.randn(B, K, 1)
    t = torch.randint(0, 100, (B, K))
    mask = torch.ones(B, K)
    mask[0, :2] = 0
    mask[2, :4] = 0
    with torch.no_grad():
        p0, p1 = base(s, a, r, t, mask), fused(s, a, r, t, mask)
    torch.testing.assert_close(p1[mask.bool()], p0[mask.bool()], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- GPU: the kernel

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def max_rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12)).item()


def check_close_to_oracle(x: torch.Tensor, ref64: torch.Tensor, torch_same_dtype: torch.Tensor, dtype) -> None:
    """fp32: ~1e-5 relative; bf16/fp16: at most ~2x the error torch itself makes in the same precision."""
    assert torch.isfinite(x).all()
    err = max_rel_err(x, ref64)
    if dtype == torch.float32:
        assert err <= 2e-5, err
    else:
        torch_err = max_rel_err(torch_same_dtype, ref64)
        assert err <= 2.0 * torch_err + 1e-3, (err, torch_err)


def shapes_for_gpu_tests():
    rng = np.random.default_rng(1234)
    out = [(2, 3, 60, 64), (1, 1, 1, 32), (3, 2, 17, 128), (2, 1, 512, 64)]
    for _ in range(4):  # fresh random shapes
        out.append(
            (
                int(rng.integers(1, 5)),
                int(rng.integers(1, 5)),
                int(rng.integers(1, 200)),
                int(rng.choice([32, 64, 128])),
            )
        )
    return out


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", shapes_for_gpu_tests(), ids=str)
@pytest.mark.parametrize("strided", [False, True], ids=["contiguous", "gpt2_views"])
def test_kernel_forward_backward_vs_float64(shape, dtype, strided):
    B, H, L, D = shape
    q64, k64, v64 = random_qkv(B, H, L, D, device="cuda", seed=L * 7 + D)
    mask = left_padding_mask(B, L, torch.Generator().manual_seed(L)).cuda()
    if strided:  # the layout GPT-2 hands over: a [B, L, 3, H, D] buffer seen as three [B, H, L, D] views
        buf = torch.stack([q64, k64, v64], dim=2).permute(0, 3, 2, 1, 4).contiguous()  # (B, L, 3, H, D)
        q, k, v = (buf.to(dtype)[:, :, i].transpose(1, 2) for i in range(3))  # strided (B, H, L, D) views
    else:
        q, k, v = (t.to(dtype) for t in (q64, k64, v64))
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = causal_attention(q, k, v, mask, backend="kernel")
    grad = torch.randn_like(out)
    out.backward(grad)

    refs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = attention_math(*refs, mask)
    ref.backward(grad.double())
    lows = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    low = attention_reference(*lows, mask)  # torch in the same precision
    low.backward(grad)

    check_close_to_oracle(out, ref.detach(), low.detach(), dtype)
    for ours, oracle, theirs in zip((q, k, v), refs, lows):
        check_close_to_oracle(ours.grad, oracle.grad, theirs.grad, dtype)
    # fully padded row 0: zero output and zero gradients
    assert torch.all(out[0] == 0) and torch.all(q.grad[0] == 0) and torch.all(k.grad[0] == 0)


def call_raw(q, k, v, mask, scale, dropout_p=0.0, philox=None, fill=float("nan"), algo=0):
    """Raw kernel calls with every output pre-filled with ``fill`` (poisoned), returning out, lse, dq, dk, dv."""
    from pyseqrl.ops.attention import _mask_bytes, _tensor_arg

    ops = _cuda.kernels()
    B, H, L, D = q.shape
    out = torch.full_like(q, fill)
    lse = torch.full((B, H, L), fill, device=q.device)
    _m, mptr, mstride = _mask_bytes(mask)
    common = {
        "key_mask": mptr,
        "mask_stride_b": mstride,
        "B": B,
        "H": H,
        "L": L,
        "D": D,
        "dtype": _cuda.DTYPE_CODES[q.dtype],
        "scale": scale,
        "dropout_p": dropout_p,
        "philox": 0 if philox is None else philox.data_ptr(),
        "stream": _cuda.stream_handle(q.device),
        "device": _cuda.device_index(q.device),
        "algo": algo,
    }
    ops.attention_forward(
        q=_tensor_arg(q),
        k=_tensor_arg(k),
        v=_tensor_arg(v),
        out=_tensor_arg(out),
        lse=lse.data_ptr(),
        **common,
    )
    g = torch.randn_like(q)
    dq, dk, dv = (torch.full_like(q, fill) for _ in range(3))
    delta = torch.full((B, H, L), fill, device=q.device)
    ops.attention_backward(
        q=_tensor_arg(q),
        k=_tensor_arg(k),
        v=_tensor_arg(v),
        out=_tensor_arg(out),
        grad_out=_tensor_arg(g),
        grad_q=_tensor_arg(dq),
        grad_k=_tensor_arg(dk),
        grad_v=_tensor_arg(dv),
        lse=lse.data_ptr(),
        delta=delta.data_ptr(),
        **common,
    )
    torch.cuda.synchronize()
    return out, lse, dq, dk, dv, g


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("L", [1, 15, 16, 17, 60, 100])
def test_kernel_writes_every_element_no_nan(L, D):
    q, k, v = random_qkv(3, 2, L, D, dtype=torch.float32, device="cuda", seed=L)
    mask = left_padding_mask(3, L, torch.Generator().manual_seed(L)).cuda()
    out, lse, dq, dk, dv, _ = call_raw(q, k, v, mask, D**-0.5)
    for t in (out, dq, dk, dv):
        assert not torch.isnan(t).any()
    assert not torch.isnan(lse).any()
    assert torch.isinf(lse[0]).all()  # the fully padded row: +inf log-sum-exp, zeros elsewhere
    assert torch.all(out[0] == 0) and torch.all(dq[0] == 0) and torch.all(dk[0] == 0) and torch.all(dv[0] == 0)
    out_ref = attention_math(q.double(), k.double(), v.double(), mask)
    assert max_rel_err(out, out_ref) < 2e-5


def philox4x32_10_numpy(c: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """Random123's Philox4x32-10 on a uint32 [n, 4] counter array with key (k0, k1); returns the first word."""
    c = c.astype(np.uint64)
    k0, k1 = np.uint64(k0), np.uint64(k1)
    m32 = np.uint64(0xFFFFFFFF)
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[:, 0]
        p1 = np.uint64(0xCD9E8D57) * c[:, 2]
        c = np.stack(
            [(p1 >> np.uint64(32)) ^ c[:, 1] ^ k0, p1 & m32, (p0 >> np.uint64(32)) ^ c[:, 3] ^ k1, p0 & m32],
            axis=1,
        )
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & m32, (k1 + np.uint64(0xBB67AE85)) & m32
    return c[:, 0].astype(np.uint32)


@pytest.mark.gpu
@needs_kernels
def test_dropout_mask_is_philox_and_has_the_right_rate():
    B, H, L, p = 2, 3, 40, 0.3
    philox = torch.tensor([123456789012345, 77], dtype=torch.int64, device="cuda")
    keep = dropout_keep_mask(B, H, L, p, philox).cpu().numpy()
    bh, i, j = np.meshgrid(np.arange(B * H), np.arange(L), np.arange(L), indexing="ij")
    seed, offset = 123456789012345, 77
    counters = np.stack(
        [
            (i * L + j).ravel(),
            bh.ravel(),
            np.full(bh.size, offset & 0xFFFFFFFF),
            np.full(bh.size, offset >> 32),
        ],
        axis=1,
    ).astype(np.uint64)
    words = philox4x32_10_numpy(counters, seed & 0xFFFFFFFF, seed >> 32)
    expected = words >= np.uint32(int(p * 2**32))
    np.testing.assert_array_equal(keep.reshape(-1), expected)
    assert abs(keep.mean() - (1 - p)) < 0.02


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_kernel_dropout_matches_oracle_with_the_same_mask(dtype):
    B, H, L, D, p = 2, 2, 60, 64, 0.2
    q, k, v = (t.to(dtype).requires_grad_() for t in random_qkv(B, H, L, D, device="cuda", seed=5))
    mask = left_padding_mask(B, L, torch.Generator().manual_seed(5)).cuda()
    torch.manual_seed(11)
    out = causal_attention(q, k, v, mask, dropout_p=p, backend="kernel")
    grad = torch.randn_like(out)
    out.backward(grad)
    torch.manual_seed(11)  # the autograd function draws [seed, offset] first: redraw them
    philox = torch.randint(0, 2**62, (2,), device="cuda", dtype=torch.int64)
    keep = dropout_keep_mask(B, H, L, p, philox)
    refs = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = attention_math(*refs, mask, keep=keep, dropout_p=p)
    ref.backward(grad.double())
    tol = 2e-5 if dtype == torch.float32 else 3e-2
    assert max_rel_err(out, ref) < tol
    for ours, oracle in zip((q, k, v), refs):
        assert max_rel_err(ours.grad, oracle.grad) < tol * 2


@pytest.mark.gpu
@needs_kernels
def test_kernel_on_side_stream_and_in_cuda_graph():
    B, H, L, D = 4, 2, 60, 64
    q, k, v = random_qkv(B, H, L, D, dtype=torch.float32, device="cuda", seed=9)
    mask = left_padding_mask(B, L, torch.Generator().manual_seed(9)).cuda()
    expected = attention_math(q.double(), k.double(), v.double(), mask)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = causal_attention(q, k, v, mask, backend="kernel")
    torch.cuda.current_stream().wait_stream(side)
    assert max_rel_err(out, expected) < 2e-5
    static_q = q.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = causal_attention(static_q, k, v, mask, backend="kernel")
    static_q.copy_(q * 0.5)
    graph.replay()
    torch.cuda.synchronize()
    expected_half = attention_math(q.double() * 0.5, k.double(), v.double(), mask)
    assert max_rel_err(static_out, expected_half) < 2e-5


@pytest.mark.gpu
@needs_kernels
def test_gpt2_on_gpu_matches_sdpa_at_real_positions():
    ref, ours = (
        tiny_gpt2("sdpa", n_embd=128, n_head=2).cuda(),
        tiny_gpt2("pyseqrl", n_embd=128, n_head=2).cuda(),
    )
    x = torch.randn(4, 60, 128, device="cuda")
    mask = torch.ones(4, 60, dtype=torch.long, device="cuda")
    mask[0, :30] = 0
    mask[1, :59] = 0
    with torch.no_grad():
        a = ref(inputs_embeds=x, attention_mask=mask).last_hidden_state
        b = ours(inputs_embeds=x, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(b[mask.bool()], a[mask.bool()], rtol=1e-4, atol=1e-4)


@needs_kernels
def test_cuda_submodule_exposes_the_entry_points():
    """Runs on any machine with a CUDA build (no device needed): the names pyseqrl.ops calls exist."""
    ops = _cuda.kernels()
    for name in ("attention_forward", "attention_backward", "attention_dropout_mask", "segment_gather"):
        assert callable(getattr(ops, name)), name
    assert ops.attention_max_len == 512 and tuple(ops.attention_head_dims) == (32, 64, 128)


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("L", [1, 20, 60, 64])
def test_tensor_core_path_matches_simt_and_oracle(dtype, D, L):
    """algo=2 (WMMA, L <= 64) and algo=1 (SIMT) agree with each other and with the float64 oracle."""
    B, H = 4, 3
    q, k, v = random_qkv(B, H, L, D, dtype=dtype, device="cuda", seed=L + D)
    mask = left_padding_mask(B, L, torch.Generator().manual_seed(L)).cuda()
    tc = call_raw(q, k, v, mask, D**-0.5, algo=2)
    simt = call_raw(q, k, v, mask, D**-0.5, algo=1)
    for t in tc[:5]:
        assert not torch.isnan(t).any()
    ref = attention_math(q.double(), k.double(), v.double(), mask)
    low = attention_reference(q, k, v, mask)
    check_close_to_oracle(tc[0], ref, low, dtype)
    check_close_to_oracle(simt[0], ref, low, dtype)
    torch.testing.assert_close(tc[1], simt[1], rtol=1e-4, atol=1e-4)  # lse from fp32 scores in both


@pytest.mark.gpu
@needs_kernels
def test_tensor_core_path_rejects_what_it_cannot_do():
    q = torch.zeros(1, 1, 65, 64, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="algo=2"):
        call_raw(q, q, q, None, 0.125, algo=2)
    q32 = torch.zeros(1, 1, 8, 64, device="cuda")
    with pytest.raises(ValueError, match="algo=2"):
        call_raw(q32, q32, q32, None, 0.125, algo=2)
