"""pyseqrl.ops.graphed_step: the eager step everywhere; graph replay == eager on a GPU."""

from __future__ import annotations

import pytest
import torch
from conftest import random_dataset

from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
from pyseqrl.ops import _cuda
from pyseqrl.ops.gpu_sampler import GPUSegmentSampler
from pyseqrl.ops.graphed_step import TrainStep, dt_action_loss, make_capturable_adamw, use_pyseqrl_attention

needs_kernels = pytest.mark.skipif(not _cuda.compiled_with_cuda(), reason="pyseqrl built without CUDA kernels")


def tiny_setup(
    device: str, seed: int = 0, dropout: float = 0.0, fused: bool = False, warmup_steps: int = 5, padding: str = "left"
):
    ds = random_dataset([30, 12, 50, 8, 40], obs_dim=4, act_dim=2, seed=seed)
    torch.manual_seed(seed)
    cfg = DTConfig(
        state_dim=4,
        act_dim=2,
        context_len=5,
        hidden_size=32,
        n_layer=2,
        n_head=1,
        dropout=dropout,
        max_ep_len=100,
    )
    model = DecisionTransformer(cfg).to(device)
    if fused:
        use_pyseqrl_attention(model)
    sampler = GPUSegmentSampler(
        ds, context_len=5, batch_size=8, seed=seed, max_ep_len=100, padding=padding, device=device
    )
    opt = make_capturable_adamw(model, lr=1e-3, weight_decay=1e-4)
    step = TrainStep(
        lambda b: dt_action_loss(model, b, padding),
        list(model.parameters()),
        opt,
        sampler,
        grad_clip=0.25,
        warmup_steps=warmup_steps,
    )
    return model, sampler, opt, step


@pytest.mark.parametrize("padding", ["left", "right"])
def test_eager_step_on_cpu_matches_a_plain_loop(padding):
    model, _sampler, _opt, step = tiny_setup("cpu", padding=padding)
    ref_model, ref_sampler, _, _ = tiny_setup("cpu", padding=padding)
    ref_opt = torch.optim.AdamW(
        [
            {"params": [p for p in ref_model.parameters() if p.dim() >= 2], "weight_decay": 1e-4},
            {"params": [p for p in ref_model.parameters() if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(ref_opt, lambda s: min(1.0, (s + 1) / 5))
    losses = []
    for _ in range(4):
        losses.append(float(step()))
        ref_opt.zero_grad()
        loss = dt_action_loss(ref_model, ref_sampler.sample(), padding)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref_model.parameters(), 0.25)
        ref_opt.step()
        sched.step()
        assert losses[-1] == pytest.approx(float(loss.detach()), rel=1e-6)
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert float(step.step_count) == 4


def test_capture_needs_cuda():
    _, _, _, step = tiny_setup("cpu")
    with pytest.raises(RuntimeError, match="CUDA device"):
        step.capture()


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("fused", [False, True], ids=["sdpa", "pyseqrl"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_graph_replay_matches_eager(fused, padding):
    model_g, _, _, graphed = tiny_setup("cuda", fused=fused, padding=padding)
    model_e, _, _, eager = tiny_setup("cuda", fused=fused, padding=padding)
    graphed.capture(warmup_iters=3)
    for _ in range(3):
        eager.eager()
    for _ in range(10):
        lg, le = graphed(), eager.eager()
        torch.testing.assert_close(lg, le, rtol=1e-4, atol=1e-5)
    for p, q in zip(model_g.parameters(), model_e.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_kernels
def test_graphed_step_with_dropout_trains():
    _model, _, _, step = tiny_setup("cuda", dropout=0.1, fused=True)
    step.capture()
    first = float(step())
    for _ in range(200):
        loss = step()
    assert torch.isfinite(loss) and float(loss) < first


def test_resumed_step_warms_up_from_the_given_rates_and_step():
    """A resumed optimizer holds warmed-up rates: TrainStep scales the base rates it is given from start_step."""
    model, sampler, opt, _ = tiny_setup("cpu")
    for g in opt.param_groups:  # as a restored optimizer after 2 of 5 warmup steps
        g["lr"] = torch.tensor(1e-3 * 2 / 5)
    step = TrainStep(
        lambda b: dt_action_loss(model, b),
        list(model.parameters()),
        opt,
        sampler,
        warmup_steps=5,
        base_lrs=[1e-3] * len(opt.param_groups),
        start_step=2,
    )
    step()
    assert float(step.step_count) == 3
    assert all(float(g["lr"]) == pytest.approx(1e-3 * 3 / 5) for g in opt.param_groups)
    with pytest.raises(ValueError, match=r"base_lrs: expected one rate per parameter group \(2\), got 1"):
        TrainStep(lambda b: dt_action_loss(model, b), list(model.parameters()), opt, sampler, base_lrs=[1e-3])
