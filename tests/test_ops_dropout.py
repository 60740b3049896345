"""ops.dropout: the native keep-mask against a plain reference, dropout's statistics and gradients, and the swap
of a backbone's nn.Dropout modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pyseqrl._native import core
from pyseqrl.ops.dropout import Dropout, dropout, use_native_dropout

M64 = (1 << 64) - 1
DROPOUT_STREAM = 0xD50D0D0D0D0D0D0D


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def reference_keep_mask(n: int, keep_prob: float, seed: int) -> np.ndarray:
    """The documented rule, one element at a time in Python integers."""
    key = _splitmix64(_splitmix64(seed ^ 0x5851F42D4C957F2D) ^ DROPOUT_STREAM)
    threshold = round(keep_prob * 2**32)
    out = np.empty(n, np.uint8)
    for i in range(n):
        bits = _splitmix64(key ^ (((i // 2) * 0x2545F4914F6CDD1D) & M64))
        half = bits & 0xFFFFFFFF if i % 2 == 0 else bits >> 32
        out[i] = half < threshold
    return out


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 301), keep_prob=st.floats(0.0, 1.0), seed=st.integers(0, 2**64 - 1))
def test_native_mask_matches_the_reference(n: int, keep_prob: float, seed: int) -> None:
    out = np.full(n, 7, np.uint8)
    core.dropout_keep_mask(out, keep_prob, seed)
    np.testing.assert_array_equal(out, reference_keep_mask(n, keep_prob, seed))


@pytest.mark.parametrize("keep_prob", [0.1, 0.5, 0.9])
def test_native_mask_keeps_the_right_fraction(keep_prob: float) -> None:
    n = 1 << 20
    out = np.empty(n, np.uint8)
    core.dropout_keep_mask(out, keep_prob, 123)
    sd = np.sqrt(keep_prob * (1 - keep_prob) / n)
    assert abs(out.mean() - keep_prob) < 5 * sd
    # neighbours (the two halves of one hash) are not correlated
    a, b = out[0::2].astype(float), out[1::2].astype(float)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n / 2)
    other = np.empty(n, np.uint8)
    core.dropout_keep_mask(other, keep_prob, 124)
    assert (out != other).mean() > 0.5 * 2 * keep_prob * (1 - keep_prob)


def test_native_mask_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="out: expected dtype uint8, got float32"):
        core.dropout_keep_mask(np.zeros(4, np.float32), 0.5, 0)
    with pytest.raises(ValueError, match=r"keep_prob must be in \[0, 1\], got 1.5"):
        core.dropout_keep_mask(np.zeros(4, np.uint8), 1.5, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        core.dropout_keep_mask(np.zeros(8, np.uint8)[::2], 0.5, 0)
    with pytest.raises(ValueError, match="writable"):
        frozen = np.zeros(4, np.uint8)
        frozen.flags.writeable = False
        core.dropout_keep_mask(frozen, 0.5, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_dropout_values_and_gradient(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    p = 0.25
    x = (torch.rand(64, 60, 33) + 0.5).to(dtype).requires_grad_()
    y = dropout(x, p)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 0.01
    torch.testing.assert_close(y[kept], (x * (1 / (1 - p))).to(dtype)[kept])
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, g * kept * (1 / (1 - p)))


def test_dropout_follows_torch_seed_and_modes() -> None:
    x = torch.randn(10, 100)
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    b = dropout(x, 0.3)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, dropout(x, 0.3))  # the generator moved on
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\], got 1.5"):
        dropout(x, 1.5)
    with pytest.raises(ValueError, match="got -0.1"):
        Dropout(-0.1)


def test_use_native_dropout_swaps_modules_and_keeps_the_model() -> None:
    from pyseqrl.models import backbone as bb

    torch.manual_seed(0)
    lm = bb.load_causal_lm("", None, "sdpa", config=bb.random_gpt2_config(32, 2, 2, "relu", 0.1, 64))
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    n_dropout = sum(type(m) is nn.Dropout for m in lm.modules())
    assert n_dropout > 0
    assert use_native_dropout(lm) == n_dropout
    assert not any(type(m) is nn.Dropout for m in lm.modules())
    assert all(m.p == 0.1 for m in lm.modules() if isinstance(m, Dropout))
    after = lm.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    ids = torch.randint(0, lm.config.vocab_size, (2, 9))
    lm.train()
    torch.manual_seed(1)
    t1 = lm(ids).logits
    torch.manual_seed(1)
    torch.testing.assert_close(lm(ids).logits, t1)  # reproducible under torch's seed


def test_decision_transformer_uses_native_dropout() -> None:
    from pyseqrl.models import DecisionTransformer, DTConfig

    model = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, context_len=4, hidden_size=16, n_layer=1, n_head=1))
    assert any(isinstance(m, Dropout) for m in model.modules())
    assert not any(type(m) is nn.Dropout for m in model.modules())
