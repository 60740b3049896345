"""WSRL: update-free warmup with the pretrained policy; offline data stays out; the official defaults; options a
mode ignores are rejected; exact resume with its metrics; every mode runs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

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
    save_torch({"agent": agent.full_state_dict(), "env_id": ENV, "config": {"dataset": str(data)}, "step": 10}, path)
    return path, agent


def _cfg(tmp_path, ckpt, **kw) -> WSRLConfig:
    """Tiny runs: 2 envs, UTD 2, minibatches of 4, so no mode waits more than 4 steps for its first round."""
    base = {
        "checkpoint": str(ckpt),
        "env_id": ENV,
        "run_dir": str(tmp_path / "run"),
        "batch_size": 4,
        "buffer_size": 10_000,
        "eval_every": 0,
        "log_every": 10,
        "progress": False,
        "tensorboard": False,
        "num_envs": 2,
        "utd": 2,
    }
    base.update(kw)
    if base.get("mode") == "scratch":
        base["checkpoint"] = ""
        base.setdefault("agent", AgentConfig(hidden_dims=(16, 16), num_critics=3))
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


@pytest.mark.parametrize("idle", [True, False])
def test_idle_steps_reach_the_optimizers(tmp_path, pretrained, idle: bool) -> None:
    """At UTD 2 a round steps the actor's Adam 3 times with idle steps (2 zero-gradient, 1 real), else once."""
    ckpt, _ = pretrained
    res = train_wsrl(_cfg(tmp_path, ckpt, total_steps=25, warmup_steps=20, idle_steps=idle))
    rounds = 5 * 2  # 5 vectorised steps x 2 envs
    actor_steps = int(next(iter(res.agent.actor_optim.state.values()))["step"])
    critic_steps = int(next(iter(res.agent.critic_optim.state.values()))["step"])
    assert (actor_steps, critic_steps) == ((3 * rounds, 3 * rounds) if idle else (rounds, 2 * rounds))


@pytest.mark.parametrize("mode", MODES)
def test_offline_data_only_where_a_baseline_asks(tmp_path, pretrained, mode: str) -> None:
    ckpt, _ = pretrained
    warmup = {"wsrl": 6, "scratch": 6}.get(mode)
    res = train_wsrl(_cfg(tmp_path, ckpt, mode=mode, total_steps=12, warmup_steps=warmup))
    obs = _buffer_contents(res.buffer)["observations"]
    offline_rows = int((obs >= 100).all(1).sum())
    if mode == "keep_offline_append":
        assert offline_rows == 64 and len(res.buffer) == 64 + 24
    else:
        assert offline_rows == 0 and len(res.buffer) == 24
    # no update before the warmup ends and the buffer holds one round of online data (utd 2 x batch 4 = 8
    # transitions = 4 steps of 2 envs; 2 of them for the 50/50 mix), then utd updates per transition
    first = {"wsrl": 6, "scratch": 6, "keep_offline_mixed": 2}.get(mode, 4)
    assert res.agent.num_updates == (12 - first) * 2 * 2


@pytest.mark.parametrize("mix", ["concat", "per_batch"])
def test_mixed_rounds_are_half_offline(tmp_path, pretrained, monkeypatch, mix: str) -> None:
    ckpt, _ = pretrained
    critic: list[torch.Tensor] = []
    actor: list[torch.Tensor] = []
    orig_critic, orig_actor = SACAgent.update_critic, SACAgent.update_actor

    def spy_critic(self, batch, regularizer=None):
        critic.append(batch["observations"])
        return orig_critic(self, batch, regularizer)

    def spy_actor(self, batch):
        actor.append(batch["observations"])
        return orig_actor(self, batch)

    monkeypatch.setattr(SACAgent, "update_critic", spy_critic)
    monkeypatch.setattr(SACAgent, "update_actor", spy_actor)
    train_wsrl(_cfg(tmp_path, ckpt, mode="keep_offline_mixed", total_steps=8, warmup_steps=6, batch_size=8, mix=mix))
    offline_rows = [int((b >= 100).all(1).sum()) for b in critic]
    assert len(critic) == 2 * 2 * 2 and len(actor) == 2 * 2  # 2 steps x 2 envs, UTD 2, one actor step a round
    # the actor sees the whole round: 16 transitions, half of them offline
    assert all(len(b) == 16 and int((b >= 100).all(1).sum()) == 8 for b in actor)
    if mix == "per_batch":  # RLPD's symmetric sampling: every critic minibatch is half offline
        assert offline_rows == [4] * 8
    else:  # the official concatenation: online then offline, cut into the UTD minibatches
        assert offline_rows == [0, 8] * 4


def _metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


def test_exact_resume_keeps_metrics_and_switch_rows(tmp_path, pretrained) -> None:
    """Log and checkpoint periods coincide: the rows at the checkpoint step survive, the episodes after the
    switch are logged once each (index not restarting at 1), and re-running the finished run changes nothing."""
    ckpt, _ = pretrained
    # Pendulum episodes last 200 steps: with 2 envs, 4 episodes end at steps 200 and 400
    kw = dict(warmup_steps=6, checkpoint_every=200, log_every=100, utd=1, batch_size=2)
    full = train_wsrl(_cfg(tmp_path, ckpt, run_dir=str(tmp_path / "full"), total_steps=400, **kw))
    train_wsrl(_cfg(tmp_path, ckpt, run_dir=str(tmp_path / "part"), total_steps=200, **kw))
    part = train_wsrl(_cfg(tmp_path, ckpt, run_dir=str(tmp_path / "part"), total_steps=400, **kw))
    for k, v in full.agent.state_dict().items():
        torch.testing.assert_close(part.agent.state_dict()[k], v, rtol=0, atol=0, msg=k)
    np.testing.assert_array_equal(
        _buffer_contents(part.buffer)["observations"], _buffer_contents(full.buffer)["observations"]
    )
    rows = _metric_rows(tmp_path / "part")
    assert rows == _metric_rows(tmp_path / "full")
    assert [int(r["step"]) for r in rows if r["critic/td_loss"]] == [100, 200, 300, 400]
    assert [float(r["switch/episode_index"]) for r in rows if r["switch/episode_index"]] == [1, 2, 3, 4]
    assert part.switch_metrics == full.switch_metrics and "switch/q_data_mean" in part.switch_metrics
    before = (tmp_path / "part" / "metrics.csv").read_text()
    train_wsrl(_cfg(tmp_path, ckpt, run_dir=str(tmp_path / "part"), total_steps=400, **kw))
    assert (tmp_path / "part" / "metrics.csv").read_text() == before


def test_official_defaults() -> None:
    """finetune.py + launch_wsrl_finetune.sh (locomotion): UTD 4 with a 1024-transition round, 2M buffer, 5000
    warmup steps, online SAC without entropy backup, 500k online steps."""
    cfg = WSRLConfig()
    assert (cfg.utd, cfg.utd * cfg.batch_size, cfg.buffer_size) == (4, 1024, 2_000_000)
    assert cfg.actor_update == "all" and cfg.total_steps == 500_000 and cfg.mix == "concat"
    assert cfg.idle_steps  # every optimizer steps at every update of update_high_utd, as optax does there
    assert cfg.offline_ratio == 0.5 and cfg.scratch_warmup == "policy"
    assert cfg.agent == AgentConfig() and cfg.agent.backup_entropy is False


def test_loaded_agent_takes_the_online_loss_settings(tmp_path) -> None:
    """A CQL checkpoint trains with max-target backup; online WSRL (official sac_config.py) uses neither it nor
    the entropy backup, unless asked."""
    torch.manual_seed(0)
    agent = SACAgent(
        3,
        1,
        AgentConfig(hidden_dims=(16, 16), num_critics=3, max_target_backup=True, backup_entropy=True),
        action_low=-2.0,
        action_high=2.0,
    )
    path = tmp_path / "cql.pt"
    save_torch({"agent": agent.full_state_dict(), "env_id": ENV, "config": {}}, path)
    res = train_wsrl(_cfg(tmp_path, path, total_steps=2, warmup_steps=2))
    assert res.agent.config.backup_entropy is False and res.agent.config.max_target_backup is False
    res = train_wsrl(
        _cfg(
            tmp_path,
            path,
            total_steps=2,
            warmup_steps=2,
            backup_entropy=True,
            max_target_backup=True,
            resume=False,
            overwrite=True,
        )
    )
    assert res.agent.config.backup_entropy is True and res.agent.config.max_target_backup is True


@pytest.mark.parametrize(
    "mode,options,message",
    [
        ("wsrl", {"agent": AgentConfig(num_critics=2)}, "--agent"),
        ("keep_offline_append", {"agent": AgentConfig(actor_lr=1e-3)}, "--agent"),
        ("scratch", {"backup_entropy": True}, "--backup-entropy"),
        ("scratch", {"max_target_backup": False}, "--max-target-backup"),
        ("scratch", {"checkpoint": "x.pt"}, "--checkpoint"),
        ("wsrl", {"dataset": "d.h5"}, "--dataset"),
        ("no_warmup", {"warmup_steps": 100}, "--warmup-steps"),
        ("keep_offline_append", {"offline_ratio": 0.25}, "--offline-ratio"),
        ("wsrl", {"mix": "per_batch"}, "--mix"),
        ("wsrl", {"scratch_warmup": "uniform"}, "--scratch-warmup"),
    ],
)
def test_options_a_mode_ignores_are_rejected(tmp_path, pretrained, mode, options, message) -> None:
    ckpt, _ = pretrained
    cfg = _cfg(tmp_path, ckpt, mode=mode, total_steps=2)
    with pytest.raises(ValueError, match=f"--mode {mode} does not use .*{message}"):
        train_wsrl(WSRLConfig(**{**cfg.__dict__, **options}))


@pytest.mark.parametrize("warmup_actions", ["policy", "uniform"])
def test_scratch_warmup_acts_with_the_fresh_policy(tmp_path, pretrained, monkeypatch, warmup_actions) -> None:
    """Without pretraining the official code warms up with the fresh agent's own policy; uniform actions are an
    option."""
    from pyseqrl.policies import RandomPolicy

    calls = []
    orig = RandomPolicy.act
    monkeypatch.setattr(RandomPolicy, "act", lambda self, obs: calls.append(len(obs)) or orig(self, obs))
    ckpt, _ = pretrained
    res = train_wsrl(_cfg(tmp_path, ckpt, mode="scratch", total_steps=8, warmup_steps=6, scratch_warmup=warmup_actions))
    assert len(calls) == (6 if warmup_actions == "uniform" else 0)
    assert res.agent.num_updates == 2 * 2 * 2


def test_no_warmup_waits_for_one_round_of_data(tmp_path, pretrained) -> None:
    """Official finetune.py: no update before batch_size * (1 - offline share) online transitions."""
    ckpt, _ = pretrained
    res = train_wsrl(_cfg(tmp_path, ckpt, mode="no_warmup", total_steps=10, batch_size=6, utd=3, num_envs=2))
    first = math.ceil(3 * 6 / 2)  # 18 transitions at 2 per step
    assert res.agent.num_updates == (10 - first) * 2 * 3
    assert res.switch_metrics["switch/buffer_size"] == 2 * first
    res = train_wsrl(_cfg(tmp_path, ckpt, mode="no_warmup", total_steps=10, min_buffer=0, resume=False, overwrite=True))
    assert res.agent.num_updates == 10 * 2 * 2  # min_buffer 0: updates from the first step


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
        "2",
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
        "2",
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
    wsrl = [  # the network comes from the checkpoint: no --agent.* here
        "train",
        "wsrl",
        "--checkpoint",
        str(tmp_path / "calql" / "checkpoint.pt"),
        "--mode",
        "keep_offline_append",
        "--total-steps",
        "4",
        "--utd",
        "1",
        "--buffer-size",
        "500",
        *common,
    ]
    assert main([*wsrl, "--run-dir", str(tmp_path / "wsrl")]) == 0
    metrics = (tmp_path / "wsrl" / "metrics.csv").read_text()
    assert "critic/td_loss" in metrics and "eval/mean_return" in metrics
