"""The critic ensemble equals N independent MLPs; the actor's log-density, the official network and loss defaults,
and the SAC updates."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from pyseqrl.algos.rl_agent import AgentConfig, SACAgent, SACPolicy, config_from_dict
from pyseqrl.algos.rl_nets import CriticEnsemble, TanhGaussianActor
from pyseqrl.utils.precision import bf16_supported


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
    actor = TanhGaussianActor(4, 3, (16,), action_low=torch.tensor([-2.0, -1.0, 0.0]), action_high=2.0).double()
    obs = torch.randn(64, 4, dtype=torch.float64)
    torch.manual_seed(1)
    actions, log_prob = actor(obs)
    assert (
        (actions >= actor.action_bias - actor.action_scale) & (actions <= actor.action_bias + actor.action_scale)
    ).all()
    # reference: Normal(mean, std) with TransformedDistribution(tanh, affine)
    mean, log_std = actor.head(actor.trunk(obs)).chunk(2, -1)
    log_std = log_std.clamp(actor.log_std_min, actor.log_std_max)
    u = torch.atanh(((actions - actor.action_bias) / actor.action_scale).clamp(-1 + 1e-12, 1 - 1e-12))
    ref = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log(
        actor.action_scale * (1 - torch.tanh(u) ** 2)
    )
    keep = u.abs().amax(-1) < 10  # atanh of the action loses u where tanh(u) rounds to 1
    torch.testing.assert_close(log_prob[keep], ref.sum(-1)[keep], rtol=1e-6, atol=1e-6)
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


@pytest.mark.parametrize("replace", [True, False])
def test_td_target_uses_min_of_two_target_critics(replace: bool) -> None:
    torch.manual_seed(0)
    cfg = AgentConfig(hidden_dims=(16,), num_critics=5, gamma=0.9, critic_subsample_replace=replace)
    agent = SACAgent(3, 1, cfg)
    b = _batch()
    torch.manual_seed(3)
    y = agent.td_target(b)
    torch.manual_seed(3)  # replay the same random draws by hand
    next_a, _ = agent.actor(b["next_observations"])
    # official sac.py draws the subset with replacement (jax.random.randint); REDQ draws distinct critics
    members = torch.randint(5, (2,)) if replace else torch.randperm(5)[:2]
    q_all = agent.target_critic(b["next_observations"], next_a)
    ref = b["rewards"] + 0.9 * (1 - b["terminals"]) * q_all[members].amin(0)
    torch.testing.assert_close(y, ref.detach())


def test_td_target_of_a_two_critic_agent_is_the_min_of_both() -> None:
    # critic_subsample == num_critics: no draw (the official agent without an ensemble), so a draw with
    # replacement can never pick the same critic twice and lose the clipped double-Q
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=2, gamma=0.9))
    assert all(agent.target_members().tolist() == [0, 1] for _ in range(20))
    b = _batch()
    torch.manual_seed(3)
    y = agent.td_target(b)
    torch.manual_seed(3)
    next_a, _ = agent.actor(b["next_observations"])
    q_all = agent.target_critic(b["next_observations"], next_a)
    ref = b["rewards"] + 0.9 * (1 - b["terminals"]) * q_all.amin(0)
    torch.testing.assert_close(y, ref.detach())


def test_max_target_backup_takes_the_best_of_k_next_actions() -> None:
    torch.manual_seed(0)
    agent = SACAgent(
        3, 1, AgentConfig(hidden_dims=(16,), num_critics=4, gamma=0.9, max_target_backup=True, backup_actions=6)
    )
    b = _batch(8)
    torch.manual_seed(5)
    y = agent.td_target(b)
    torch.manual_seed(5)
    next_obs = b["next_observations"].repeat_interleave(6, 0)  # (8*6, S)
    next_a, _ = agent.actor(next_obs)
    members = torch.randint(4, (2,))
    q = agent.target_critic(next_obs, next_a)[members].amin(0).view(8, 6).amax(1)  # best of the 6 actions
    torch.testing.assert_close(y, (b["rewards"] + 0.9 * (1 - b["terminals"]) * q).detach())
    assert not torch.allclose(y, SACAgent.td_target(agent, b))  # other samples: another max, so k really counts


def test_agent_defaults_follow_the_official_wsrl_config() -> None:
    cfg = AgentConfig()
    # sac_config.py + wsrl_config.py + train_config.py (locomotion_wsrl)
    assert (cfg.num_critics, cfg.critic_subsample, cfg.critic_subsample_replace) == (10, 2, True)
    assert (cfg.actor_lr, cfg.critic_lr, cfg.temperature_lr) == (1e-4, 3e-4, 1e-4)
    assert cfg.backup_entropy is False and cfg.max_target_backup is False and cfg.temperature_states == "next"
    assert cfg.critic_layer_norm and cfg.actor_layer_norm and cfg.init == "orthogonal"
    assert (cfg.last_hidden_gain, cfg.actor_std_min, cfg.actor_std_max) == (1e-2, 1e-5, 10.0)
    agent = SACAgent(5, 2, cfg)
    trunk = [m for m in agent.actor.trunk if isinstance(m, nn.Linear)]
    assert sum(isinstance(m, nn.LayerNorm) for m in agent.actor.trunk) == 2

    # (semi-)orthogonal weights with gain sqrt(2), 1e-2 for the last hidden layer; zero biases
    def assert_orthogonal(w: torch.Tensor, gain: float) -> None:
        w = w.double()
        small = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        torch.testing.assert_close(
            small, gain**2 * torch.eye(small.shape[0], dtype=torch.float64), rtol=0, atol=1e-5 * gain**2
        )

    for layer, gain in zip(trunk, [math.sqrt(2.0), 1e-2]):
        assert_orthogonal(layer.weight, gain)
        assert not layer.bias.any()
    linears = [m for m in agent.critic.layers if hasattr(m, "in_features")]
    for layer, gain in zip(linears, [math.sqrt(2.0), 1e-2, math.sqrt(2.0)]):
        assert_orthogonal(layer.weight[3], gain)  # (in, out) of one member
    # the standard deviation is clipped to [1e-5, 10]
    with torch.no_grad():
        agent.actor.head.bias[2:] = torch.tensor([-40.0, 40.0])  # log-std of the 2 action dims
        agent.actor.head.weight.zero_()
    torch.manual_seed(0)
    with torch.no_grad():
        a, _ = agent.actor(torch.zeros(20000, 5))
    spread = torch.atanh(a.clamp(-1 + 1e-7, 1 - 1e-7)).std(0)
    assert float(spread[0]) < 1e-4 and float(spread[1]) > 3.0  # std 1e-5 and 10 (tanh then saturates)


def test_checkpoints_without_the_new_fields_load_as_they_were_trained() -> None:
    old = {"hidden_dims": [16], "num_critics": 3, "backup_entropy": True}  # a config saved before the new fields
    cfg = config_from_dict(old)
    assert cfg.backup_entropy is True and not cfg.actor_layer_norm and cfg.temperature_states == "current"
    assert not cfg.critic_subsample_replace and cfg.init == "torch"
    assert math.isclose(cfg.actor_std_min, math.exp(-5)) and math.isclose(cfg.actor_std_max, math.exp(2))
    agent = SACAgent(3, 1, cfg)
    assert not any(isinstance(m, nn.LayerNorm) for m in agent.actor.trunk)


@pytest.mark.parametrize("states", ["next", "current"])
def test_temperature_uses_the_next_observations_by_default(states: str) -> None:
    """Official sac.py: the temperature loss uses log pi(a'|s') at the next observations."""
    b = _batch()
    moved_obs = {**b, "observations": b["observations"] + 5.0}
    moved_next = {**b, "next_observations": b["next_observations"] + 5.0}
    alphas = []
    for batch in (b, moved_obs, moved_next):
        torch.manual_seed(0)
        agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=2, temperature_states=states))
        with torch.no_grad():  # a state-dependent entropy, so the states the loss uses matter
            agent.actor.head.weight[1:].fill_(0.3)
        torch.manual_seed(1)
        agent.update_actor(batch)
        alphas.append(float(agent.log_alpha.grad))  # -(mean log pi + target entropy) of the states it used
    if states == "next":
        assert alphas[0] == alphas[1] and alphas[0] != alphas[2]
    else:
        assert alphas[0] != alphas[1] and alphas[0] == alphas[2]


@pytest.mark.parametrize("mode,rows,calls", [("all", 4 * 8, 1), ("last", 8, 1), ("every", 8, 4)])
def test_update_round_schedules_the_actor(mode: str, rows: int, calls: int, monkeypatch) -> None:
    """Official update_high_utd: utd critic steps, then one actor/temperature step on all the minibatches."""
    seen: list[torch.Tensor] = []
    orig = SACAgent.update_actor

    def spy(self, batch):
        seen.append(batch["observations"])
        return orig(self, batch)

    monkeypatch.setattr(SACAgent, "update_actor", spy)
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=2))
    batches = [_batch(8) for _ in range(4)]
    for i, batch in enumerate(batches):
        batch["observations"] = batch["observations"] + 10 * i  # tell the minibatches apart
    agent.update(batches, mode)
    assert agent.num_updates == 4 and len(seen) == calls and all(len(x) == rows for x in seen)
    if mode == "all":
        torch.testing.assert_close(seen[0], torch.cat([b["observations"] for b in batches]))
    if mode == "last":
        torch.testing.assert_close(seen[0], batches[-1]["observations"])
    with pytest.raises(ValueError, match="actor_update must be one of"):
        agent.update(batches, "sometimes")


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


def test_sac_policy_of_an_actor_file_keeps_its_architecture(tmp_path) -> None:
    from pyseqrl.utils.checkpoint import save_torch

    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=2), action_low=-2.0, action_high=2.0)
    save_torch({"agent": agent.full_state_dict()}, tmp_path / "ck.pt")
    from pyseqrl.algos.rl_agent import export_actor

    export_actor(tmp_path / "ck.pt", tmp_path / "actor.pt")
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    policy = SACPolicy.from_checkpoint(tmp_path / "actor.pt")
    assert policy.actor.layer_norm
    np.testing.assert_array_equal(policy.act(obs), agent.act(obs, deterministic=True))


@pytest.mark.skipif(not bf16_supported(torch.device("cpu")), reason="this CPU has no bf16 matmuls")
def test_bf16_updates_track_fp32_and_keep_fp32_state() -> None:
    """precision bf16: the same update round from the same state gives losses within bf16 rounding of fp32,
    and weights, Q-values and optimizer state stay float32."""
    cfg = AgentConfig(hidden_dims=(64, 64), num_critics=4)
    torch.manual_seed(0)
    ref = SACAgent(5, 2, cfg)
    fast = SACAgent(5, 2, cfg)
    fast.load_full_state_dict(ref.full_state_dict())
    fast.bf16 = True
    g = torch.Generator().manual_seed(1)
    batch = {
        "observations": torch.randn(64, 5, generator=g),
        "actions": torch.rand(64, 2, generator=g) * 2 - 1,
        "rewards": torch.randn(64, generator=g),
        "next_observations": torch.randn(64, 5, generator=g),
        "terminals": torch.zeros(64),
    }
    torch.manual_seed(2)
    m_ref = ref.update([batch])
    torch.manual_seed(2)
    m_fast = fast.update([batch])
    for key in ("critic/td_loss", "actor/loss"):
        assert float(m_fast[key]) == pytest.approx(float(m_ref[key]), rel=0.05, abs=1e-3), key
    assert all(p.dtype == torch.float32 for p in fast.parameters())
    assert fast.critic(batch["observations"], batch["actions"]).dtype == torch.float32
    for p, q in zip(fast.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0.05, atol=2e-3)  # one Adam step apart by at most rounding


def _adam_steps(optim: torch.optim.Optimizer) -> int:
    return int(next(iter(optim.state.values()))["step"])


def test_idle_steps_move_untrained_networks_on_their_adam_momentum() -> None:
    """The official update_high_utd (optax) steps every optimizer at every update, with a zero gradient for the
    networks that update does not train: at UTD 2 the actor and temperature take 2 idle steps and 1 real one per
    round, the critic 2 real steps and 1 idle one."""
    from pyseqrl.algos.rl_agent import _zero_gradient_step

    torch.manual_seed(0)
    agents = {idle: SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=2)) for idle in (True, False)}
    agents[False].load_full_state_dict(agents[True].full_state_dict())
    batches = [_batch(8) for _ in range(2)]
    for idle, agent in agents.items():  # one minibatch: no idle step, the same update either way
        torch.manual_seed(1)
        agent.update(batches[:1], "all", idle_steps=idle)
    for a, b in zip(agents[True].parameters(), agents[False].parameters()):
        assert torch.equal(a, b)
    steps = {
        idle: [_adam_steps(o) for o in (a.actor_optim, a.critic_optim, a.alpha_optim)] for idle, a in agents.items()
    }
    for idle, agent in agents.items():
        torch.manual_seed(2)
        agent.update(batches, "all", idle_steps=idle)
    after = {
        idle: [_adam_steps(o) for o in (a.actor_optim, a.critic_optim, a.alpha_optim)] for idle, a in agents.items()
    }
    assert [x - y for x, y in zip(after[True], steps[True])] == [3, 3, 3]
    assert [x - y for x, y in zip(after[False], steps[False])] == [1, 2, 1]
    actor = agents[True].actor
    assert not all(torch.equal(a, b) for a, b in zip(actor.parameters(), agents[False].actor.parameters()))

    # an idle step is Adam's update with g = 0: m <- b1 m, v <- b2 v, p <- p - lr m_hat / (sqrt(v_hat) + eps)
    optim = agents[True].actor_optim
    lr, (b1, b2), eps = optim.defaults["lr"], optim.defaults["betas"], optim.defaults["eps"]
    before = {
        p: (p.detach().double().clone(), {k: v.double().clone() for k, v in optim.state[p].items()})
        for p in actor.parameters()
    }
    _zero_gradient_step(optim)
    for p, (p0, st) in before.items():
        t = float(st["step"]) + 1
        m, v = b1 * st["exp_avg"], b2 * st["exp_avg_sq"]
        expected = p0 - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7)
        assert p.grad is None

    start = copy.deepcopy(agents[False].full_state_dict())
    for mode in ("last", "every"):  # the official schedule only: the other schedules ignore idle_steps
        for idle, agent in agents.items():
            agent.load_full_state_dict(copy.deepcopy(start))  # optimizer states would share tensors otherwise
            torch.manual_seed(3)
            agent.update(batches, mode, idle_steps=idle)
        for a, b in zip(agents[True].parameters(), agents[False].parameters()):
            assert torch.equal(a, b)
