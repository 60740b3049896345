"""WSRL: update-free warmup with the frozen policy; offline data stays out; resume; every mode runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pyseqrl._core")
pytest.importorskip("envpool")
from pyseqrl.algos.rl_agent import AgentConfig, SACAgent
from pyseqrl.algos.wsrl import MODES, WSRLConfig, train_wsrl
from pyseqrl.data import EpisodeDataset
from pyseqrl.utils.checkpoint import save_torch

ENV = "Pendulum-v1"  # S=3, A=1, actions in [-2, 2], observations within [-8, 8]
CONST = 0.5  # the pretrained policy's pre-tanh mean


def _offline_dataset(n: int = 64) -> EpisodeDataset:
    """Offline data no environment step can produce: every observation is >= 100."""
    rng = np.random.default_rng(0)
    obs = (100 + rng.random((n + 1, 3))).astype(np.float32)
    return EpisodeDataset.from_arrays(
        observations=obs[:-1],
        actions=rng.uniform(-2, 2, (n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.arange(n) % 16 == 15,
        next_observations=obs[1:],
        metadata={"env_id": ENV},
    )


@pytest.fixture()
def pretrained(tmp_path):
    """A fake offline checkpoint whose policy is almost deterministic: a = 2 * tanh(0.5), std e^-5."""
    torch.manual_seed(0)
    agent = SACAgent(3, 1, AgentConfig(hidden_dims=(16, 16), num_critics=3), action_low=-2.0, action_high=2.0)
    with torch.no_grad():
        agent.actor.head.weight.zero_()
        agent.actor.head.bias.copy_(torch.tensor([CONST, -20.0]))  # mean, log-std (clipped to -5)
    data = tmp_path / "offline.h5"
    _offline_dataset().save(data)
    path = tmp_path / "pretrained.pt"
    save_torch(
        {"agent": agent.full_state_dict(), "env_id": ENV, "config": {"dataset": str(data)}, "step": 10}, path
    )
    return path, agent


def _cfg(tmp_path, ckpt, **kw) -> WSRLConfig:
    base = {
        "checkpoint": str(ckpt),
        "env_id": ENV,
        "run_dir": str(tmp_path / "run"),
        "batch_size": 16,
        "buffer_size": 10_000,
        "eval_every": 0,
        "log_every": 10,
        "progress": False,
        "tensorboard": False,
        "num_envs": 2,
        "utd": 2,
        "agent": AgentConfig(hidden_dims=(16, 16), num_critics=3),
    }
    base.update(kw)
    return WSRLConfig(**base)


def _params(agent: SACAgent) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in agent.state_dict().items()}


def _buffer_contents(buffer) -> dict[str, np.ndarray]:
    state = buffer.state_dict()
    n = len(buffer)
    return {
        "observations": np.asarray(state["observations"])[:n],
        "actions": np.asarray(state["actions"])[:n],
    }


def test_warmup_is_update_free_and_uses_frozen_policy(tmp_path, pretrained) -> None:
    ckpt, agent0 = pretrained
    res = train_wsrl(_cfg(tmp_path, ckpt, total_steps=30, warmup_steps=30))
    assert res.agent.num_updates == agent0.num_updates == 0
    for k, v in _params(agent0).items():
        torch.testing.assert_close(res.agent.state_dict()[k], v, rtol=0, atol=0, msg=k)
    # 2 envs x 30 steps, all real (Pendulum episodes last 200 steps), all from the frozen policy
    assert len(res.buffer) == 60
    contents = _buffer_contents(res.buffer)
    np.testing.assert_allclose(contents["actions"], 2 * np.tanh(CONST), atol=0.05)
    assert np.isfinite(res.switch_metrics["switch/q_data_mean"])


def test_updates_start_after_warmup_at_utd(tmp_path, pretrained) -> None:
    ckpt, _ = pretrained
    res = train_wsrl(_cfg(tmp_path, ckpt, total_steps=25, warmup_steps=20))
    assert res.agent.num_updates == 5 * 2 * 2  # 5 vectorised steps x 2 envs x utd 2


@pytest.mark.parametrize("mode", MODES)
def test_offline_data_only_where_a_baseline_asks(tmp_path, pretrained, mode: str) -> None:
    ckpt, _ = pretrained
    res = train_wsrl(_cfg(tmp_path, ckpt, mode=mode, total_steps=12, warmup_steps=6))
    obs = _buffer_contents(res.buffer)["observations"]
    offline_rows = int((obs >= 100).all(1).sum())
    if mode == "keep_offline_append":
        assert offline_rows == 64 and len(res.buffer) == 64 + 24
    else:
        assert offline_rows == 0 and len(res.buffer) == 24
    assert res.agent.num_updates == 6 * 2 * 2


def test_mixed_batches_are_half_offline(tmp_path, pretrained, monkeypatch) -> None:
    ckpt, _ = pretrained
    seen: list[torch.Tensor] = []
    orig = SACAgent.update_critic

    def spy(self, batch, regularizer=None):
        seen.append(batch["observations"])
        return orig(self, batch, regularizer)

    monkeypatch.setattr(SACAgent, "update_critic", spy)
    train_wsrl(_cfg(tmp_path, ckpt, mode="keep_offline_mixed", total_steps=8, warmup_steps=6))
    assert seen and all(int((b >= 100).all(1).sum()) == 8 for b in seen)


def test_exact_resume(tmp_path, pretrained) -> None:
    ckpt, _ = pretrained
    full = train_wsrl(
        _cfg(
            tmp_path,
            ckpt,
            run_dir=str(tmp_path / "full"),
            total_steps=16,
            warmup_steps=6,
            checkpoint_every=10,
        )
    )
    train_wsrl(
        _cfg(
            tmp_path,
            ckpt,
            run_dir=str(tmp_path / "part"),
            total_steps=10,
            warmup_steps=6,
            checkpoint_every=10,
        )
    )
    part = train_wsrl(
        _cfg(
            tmp_path,
            ckpt,
            run_dir=str(tmp_path / "part"),
            total_steps=16,
            warmup_steps=6,
            checkpoint_every=10,
            resume=True,
        )
    )
    for k, v in full.agent.state_dict().items():
        torch.testing.assert_close(part.agent.state_dict()[k], v, rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(
        _buffer_contents(part.buffer)["observations"], _buffer_contents(full.buffer)["observations"]
    )


def test_cli_end_to_end(tmp_path, pretrained) -> None:
    from pyseqrl.cli import main

    ckpt, _ = pretrained
    args = [
        "train",
        "wsrl",
        "--checkpoint",
        str(ckpt),
        "--total-steps",
        "8",
        "--warmup-steps",
        "4",
        "--batch-size",
        "8",
        "--buffer-size",
        "1000",
        "--eval-every",
        "0",
        "--no-progress",
        "--log-every",
        "4",
        "--run-dir",
        str(tmp_path / "cli"),
    ]
    assert main(args) == 0
    assert (tmp_path / "cli" / "checkpoint.pt").exists() and (tmp_path / "cli" / "metrics.csv").exists()
    assert "switch/q_data_mean" in (tmp_path / "cli" / "metrics.csv").read_text()


def test_calql_then_wsrl_pipeline(tmp_path) -> None:
    """Real chain: random Pendulum data -> `train calql` -> `train wsrl` keeping the offline data."""
    from pyseqrl.algos.sac import sac_replay_dataset
    from pyseqrl.cli import main

    tiny = ["--agent.hidden-dims", "16", "16", "--agent.num-critics", "3"]
    ds = sac_replay_dataset(ENV, total_steps=40, seed=0, num_envs=2, learning_starts=40, buffer_size=200)
    ds.save(tmp_path / "random.h5")
    common = [
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--eval-episodes",
        "1",
        "--no-progress",
        "--log-every",
        "2",
    ]
    calql = ["train", "calql", "--dataset", str(tmp_path / "random.h5"), "--steps", "4", *tiny, *common]
    assert main([*calql, "--run-dir", str(tmp_path / "calql")]) == 0
    wsrl = [
        "train",
        "wsrl",
        "--checkpoint",
        str(tmp_path / "calql" / "checkpoint.pt"),
        "--mode",
        "keep_offline_append",
        "--total-steps",
        "4",
        "--buffer-size",
        "500",
        *common,
    ]
    assert main([*wsrl, "--run-dir", str(tmp_path / "wsrl")]) == 0
    metrics = (tmp_path / "wsrl" / "metrics.csv").read_text()
    assert "critic/td_loss" in metrics and "eval/mean_return" in metrics
