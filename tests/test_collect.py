"""pyseqrl.collect: datasets from rollouts (exact budgets, no autoreset rows, determinism), recipes and the CLI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")
from pyseqrl.collect import EnvRunner, build_recipe, collect
from pyseqrl.envs import make
from pyseqrl.policies import Policy, RandomPolicy

warnings.filterwarnings("ignore", message=".*out of date.*")
SHORT = {"max_episode_steps": 25}


def test_collect_steps_exact_and_consistent() -> None:
    ds = collect("random", "Hopper-v4", num_envs=4, steps=203, seed=0, env_kwargs=SHORT, progress=False)
    assert len(ds) == 203 and ds.observation_dim == 11 and ds.action_dim == 3
    assert ds.next_observations is not None
    lengths = ds.episode_lengths()
    assert lengths.sum() == 203 and lengths.max() <= 25
    ends = ds.episode_ends - 1
    assert np.all(ds.terminals[ends] | ds.timeouts[ends])  # every episode ends, cut ones as timeouts
    assert not (ds.terminals & ds.timeouts).any()
    # within an episode, each next observation is the following observation (no autoreset row in between)
    inner = np.ones(len(ds), bool)
    inner[ends] = False
    np.testing.assert_array_equal(ds.next_observations[inner], ds.observations[1:][inner[:-1]])
    m = ds.metadata
    assert m["env_id"] == "Hopper-v4" and m["policy"] == "random" and m["seed"] == 0 and m["num_envs"] == 4
    complete = ds.terminals[ends] | (ds.episode_lengths() == 25)  # not cut short by the 203-step budget
    assert m["num_complete_episodes"] == complete.sum() < ds.num_episodes
    assert m["return_mean"] == pytest.approx(ds.episode_returns()[complete].mean(), rel=1e-5)
    assert (m["ref_min_score"], m["ref_max_score"]) == (-20.272305, 3234.3)


def test_collect_is_deterministic_by_seed() -> None:
    kw = {"num_envs": 3, "steps": 120, "env_kwargs": SHORT, "progress": False, "noise_std": 0.2, "epsilon": 0.1}
    a = collect("random", "Hopper-v4", seed=1, **kw)
    b = collect("random", "Hopper-v4", seed=1, **kw)
    c = collect("random", "Hopper-v4", seed=2, **kw)
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.actions, c.actions)
    assert a.metadata["noise_std"] == 0.2 and a.metadata["epsilon"] == 0.1
    assert a.metadata["policy"] == "random+gauss(0.2)+eps(0.1)"


def test_collect_episodes_uses_fixed_shares() -> None:
    ds = collect("random", "Hopper-v4", num_envs=4, episodes=6, seed=0, env_kwargs=SHORT, progress=False)
    assert ds.num_episodes == 6
    ends = ds.episode_ends - 1
    assert np.all(ds.terminals[ends] | ds.timeouts[ends])
    with pytest.raises(ValueError, match="exactly one of steps= and episodes="):
        collect("random", "Hopper-v4", steps=10, episodes=2)
    with pytest.raises(ValueError, match="positive integer"):
        collect("random", "Hopper-v4", steps=0)


def test_runner_resets_policy_state_at_episode_starts() -> None:
    events: list = []

    class Recorder(Policy):
        def reset(self, env_ids: np.ndarray) -> None:
            assert env_ids.dtype == np.int64
            events.append(("reset", env_ids.tolist()))

        def act(self, obs: np.ndarray) -> np.ndarray:
            events.append(("act", len(obs)))
            return np.zeros((len(obs), 3), np.float32)

        def observe(self, rewards: np.ndarray) -> None:
            events.append(("observe", len(rewards)))

    with make("Hopper-v4", 2, seed=0, max_episode_steps=3) as env:
        runner = EnvRunner(env)
        for _ in range(5):
            runner.step(Recorder())
    resets = [(i, e[1]) for i, e in enumerate(events) if e[0] == "reset"]
    # start; before the autoreset step's throw-away act (step 4); before the new episode's first act (step 5)
    assert [r[1] for r in resets] == [[0, 1], [0, 1], [0, 1]]
    assert [e[0] for e in events[:3]] == ["reset", "act", "observe"]

    with make("Hopper-v4", 2, seed=0) as env, pytest.raises(ValueError, match=r"= \(2, 3\)"):
        EnvRunner(env).step(RandomPolicy(-np.ones(2), np.ones(2)))


def test_medium_expert_recipe_concatenates() -> None:
    ds = build_recipe(
        "medium-expert",
        "Hopper-v4",
        policy="random",
        expert_policy="random:7",
        steps=60,
        num_envs=2,
        env_kwargs=SHORT,
        progress=False,
    )
    assert len(ds) == 120 and ds.metadata["recipe"] == "medium-expert"
    with pytest.raises(ValueError, match="needs --expert-policy"):
        build_recipe("medium-expert", "Hopper-v4", policy="random", steps=10)
    with pytest.raises(ValueError, match="unknown recipe"):
        build_recipe("hard", "Hopper-v4")


def test_cli_collect_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pyseqrl.cli import main
    from pyseqrl.data import load

    out = tmp_path / "hopper-random.h5"
    rc = main(
        [
            "collect",
            "--out",
            str(out),
            "--env-id",
            "Hopper-v4",
            "--recipe",
            "random",
            "--steps",
            "80",
            "--num-envs",
            "2",
            "--max-episode-steps",
            "20",
            "--no-progress",
        ]
    )
    assert rc == 0 and out.exists()
    assert "80 transitions" in capsys.readouterr().out
    ds = load(out)
    assert len(ds) == 80 and ds.metadata["recipe"] == "random" and ds.metadata["env_id"] == "Hopper-v4"


def test_medium_replay_recipe_uses_the_sac_trainer(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    ds = build_recipe("medium-replay", "Hopper-v4", steps=30, progress=False, run_dir=str(tmp_path / "sac"))
    assert 0 < len(ds) <= 30 and ds.metadata["recipe"] == "medium-replay" and ds.metadata["env_id"] == "Hopper-v4"


def test_one_module_steps_environments_and_imports_only_go_down(tmp_path: Path) -> None:
    """pyseqrl.rollout is the one environment-stepping module (collect re-exports it); the data and evaluation
    layers import no trainer, the trainers import no dataset recipe, and loading a SAC policy imports no trainer."""
    import subprocess
    import sys

    import pyseqrl.rollout

    assert EnvRunner is pyseqrl.rollout.EnvRunner
    checks = [
        # below the trainers: collection, evaluation, the SAC policy
        "import pyseqrl.collect, pyseqrl.evaluation, pyseqrl.policies.sac\n"
        "assert not [m for m in sys.modules if m.startswith('pyseqrl.algos')], sorted(sys.modules)",
        # the trainers do not depend on the dataset recipes
        "import pyseqrl.algos.wsrl, pyseqrl.algos.sac, pyseqrl.algos.calql\n"
        "assert 'pyseqrl.collect' not in sys.modules",
    ]
    for check in checks:
        out = subprocess.run(
            [sys.executable, "-c", "import sys\n" + check], capture_output=True, text=True, timeout=300, cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
