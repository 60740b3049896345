"""The critic ensemble equals N independent MLPs; the actor's log-density and the SAC updates are sane."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from pyseqrl.algos.rl_agent import AgentConfig, SACAgent
from pyseqrl.algos.rl_nets import CriticEnsemble, TanhGaussianActor


def _per_critic_mlps(ens: CriticEnsemble) -> list[nn.Sequential]:
    """Plain nn.Linear/LayerNorm/ReLU MLPs holding the weights of each ensemble member (float64)."""
    mlps = []
    for i in range(ens.num_critics):
        layers: list[nn.Module] = []
        for layer in ens.layers:
            if isinstance(layer, nn.ReLU):
                layers.append(nn.ReLU())
            elif hasattr(layer, "in_features"):
                lin = nn.Linear(layer.in_features, layer.out_features).double()
                lin.weight.data.copy_(layer.weight.data[i].T)
                lin.bias.data.copy_(layer.bias.data[i, 0])
                layers.append(lin)
            else:
                ln = nn.LayerNorm(layer.weight.shape[-1]).double()
                ln.weight.data.copy_(layer.weight.data[i, 0])
                ln.bias.data.copy_(layer.bias.data[i, 0])
                layers.append(ln)
        mlps.append(nn.Sequential(*layers))
    return mlps


@pytest.mark.parametrize("layer_norm", [True, False])
def test_ensemble_matches_per_critic_loop(layer_norm: bool) -> None:
    torch.manual_seed(0)
    ens = CriticEnsemble(5, 2, (16, 8), num_critics=6, layer_norm=layer_norm)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for p in ens.parameters():
            p.add_(0.1 * torch.randn_like(p))
    obs, act = torch.randn(7, 5), torch.randn(7, 2)
    q = ens(obs, act)
    assert q.shape == (6, 7)
    mlps = _per_critic_mlps(ens)
    x = torch.cat([obs, act], -1).double()
    ref = torch.stack([m(x).squeeze(-1) for m in mlps])  # (N, B) float64 reference
    torch.testing.assert_close(q.double(), ref, rtol=1e-5, atol=1e-5)
    # a subset of members gives exactly those rows
    members = torch.tensor([4, 1])
    torch.testing.assert_close(ens(obs, act, members), q[members], rtol=1e-6, atol=1e-6)
    # gradients agree too: d(sum Q)/d W of member 3's first layer
    q.sum().backward()
    ref.sum().backward()
    first = ens.layers[0]
    torch.testing.assert_close(first.weight.grad[3].double(), mlps[3][0].weight.grad.T, rtol=1e-4, atol=1e-5)


def test_ensemble_members_are_independent() -> None:
    torch.manual_seed(0)
    ens = CriticEnsemble(3, 1, (8,), num_critics=4)
    obs, act = torch.randn(5, 3), torch.randn(5, 1)
    ens(obs, act)[2].sum().backward()
    g = ens.layers[0].weight.grad
    assert g[2].abs().sum() > 0 and g[[0, 1, 3]].abs().sum() == 0


def test_actor_log_prob_matches_change_of_variables() -> None:
    torch.manual_seed(0)
    actor = TanhGaussianActor(4, 3, (16,), action_low=torch.tensor([-2.0, -1.0, 0.0]), action_high=2.0)
    obs = torch.randn(64, 4)
    torch.manual_seed(1)
    actions, log_prob = actor(obs)
    assert (
        (actions >= actor.action_bias - actor.action_scale)
        & (actions <= actor.action_bias + actor.action_scale)
    ).all()
    # reference: Normal(mean, std) with TransformedDistribution(tanh, affine)
    mean, log_std = actor.head(actor.trunk(obs)).chunk(2, -1)
    log_std = log_std.clamp(actor.log_std_min, actor.log_std_max)
    u = torch.atanh(((actions - actor.action_bias) / actor.action_scale).clamp(-1 + 1e-6, 1 - 1e-6))
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(
        actor.action_scale * (1 - torch.tanh(u) ** 2)
    )
    torch.testing.assert_close(log_prob, ref.sum(-1), rtol=1e-3, atol=1e-3)
    det, none = actor(obs, deterministic=True, with_log_prob=False)
    assert none is None and torch.allclose(det, actor.action_bias + actor.action_scale * torch.tanh(mean))


def _batch(n: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "observations": torch.randn(n, 3, generator=g),
        "actions": torch.rand(n, 1, generator=g) * 2 - 1,
        "rewards": torch.randn(n, generator=g),
        "next_observations": torch.randn(n, 3, generator=g),
        "terminals": (torch.rand(n, generator=g) < 0.1).float(),
    }


def test_td_target_uses_min_of_two_target_critics() -> None:
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=5, backup_entropy=False, gamma=0.9))
    b = _batch()
    torch.manual_seed(3)
    y = agent.td_target(b)
    torch.manual_seed(3)  # replay the same random draws by hand
    next_a, _ = agent.actor(b["next_observations"])
    members = torch.randperm(5)[:2]
    q_all = agent.target_critic(b["next_observations"], next_a)
    ref = b["rewards"] + 0.9 * (1 - b["terminals"]) * q_all[members].amin(0)
    torch.testing.assert_close(y, ref.detach())


def test_updates_change_the_right_parameters() -> None:
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=4))
    b = _batch()
    actor0 = [p.clone() for p in agent.actor.parameters()]
    critic0 = [p.clone() for p in agent.critic.parameters()]
    target0 = [p.clone() for p in agent.target_critic.parameters()]
    m = agent.update_critic(b)
    assert math.isfinite(float(m["critic/td_loss"])) and agent.num_updates == 1
    assert all(torch.equal(a, p) for a, p in zip(actor0, agent.actor.parameters()))
    assert not all(torch.equal(a, p) for a, p in zip(critic0, agent.critic.parameters()))
    assert not all(torch.equal(a, p) for a, p in zip(target0, agent.target_critic.parameters()))
    critic1 = [p.clone() for p in agent.critic.parameters()]
    grads1 = [p.grad.clone() for p in agent.critic.parameters()]
    alpha0 = float(agent.alpha)
    agent.update_actor(b)
    assert all(torch.equal(a, p) for a, p in zip(critic1, agent.critic.parameters()))
    # the actor step accumulated no gradient into the critics
    assert all(torch.equal(g, p.grad) for g, p in zip(grads1, agent.critic.parameters()))
    assert float(agent.alpha) != alpha0


def test_agent_state_roundtrip() -> None:
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=3), action_low=-2.0, action_high=2.0)
    agent.update_critic(_batch())
    agent.update_actor(_batch())
    clone = SACAgent.from_state_dict(agent.full_state_dict())
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs, deterministic=True), clone.act(obs, deterministic=True))
    assert clone.num_updates == 1
    assert float(clone.actor.action_scale[0]) == 2.0
