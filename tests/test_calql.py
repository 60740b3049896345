"""Cal-QL / CQL: Monte-Carlo returns from the dataset, the lower bound, the official defaults, YAML presets with
partial nested blocks, the CLI and exact resume with its metrics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

pytest.importorskip("pyseqrl._core")
from pyseqrl.algos.calql import CalQLConfig, CQLConfig, cql_regularizer, offline_data
from pyseqrl.algos.rl_agent import AgentConfig, SACAgent
from pyseqrl.data import EpisodeDataset
from pyseqrl.utils.runs import RunOptions

TINY = ["--agent.hidden-dims", "16", "16", "--agent.num-critics", "3", "--batch-size", "16"]


def _dataset(next_obs: bool) -> EpisodeDataset:
    rng = np.random.default_rng(0)
    n = 12
    return EpisodeDataset.from_arrays(
        observations=rng.normal(size=(n, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 1)).astype(np.float32),
        rewards=np.arange(1, n + 1, dtype=np.float32),
        terminals=np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool),  # episode 0 terminates at t=3
        timeouts=np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool),  # episode 1 times out; episode 2 unfinished
        next_observations=rng.normal(size=(n, 3)).astype(np.float32) if next_obs else None,
        metadata={"env_id": "Pendulum-v1"},
    )


def _mc_reference(rewards: np.ndarray, ends: list[int], gamma: float) -> np.ndarray:
    out, start = np.zeros(len(rewards)), 0
    for end in ends:
        g = 0.0
        for t in range(end - 1, start - 1, -1):
            g = rewards[t] + gamma * g
            out[t] = g
        start = end
    return out


@pytest.mark.parametrize("next_obs", [True, False])
def test_offline_data_and_mc_returns(next_obs: bool) -> None:
    ds = _dataset(next_obs)
    t = offline_data(ds, gamma=0.9, reward_scale=2.0, reward_bias=-1.0)
    np.testing.assert_array_equal(t["observations"].numpy(), ds.transitions()["observations"])
    mc = _mc_reference(2.0 * ds.rewards - 1.0, [4, 8, 12], 0.9)
    if next_obs:
        keep = np.arange(12)
        np.testing.assert_allclose(t["next_observations"].numpy(), ds.next_observations)
    else:  # the last step of a non-terminal episode has no next observation: dropped
        keep = np.array([0, 1, 2, 3, 4, 5, 6, 8, 9, 10])
        np.testing.assert_allclose(t["next_observations"].numpy()[:3], ds.observations[1:4])
        np.testing.assert_allclose(t["next_observations"].numpy()[4:7], ds.observations[5:8])
    np.testing.assert_allclose(t["mc_returns"].numpy(), mc[keep], rtol=1e-5)
    np.testing.assert_allclose(t["rewards"].numpy(), ds.rewards[keep])  # unscaled: the agent scales them
    np.testing.assert_array_equal(t["terminals"].numpy(), ds.terminals[keep].astype(np.float32))


def _const_q_agent(value: float) -> SACAgent:
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(8,), num_critics=4))
    with torch.no_grad():  # every critic outputs `value` for every (s, a)
        agent.critic.layers[-1].weight.zero_()
        agent.critic.layers[-1].bias.fill_(value)
    return agent


@pytest.mark.parametrize("calql", [True, False])
def test_calql_lower_bound_uses_mc_returns(calql: bool) -> None:
    agent = _const_q_agent(-1000.0)
    b = 6
    mc = torch.linspace(-5.0, 5.0, b)
    batch = {
        "observations": torch.randn(b, 3),
        "actions": torch.zeros(b, 1),
        "rewards": torch.zeros(b),
        "next_observations": torch.randn(b, 3),
        "terminals": torch.zeros(b),
        "mc_returns": mc,
    }
    cfg = CQLConfig(calql=calql, alpha=2.0, num_actions=5, importance_sample=False)
    q_data = agent.critic(batch["observations"], batch["actions"])
    loss, metrics = cql_regularizer(cfg)(agent, batch, q_data)
    if calql:
        # all 2n policy Q-values are clipped up to G(s); the n random and the data Q-values stay at -1000
        gap = mc + math.log(2 * cfg.num_actions) + 1000.0  # logsumexp of 2n copies of G minus Q_data
        assert float(metrics["calql/bound_rate"]) == 1.0
    else:
        gap = torch.full((b,), math.log(3 * cfg.num_actions + 1))  # 3n+1 equal values
    torch.testing.assert_close(loss, cfg.alpha * 4 * gap.mean(), rtol=1e-5, atol=1e-3)
    # above the bound nothing changes: Cal-QL == CQL when Q >= G everywhere
    agent = _const_q_agent(100.0)
    q_data = agent.critic(batch["observations"], batch["actions"])
    torch.manual_seed(1)
    l_cal, _ = cql_regularizer(CQLConfig(calql=True))(agent, batch, q_data)
    torch.manual_seed(1)
    l_cql, _ = cql_regularizer(CQLConfig(calql=False))(agent, batch, q_data)
    torch.testing.assert_close(l_cal, l_cql)


def test_calql_update_reduces_gap() -> None:
    ds = _dataset(True)
    t = offline_data(ds, 0.99)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16,), num_critics=2, backup_entropy=False))
    reg = cql_regularizer(CQLConfig(alpha=5.0))
    gaps = [float(agent.update_critic(t, reg)["cql/gap"]) for _ in range(30)]
    assert gaps[-1] < gaps[0]


def test_defaults_follow_the_official_cql_config() -> None:
    """cql_config.py: 10 actions, alpha 5, importance sampling, max-target backup, no entropy backup."""
    cfg = CalQLConfig()
    assert (cfg.cql.num_actions, cfg.cql.alpha, cfg.cql.importance_sample, cfg.cql.temperature) == (10, 5.0, True, 1.0)
    assert cfg.agent.max_target_backup and cfg.agent.backup_actions == 10 and not cfg.agent.backup_entropy
    assert (cfg.agent.actor_lr, cfg.agent.temperature_lr) == (1e-4, 1e-4)


@dataclass
class _Inner:
    a: int = 1
    b: float = 2.0


@dataclass
class _Outer(RunOptions):
    inner: _Inner = field(default_factory=lambda: _Inner(a=10, b=20.0))
    """a nested config whose default differs from _Inner's own defaults"""


def test_yaml_preset_with_a_partial_nested_block_keeps_the_other_defaults(tmp_path) -> None:
    """A preset's ``agent:`` block changes only the fields it names: Cal-QL's max-target backup (a default of
    CalQLConfig.agent, not of AgentConfig) survives, and explicit flags still win over the preset."""
    from pyseqrl.utils.runs import parse_config

    preset = tmp_path / "preset.yaml"
    preset.write_text("steps: 7\nagent:\n  num_critics: 2\n  hidden_dims: [8, 8]\ncql:\n  alpha: 1.0\n")
    cfg = parse_config(CalQLConfig, ["--config", str(preset), "--agent.critic-lr", "1e-3"], "")
    assert cfg.steps == 7 and cfg.cql.alpha == 1.0 and cfg.cql.num_actions == 10
    assert (cfg.agent.num_critics, cfg.agent.hidden_dims, cfg.agent.critic_lr) == (2, (8, 8), 1e-3)
    assert cfg.agent.max_target_backup is True

    preset.write_text("inner:\n  a: 5\nlog_every: 3\n")
    cfg = parse_config(_Outer, ["--config", str(preset)], "")
    assert cfg.inner == _Inner(a=5, b=20.0) and cfg.log_every == 3
    preset.write_text("inner:\n  c: 5\n")
    with pytest.raises(ValueError, match=r"unknown _Inner key\(s\) \['inner.c'\]"):
        parse_config(_Outer, ["--config", str(preset)], "")


def test_calql_cli_and_exact_resume(tmp_path) -> None:
    """Resume with log and checkpoint periods that coincide: metrics.csv equals the uninterrupted run's, and a
    finished run re-run is left as it was."""
    from pyseqrl.cli import main

    ds = _dataset(True)
    path = tmp_path / "data.h5"
    ds.save(path)
    common = [
        "train",
        "calql",
        "--dataset",
        str(path),
        *TINY,
        "--eval-every",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--log-every",
        "3",
        "--checkpoint-every",
        "3",
    ]
    assert main([*common, "--steps", "6", "--run-dir", str(tmp_path / "full")]) == 0
    assert main([*common, "--steps", "3", "--run-dir", str(tmp_path / "part")]) == 0
    assert main([*common, "--steps", "6", "--run-dir", str(tmp_path / "part")]) == 0  # resumes by default
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    assert full["step"] == part["step"] == 6
    for k, v in full["agent"]["model"].items():
        torch.testing.assert_close(part["agent"]["model"][k], v, rtol=0, atol=0, msg=k)
    metrics = (tmp_path / "part" / "metrics.csv").read_text()
    assert metrics == (tmp_path / "full" / "metrics.csv").read_text()
    assert [line.split(",")[0] for line in metrics.splitlines()[1:]] == ["3", "6"]
    assert main([*common, "--steps", "6", "--run-dir", str(tmp_path / "part")]) == 0
    assert (tmp_path / "part" / "metrics.csv").read_text() == metrics
    assert main([*common, "--steps", "3", "--no-resume", "--overwrite", "--run-dir", str(tmp_path / "part")]) == 0
    assert [line.split(",")[0] for line in (tmp_path / "part" / "metrics.csv").read_text().splitlines()[1:]] == ["3"]
