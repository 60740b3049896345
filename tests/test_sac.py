"""Online SAC from scratch: CLI end to end, replay datasets without autoreset rows, exact resume with its metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pyseqrl._core")
pytest.importorskip("envpool")
from pyseqrl.algos.rl_agent import AgentConfig, SACPolicy
from pyseqrl.algos.sac import SACConfig, sac_replay_dataset, train_sac

TINY = AgentConfig(hidden_dims=(16, 16), num_critics=3)


def test_replay_dataset_has_only_real_transitions(tmp_path) -> None:
    # 2 envs x 230 steps of Pendulum (200-step episodes): each env makes 200 + 29 real steps and 1 reset step
    ds = sac_replay_dataset(
        "Pendulum-v1",
        total_steps=230,
        seed=0,
        num_envs=2,
        learning_starts=230,
        run_dir=str(tmp_path),
        agent=TINY,
        buffer_size=1000,
        tensorboard=False,
    )
    assert len(ds) == 2 * 229
    assert sorted(ds.episode_lengths().tolist()) == [29, 29, 200, 200]
    assert not ds.terminals.any() and ds.timeouts.sum() == 4  # time limits and the cut running episodes
    assert ds.metadata["env_id"] == "Pendulum-v1"
    # within an episode, next_observations[t] == observations[t + 1]
    starts, ends = ds.episode_starts, ds.episode_ends
    for s, e in zip(starts, ends):
        np.testing.assert_array_equal(ds.next_observations[s : e - 1], ds.observations[s + 1 : e])


def test_cli_end_to_end_and_policy(tmp_path) -> None:
    from pyseqrl.cli import main

    out = tmp_path / "replay.h5"
    # a YAML preset with a nested section, overridden by explicit flags
    preset = tmp_path / "preset.yaml"
    preset.write_text("env_id: Pendulum-v1\ntotal_steps: 999\nagent:\n  hidden_dims: [16, 16]\n  num_critics: 3\n")
    args = ["train", "sac", "--config", str(preset), "--total-steps", "12", "--learning-starts", "6"]
    args += [
        "--batch-size",
        "8",
        "--buffer-size",
        "100",
        "--eval-every",
        "0",
        "--no-progress",
        "--log-every",
        "4",
    ]
    args += ["--save-replay", str(out), "--run-dir", str(tmp_path / "run")]
    assert main(args) == 0
    from pyseqrl.data import load

    assert len(load(out)) == 12
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["total_steps"] == 12 and ckpt["config"]["agent"]["num_critics"] == 3
    # the saved config.yaml is a preset that gives back the same configuration
    from pyseqrl.utils.runs import parse_config

    again = parse_config(SACConfig, ["--config", str(tmp_path / "run" / "config.yaml")], "")
    assert again == SACConfig(
        **{**ckpt["config"], "agent": AgentConfig(**{**ckpt["config"]["agent"], "hidden_dims": (16, 16)})}
    )
    policy = SACPolicy.from_checkpoint(tmp_path / "run" / "checkpoint.pt")
    a = policy.act(np.zeros((5, 3), np.float32))
    assert a.shape == (5, 1) and (np.abs(a) <= 2.0).all()
    # the policy registry finds the actor by scheme, and evaluation runs it
    from pyseqrl.policies import load_policy

    for spec in ("sac:", "pyseqrl:"):
        p = load_policy(spec + str(tmp_path / "run" / "checkpoint.pt"))
        np.testing.assert_array_equal(p.act(np.zeros((5, 3), np.float32)), a)
    from pyseqrl.evaluation import evaluate

    res = evaluate(policy, "Pendulum-v1", episodes=2, seed=0)
    assert len(res.returns) == 2 and np.isfinite(res.mean_return)


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv without the wall-clock columns."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(f)]


def tensorboard_steps(run_dir: Path, tag: str) -> list[int]:
    """Steps of the TensorBoard scalars ``tag`` as TensorBoard shows them (events purged on resume dropped)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return sorted(e.step for e in events.Scalars(tag))  # (two event files written in the same second: any order)


def test_exact_resume_keeps_the_metrics_at_the_checkpoint_step(tmp_path) -> None:
    """Log and checkpoint periods coincide (as the defaults 1,000 and 50,000 always do): the rows logged at the
    checkpoint step survive the resume, in metrics.csv and in TensorBoard, and a finished run re-run with
    --resume is left as it was."""
    pytest.importorskip("tensorboard")

    def cfg(run: str, total: int) -> SACConfig:
        return SACConfig(
            env_id="Pendulum-v1",
            total_steps=total,
            learning_starts=5,
            utd=2,
            num_envs=2,
            batch_size=8,
            buffer_size=200,
            agent=TINY,
            checkpoint_every=6,
            eval_every=0,
            log_every=3,
            progress=False,
            tensorboard=True,
            run_dir=str(tmp_path / run),
        )

    full = train_sac(cfg("full", 12))
    train_sac(cfg("part", 6))
    part = train_sac(cfg("part", 12))  # resume is the default
    for k, v in full.agent.state_dict().items():
        torch.testing.assert_close(part.agent.state_dict()[k], v, rtol=0, atol=0, msg=k)
    full_ck = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    part_ck = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    for k in ("actor_optim", "critic_optim"):
        for a, b in zip(full_ck["agent"][k]["state"].values(), part_ck["agent"][k]["state"].values()):
            torch.testing.assert_close(a["exp_avg"], b["exp_avg"], rtol=0, atol=0)
    rows = metric_rows(tmp_path / "part")
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    assert rows == metric_rows(tmp_path / "full")
    assert tensorboard_steps(tmp_path / "part", "critic/td_loss") == [6, 9, 12]  # updates start after step 5
    assert part.episode_returns == full.episode_returns
    # re-running the finished command changes nothing: no row is dropped, no step is taken
    before = (tmp_path / "part" / "metrics.csv").read_text()
    again = train_sac(cfg("part", 12))
    assert (tmp_path / "part" / "metrics.csv").read_text() == before
    assert again.agent.num_updates == part.agent.num_updates
    assert tensorboard_steps(tmp_path / "part", "critic/td_loss") == [6, 9, 12]
    # --no-resume starts over
    fresh = train_sac(SACConfig(**{**cfg("part", 6).__dict__, "resume": False, "overwrite": True}))
    assert [int(r["step"]) for r in metric_rows(tmp_path / "part")] == [3, 6]
    assert fresh.agent.num_updates < part.agent.num_updates


def test_export_actor_round_trip_and_bad_checkpoint(tmp_path) -> None:
    from pyseqrl.algos.rl_agent import export_actor
    from pyseqrl.utils.checkpoint import load_torch, save_torch

    cfg = SACConfig(
        env_id="Pendulum-v1",
        total_steps=12,
        learning_starts=6,
        batch_size=8,
        buffer_size=100,
        agent=TINY,
        eval_every=0,
        run_dir=str(tmp_path / "run"),
        tensorboard=False,
        progress=False,
    )
    train_sac(cfg)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    out = export_actor(ckpt, tmp_path / "actor.pt", note="x")
    saved = load_torch(out)
    assert "agent" not in saved and saved["metadata"] == {"env_id": "Pendulum-v1", "note": "x"}
    obs = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    np.testing.assert_array_equal(SACPolicy.from_checkpoint(out).act(obs), SACPolicy.from_checkpoint(ckpt).act(obs))

    save_torch({"step": 3}, tmp_path / "other.pt")
    for load in (lambda p: export_actor(p, tmp_path / "never.pt"), SACPolicy.from_checkpoint):
        with pytest.raises(ValueError, match=r"other.pt' is not a pyseqrl SAC/Cal-QL/WSRL checkpoint"):
            load(tmp_path / "other.pt")
    assert not (tmp_path / "never.pt").exists()
