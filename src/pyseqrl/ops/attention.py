"""Causal self-attention with a key padding mask: fused CUDA kernel, torch fallback, transformers integration.

Decision Transformers attend over short, left-padded sequences (3K ~ 60 tokens). PyTorch's flash kernel refuses an
explicit mask and its other kernels are tuned for long sequences, so pyseqrl ships its own kernel
(csrc/kernels/attention_*.cu) with the exact semantics DT needs:

* query ``i`` attends to key ``j`` when ``j <= i`` and ``key_padding_mask[b, j]`` is true;
* a query with no such key (a left-padded position) outputs zeros and gets zero gradient (never NaN).

:func:`causal_attention` picks the kernel when it applies (CUDA tensors, fp32/bf16/fp16, head dim 32/64/128,
L <= 512) and otherwise runs :func:`attention_reference` (torch SDPA with the same mask). On sm_80+ GPUs,
bf16/fp16 with L <= 64 (the DT case) run on tensor cores, with one CTA per (batch, head). Everything else runs
SIMT kernels with fp32 accumulation. See :data:`KERNEL_ALGO`. Importing this module
registers ``attn_implementation="pyseqrl"`` with transformers, so a GPT-2 backbone uses the kernel by name::

    import pyseqrl.ops.attention  # registers "pyseqrl"
    model = GPT2Model(config, attn_implementation="pyseqrl")   # or model.set_attn_implementation("pyseqrl")
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from pyseqrl.ops import _cuda

logger = logging.getLogger(__name__)

__all__ = [
    "attention_math",
    "attention_reference",
    "causal_attention",
    "dropout_keep_mask",
    "kernel_rejection",
    "pyseqrl_attention_forward",
    "register_transformers_attention",
]

HEAD_DIMS = (32, 64, 128)
MAX_LEN = 512
KERNEL_ALGO = 0
"""Which CUDA kernels :func:`causal_attention` uses: 0 automatic (tensor cores for L <= 64 in bf16/fp16 on sm_80+,
SIMT otherwise), 1 always SIMT, 2 always tensor cores (errors where they do not apply). For benchmarks and tests."""


# ---------------------------------------------------------------------------------------------- pure torch paths


def _allowed(L: int, key_padding_mask: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Bool [B or 1, 1, L, L]: query i may attend to key j (causal and not padded)."""
    allowed = torch.ones(L, L, dtype=torch.bool, device=device).tril()[None, None]  # (1, 1, L, L)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.to(device=device, dtype=torch.bool)[:, None, None, :]  # (B, 1, L, L)
    return allowed


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Masked causal attention with torch SDPA; rows with nothing to attend to give zeros (the kernel's semantics).

    Args:
        q, k, v: [B, H, L, D], any float dtype and device.
        key_padding_mask: [B, L] (bool, or numbers where nonzero means "attend"), or None.
        scale: multiplies q.k; default ``D ** -0.5``.
        dropout_p: attention dropout (SDPA's own RNG).

    Returns:
        [B, H, L, D] in q's dtype.
    """
    L = q.shape[-2]
    allowed = _allowed(L, key_padding_mask, q.device)
    row_ok = allowed.any(-1, keepdim=True)  # (B, 1, L, 1): the query has at least one key
    # Empty rows attend everywhere (finite softmax) and are zeroed afterwards, which also zeroes their gradient.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~row_ok, dropout_p=dropout_p, scale=scale)
    return out.masked_fill(~row_ok, 0.0)


def attention_math(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    keep: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Explicit softmax(QK^T) V with an optional given dropout keep-mask: the oracle for tests (use float64).

    Args:
        q, k, v: [B, H, L, D].
        key_padding_mask: [B, L] or None.
        scale: default ``D ** -0.5``.
        keep: bool/uint8 [B, H, L, L] dropout keep-mask (see :func:`dropout_keep_mask`) or None.
        dropout_p: the drop probability ``keep`` was drawn with (kept weights are scaled by 1 / (1 - p)).

    Returns:
        [B, H, L, D] in q's dtype.
    """
    L, D = q.shape[-2], q.shape[-1]
    scale = D**-0.5 if scale is None else scale
    allowed = _allowed(L, key_padding_mask, q.device)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, L, L)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # empty rows: all -inf -> NaN -> 0
    if keep is not None:
        probs = probs * keep.to(probs.dtype) / (1.0 - dropout_p)
    return probs @ v


# ---------------------------------------------------------------------------------------------- the CUDA kernel


def kernel_rejection(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> str | None:
    """Why the CUDA kernel cannot take these inputs (a readable reason), or None when it can.

    Shape and dtype problems are reported before the device, so the message is informative on any machine.
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        return (
            f"expected q, k, v of one shape [B, H, L, D] (self-attention without a cache), got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    B, H, L, D = q.shape
    if q.dtype not in _cuda.DTYPE_CODES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"expected q, k, v all float32, bfloat16 or float16, got {q.dtype}, {k.dtype}, {v.dtype}"
    if D not in HEAD_DIMS:
        return f"expected head dim D in {HEAD_DIMS}, got {D}"
    if not 1 <= L <= MAX_LEN:
        return f"expected 1 <= L <= {MAX_LEN}, got L={L}"
    if B * H == 0:
        return f"expected B, H >= 1, got B={B}, H={H}"
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, L):
        return f"expected key_padding_mask of shape (B, L) = {(B, L)}, got {tuple(key_padding_mask.shape)}"
    devices = {t.device for t in (q, k, v)} | ({key_padding_mask.device} if key_padding_mask is not None else set())
    if len(devices) != 1 or q.device.type != "cuda":
        return f"expected all tensors on one CUDA device, got {sorted(str(d) for d in devices)}"
    if not _cuda.compiled_with_cuda():
        return "pyseqrl was built without CUDA kernels (pyseqrl._core.with_cuda is False)"
    return None


def _last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _tensor_arg(t: torch.Tensor) -> tuple[int, int, int, int]:
    """(data_ptr, stride_b, stride_h, stride_l) of a [B, H, L, D] tensor, as the bindings take it."""
    return (t.data_ptr(), t.stride(0), t.stride(1), t.stride(2))


def _mask_bytes(key_padding_mask: torch.Tensor | None) -> tuple[torch.Tensor | None, int, int]:
    """(uint8 [B, L] tensor or None, its data pointer or 0, its batch stride) without copying a bool mask."""
    if key_padding_mask is None:
        return None, 0, 0
    m = key_padding_mask
    if m.dtype == torch.bool and m.stride(-1) == 1:
        m = m.view(torch.uint8)
    else:
        m = (m != 0).to(torch.uint8)
    return m, m.data_ptr(), m.stride(0)


class _CausalAttentionFunction(torch.autograd.Function):
    """Autograd wrapper of the fused kernels; inputs are validated by :func:`causal_attention`."""

    @staticmethod
    def forward(ctx: Any, q, k, v, key_padding_mask, scale: float, dropout_p: float):  # type: ignore[override]
        ops = _cuda.kernels()
        q, k, v = (_last_dim_contiguous(t) for t in (q, k, v))
        B, H, L, D = q.shape
        # The output lives as [B, L, H, D] (what GPT-2 consumes next) and is returned as a [B, H, L, D] view.
        out = torch.empty(B, L, H, D, device=q.device, dtype=q.dtype).transpose(1, 2)  # (B, H, L, D) view
        lse = torch.empty(B, H, L, device=q.device, dtype=torch.float32)
        mask_u8, mask_ptr, mask_stride = _mask_bytes(key_padding_mask)
        philox = None
        if dropout_p > 0.0:
            # [seed, offset] drawn on the device from torch's generator: reproducible, and safe under CUDA graphs.
            philox = torch.randint(0, 2**62, (2,), device=q.device, dtype=torch.int64)
        device = _cuda.device_index(q.device)
        ops.attention_forward(
            q=_tensor_arg(q),
            k=_tensor_arg(k),
            v=_tensor_arg(v),
            out=_tensor_arg(out),
            lse=lse.data_ptr(),
            key_mask=mask_ptr,
            mask_stride_b=mask_stride,
            B=B,
            H=H,
            L=L,
            D=D,
            dtype=_cuda.DTYPE_CODES[q.dtype],
            scale=scale,
            dropout_p=dropout_p,
            philox=0 if philox is None else philox.data_ptr(),
            stream=_cuda.stream_handle(q.device),
            device=device,
            algo=KERNEL_ALGO,
        )
        ctx.save_for_backward(q, k, v, out, lse, mask_u8, philox)
        ctx.scale, ctx.dropout_p, ctx.mask_stride, ctx.algo = scale, dropout_p, mask_stride, KERNEL_ALGO
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        ops = _cuda.kernels()
        q, k, v, out, lse, mask_u8, philox = ctx.saved_tensors
        grad_out = _last_dim_contiguous(grad_out)
        B, H, L, D = q.shape
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        delta = torch.empty(B, H, L, device=q.device, dtype=torch.float32)
        ops.attention_backward(
            q=_tensor_arg(q),
            k=_tensor_arg(k),
            v=_tensor_arg(v),
            out=_tensor_arg(out),
            grad_out=_tensor_arg(grad_out),
            grad_q=_tensor_arg(dq),
            grad_k=_tensor_arg(dk),
            grad_v=_tensor_arg(dv),
            lse=lse.data_ptr(),
            delta=delta.data_ptr(),
            key_mask=0 if mask_u8 is None else mask_u8.data_ptr(),
            mask_stride_b=ctx.mask_stride,
            B=B,
            H=H,
            L=L,
            D=D,
            dtype=_cuda.DTYPE_CODES[q.dtype],
            scale=ctx.scale,
            dropout_p=ctx.dropout_p,
            philox=0 if philox is None else philox.data_ptr(),
            stream=_cuda.stream_handle(q.device),
            device=_cuda.device_index(q.device),
            algo=ctx.algo,
        )
        return dq, dk, dv, None, None, None


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal self-attention with a key padding mask (left-padded rows give zeros).

    Args:
        q, k, v: [B, H, L, D]; the last dimension should be contiguous (other strides are free, so the transposed
            views GPT-2 makes are used in place).
        key_padding_mask: [B, L], True (or nonzero) where the key is a real token; None for no padding.
        scale: multiplies q.k; default ``D ** -0.5``.
        dropout_p: probability of dropping an attention weight (training only; pass 0.0 in eval).
        backend: ``"auto"`` (kernel when it applies, else torch), ``"kernel"`` (ValueError when it does not
            apply) or ``"torch"`` (:func:`attention_reference`).

    Returns:
        [B, H, L, D] in q's dtype. From the kernel it is a view of a [B, L, H, D] tensor.

    Example:
        >>> q = k = v = torch.randn(2, 4, 6, 32)
        >>> mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6], dtype=torch.bool)
        >>> causal_attention(q, k, v, mask).shape
        torch.Size([2, 4, 6, 32])
    """
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f"backend: expected 'auto', 'kernel' or 'torch', got {backend!r}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")
    if q.dim() != 4:
        raise ValueError(f"q: expected a 4-D tensor [B, H, L, D], got shape {tuple(q.shape)}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale}")
    if backend != "torch":
        reason = kernel_rejection(q, k, v, key_padding_mask)
        if reason is None:
            return _CausalAttentionFunction.apply(q, k, v, key_padding_mask, scale, float(dropout_p))
        if backend == "kernel":
            raise ValueError(f"causal_attention(backend='kernel'): the CUDA kernel does not apply: {reason}")
    return attention_reference(q, k, v, key_padding_mask, scale=scale, dropout_p=dropout_p)


def dropout_keep_mask(B: int, H: int, L: int, dropout_p: float, philox: torch.Tensor) -> torch.Tensor:
    """The kernels' dropout keep-mask, bool [B, H, L, L], for the [seed, offset] int64 CUDA tensor ``philox``."""
    if philox.dtype != torch.int64 or philox.shape != (2,) or philox.device.type != "cuda":
        raise ValueError(
            f"philox: expected an int64 CUDA tensor of shape (2,), got {philox.dtype} {philox.shape} on {philox.device}"
        )
    out = torch.empty(B, H, L, L, dtype=torch.uint8, device=philox.device)
    _cuda.kernels().attention_dropout_mask(
        B=B,
        H=H,
        L=L,
        dropout_p=float(dropout_p),
        philox=philox.data_ptr(),
        out=out.data_ptr(),
        stream=_cuda.stream_handle(philox.device),
        device=_cuda.device_index(philox.device),
    )
    return out.bool()


# ---------------------------------------------------------------------------------------------- transformers


def _mask_2d_for_transformers(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """transformers mask hook for "pyseqrl": pass the 2-D key padding mask through (bool [B, kv_length] or None).

    Unlike transformers' flash-attention hook it never checks ``mask.all()`` (a host sync that breaks CUDA graphs).
    """
    if attention_mask is None:
        return None
    return attention_mask[:, -kv_length:]


def pyseqrl_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface ("pyseqrl"): kernel for causal self-attention, SDPA otherwise.

    Args:
        module: the attention module (GPT2Attention); ``module.is_causal`` is False for cross-attention.
        query, key, value: [B, H, Lq, D] / [B, H, Lk, D].
        attention_mask: from the "pyseqrl" mask hook: bool [B, Lk] key padding mask or None; a 4-D mask prepared
            by the caller is handed to SDPA unchanged.
        dropout: attention dropout probability.
        scaling: multiplies q.k.

    Returns:
        (attention output [B, Lq, H, D], None).
    """
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if key.shape[1] != query.shape[1]:  # grouped-query attention (Llama, Qwen2): one K/V head per query group
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    mask_2d = attention_mask is None or attention_mask.dim() == 2
    if causal and mask_2d and query.shape[-2] == key.shape[-2]:
        out = causal_attention(query, key, value, attention_mask, scale=scaling, dropout_p=dropout)
        return out.transpose(1, 2), None  # (B, L, H, D); contiguous when the kernel ran
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if attention_mask is not None and attention_mask.dim() == 2:
        # Decoding with a cache (Lq < Lk) or non-causal use: expand to the 4-D bool mask SDPA expects.
        Lq, Lk = query.shape[-2], key.shape[-2]
        allowed = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Lk)
        if causal:
            q_pos = torch.arange(Lk - Lq, Lk, device=query.device)[:, None]  # (Lq, 1)
            allowed = allowed & (torch.arange(Lk, device=query.device)[None, :] <= q_pos)  # (B, 1, Lq, Lk)
        attention_mask = allowed
    return sdpa_attention_forward(
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=dropout,
        scaling=scaling,
        is_causal=is_causal,
        **kwargs,
    )


_REGISTERED = False


def register_transformers_attention(name: str = "pyseqrl") -> None:
    """Register :func:`pyseqrl_attention_forward` (and its mask hook) with transformers under ``name``."""
    global _REGISTERED
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(name, pyseqrl_attention_forward)
    AttentionMaskInterface.register(name, _mask_2d_for_transformers)
    _REGISTERED = True
    logger.debug("registered attn_implementation=%r with transformers", name)


try:  # registering is cheap; without transformers the functional API still works
    register_transformers_attention()
except ImportError:  # pragma: no cover - transformers is an optional dependency
    pass
