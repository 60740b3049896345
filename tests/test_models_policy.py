"""DTPolicy: KV-cache decoding gives the actions of full recomputation; return-to-go bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyseqrl.models import DecisionTransformer, DTConfig, DTPolicy
from pyseqrl.policies.base import Policy

S, A, K = 4, 2, 5


@pytest.fixture(scope="module")
def model() -> DecisionTransformer:
    torch.manual_seed(0)
    return DecisionTransformer(
        DTConfig(
            state_dim=S, act_dim=A, hidden_size=16, n_layer=2, n_head=2, context_len=K, dropout=0.0, max_ep_len=100
        )
    ).eval()


def rollout(policy: DTPolicy, steps: int, n: int, resets: dict[int, list[int]], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    for step in range(steps):
        if step in resets:
            policy.reset(np.array(resets[step]))
        out.append(policy.act(rng.normal(size=(n, policy.S)).astype(np.float32)))
        policy.observe(rng.normal(size=n).astype(np.float32))
    return np.stack(out)


@pytest.mark.parametrize("refresh", [1, 2, K])
def test_cached_actions_equal_full_recompute(model, refresh):
    resets = {3: [1], 7: [0, 2], 8: [2], 13: [1]}  # staggered new episodes
    kw = {
        "target_return": 50.0,
        "return_scale": 10.0,
        "state_mean": np.full(S, 0.1),
        "state_std": np.full(S, 2.0),
        "refresh_every": refresh,
    }
    cached = rollout(DTPolicy(model, use_cache=True, **kw), 20, 3, resets)
    full = rollout(DTPolicy(model, use_cache=False, **kw), 20, 3, resets)
    np.testing.assert_allclose(cached, full, atol=2e-5)


@pytest.mark.parametrize("use_cache, refresh", [(False, 1), (True, 1), (True, 2), (True, K)])
def test_right_padding_gives_the_actions_of_left_padding(model, use_cache, refresh):
    resets = {3: [1], 7: [0, 2], 8: [2], 13: [1]}
    kw = {"target_return": 50.0, "return_scale": 10.0, "refresh_every": refresh, "use_cache": use_cache}
    left = rollout(DTPolicy(model, **kw), 20, 3, resets)
    right = rollout(DTPolicy(model, padding="right", **kw), 20, 3, resets)
    np.testing.assert_allclose(right, left, atol=2e-5)
    assert DTPolicy(model, padding="right", **kw).with_target(1.0).padding == "right"


def test_exact_mode_is_the_original_dt_loop(model):
    """refresh_every=1 without cache equals the DT paper's loop: last K steps, left padded, rtg -= r / scale."""
    n, steps, scale, target = 2, 12, 10.0, 50.0
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(steps, n, S)).astype(np.float32)
    rew = rng.normal(size=(steps, n)).astype(np.float32)
    policy = DTPolicy(model, target, scale, refresh_every=1)
    got = []
    for t in range(steps):
        got.append(policy.act(obs[t]))
        policy.observe(rew[t])
    got = np.stack(got)
    acts = np.zeros((steps, n, A), np.float32)
    for t in range(steps):
        lo = max(0, t - K + 1)
        s = torch.as_tensor(obs[lo : t + 1]).transpose(0, 1)  # (n, T, S)
        a = torch.as_tensor(acts[lo : t + 1]).transpose(0, 1).clone()
        a[:, -1] = 0.0
        rtg = target / scale - np.concatenate([np.zeros((1, n)), np.cumsum(rew, 0)])[lo : t + 1] / scale
        r = torch.as_tensor(rtg, dtype=torch.float32).T[..., None]
        ts = torch.arange(lo, t + 1)[None].repeat(n, 1)
        with torch.no_grad():
            acts[t] = model(s, a, r, ts)[:, -1].numpy()
    np.testing.assert_allclose(got, acts, atol=2e-5)


def test_policy_protocol_and_targets(model):
    p = DTPolicy(model, 100.0, 10.0)
    assert isinstance(p, Policy)
    q = p.with_target(200.0)
    assert q.target_return == 200.0 and q.model is model
    a = p.act(np.zeros((3, S), np.float32))
    assert a.shape == (3, A) and a.dtype == np.float32
    p.observe(np.array([1.0, 2.0, 3.0], np.float32))
    np.testing.assert_allclose(p.rtg.numpy(), [9.9, 9.8, 9.7], rtol=1e-6)
    p.reset(np.array([1]))
    p.act(np.zeros((3, S), np.float32))
    np.testing.assert_allclose(p.rtg.numpy(), [9.9, 10.0, 9.7], rtol=1e-6)
    assert p.t.tolist() == [1, 0, 1]


def test_policy_bad_inputs(model):
    p = DTPolicy(model, 1.0)
    with pytest.raises(ValueError, match=r"expected observations of shape \(n, 4\)"):
        p.act(np.zeros((2, S + 1), np.float32))
    with pytest.raises(ValueError, match="refresh_every"):
        DTPolicy(model, 1.0, refresh_every=K + 1)
    with pytest.raises(ValueError, match="context_len"):
        DTPolicy(model, 1.0, context_len=K + 1)
    with pytest.raises(ValueError, match="state_mean"):
        DTPolicy(model, 1.0, state_mean=np.zeros(S + 1))
    with pytest.raises(ValueError, match="padding: expected 'left' or 'right', got 'up'"):
        DTPolicy(model, 1.0, padding="up")
