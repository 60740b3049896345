"""Wiki-RL's alignment loss: the official per-coordinate form, the paper's max-cosine form, the anneal and k-means."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pyseqrl.models import alignment_loss, anneal_weight, kmeans


def official_reference(e: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The official computation, literally: einsum 'iaj,bj->iabj' on normalised inputs, max over b, mean."""
    e, c = F.normalize(e, dim=-1), F.normalize(c, dim=-1)
    return -torch.einsum("iaj,bj->iabj", e, c).max(2).values.mean()


def test_official_loss_equals_the_einsum_and_its_gradient():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(11, 8, generator=g, dtype=torch.float64)
    ours = alignment_loss(e, c, kind="official")
    ref = official_reference(e, c)
    torch.testing.assert_close(ours.double(), ref, atol=1e-6, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours, e)
    (g_ref,) = torch.autograd.grad(ref, e)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-5)


def test_paper_loss_matches_naive_reference_and_chunks():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(3, 7, 8, generator=g, dtype=torch.float64)
    c = torch.randn(11, 8, generator=g, dtype=torch.float64)
    naive = -F.cosine_similarity(e[:, :, None, :], c[None, None], dim=-1).amax(-1).mean()
    torch.testing.assert_close(alignment_loss(e, c, kind="paper").double(), naive, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        alignment_loss(e, c, kind="paper", max_elements=11 * 2), alignment_loss(e, c, kind="paper")
    )
    for kind in ("official", "paper"):  # padded tokens do not count
        mask = torch.ones(3, 7)
        mask[:, :4] = 0
        torch.testing.assert_close(
            alignment_loss(e, c, mask, kind=kind).double(), alignment_loss(e[:, 4:], c, kind=kind).double()
        )
    with pytest.raises(ValueError, match="D=8"):
        alignment_loss(e, torch.randn(4, 5))
    with pytest.raises(ValueError, match="alignment loss must be one of"):
        alignment_loss(e, c, kind="max")


@pytest.mark.parametrize("D", [128, 768])
def test_the_two_losses_differ_in_gradient_size(D):
    """Not the same computation: the official gradient is much smaller (mean over coordinates)."""
    g = torch.Generator().manual_seed(0)
    e = torch.randn(4, 60, D, generator=g, requires_grad=True)
    c = torch.randn(100, D, generator=g)
    norms = []
    for kind in ("official", "paper"):
        (grad,) = torch.autograd.grad(alignment_loss(e, c, kind=kind), e)
        norms.append(float(grad.norm()))
    assert norms[1] > 10 * norms[0]


def test_sigmoid_anneal_is_the_official_schedule():
    assert anneal_weight(0, 5000) == pytest.approx(1 / (1 + math.exp(-5)))  # ~0.993
    assert anneal_weight(2500, 5000) == pytest.approx(0.5)
    assert anneal_weight(5000, 5000) == pytest.approx(1 / (1 + math.exp(5)))  # ~0.0067
    assert anneal_weight(10**9, 5000) == 0.0
    assert anneal_weight(2500, 5000, "linear") == 0.5 and anneal_weight(6000, 5000, "linear") == 0.0
    assert anneal_weight(10**6, 5000, "none") == 1.0
    with pytest.raises(ValueError, match="anneal"):
        anneal_weight(0, 10, "cosine")


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_kmeans_finds_clear_clusters_and_the_loss_falls(metric):
    torch.manual_seed(0)
    table = torch.cat([torch.randn(50, 8) * 0.1 + 3 * torch.eye(8)[i] for i in range(4)])  # 4 clear clusters
    cents = kmeans(table, 4, seed=0, metric=metric)
    assert cents.shape == (4, 8) and sorted(cents.argmax(1).tolist()) == [0, 1, 2, 3]
    x = torch.randn(16, 8, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    first = float(alignment_loss(x[None], cents, kind="paper").detach())
    for _ in range(50):
        loss = alignment_loss(x[None], cents, kind="paper")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first - 0.2 and float(loss.detach()) < -0.95
    with pytest.raises(ValueError, match="num_clusters"):
        kmeans(table, 500)
    with pytest.raises(ValueError, match="metric"):
        kmeans(table, 4, metric="manhattan")
