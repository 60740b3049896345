"""pyseqrl.evaluation: parallel masked evaluation, D4RL scores, return-conditioned targets and the CLI."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")
from pyseqrl.envs import make
from pyseqrl.evaluation import EvalResult, evaluate, run_episodes
from pyseqrl.policies import Policy
from pyseqrl.scores import D4RL_REFERENCE_SCORES

warnings.filterwarnings("ignore", message=".*out of date.*")
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
POLICIES = SHARED / "data" / "policies"


def test_scores_follow_the_d4rl_formula() -> None:
    result = evaluate("random", "Hopper-v4", episodes=6, seed=0, env_kwargs={"max_episode_steps": 30})
    assert isinstance(result, EvalResult) and len(result.returns) == 6 and len(result.lengths) == 6
    lo, hi = D4RL_REFERENCE_SCORES["hopper"]
    np.testing.assert_allclose(result.normalized_scores, 100 * (result.returns - lo) / (hi - lo))
    assert result.normalized_score == pytest.approx(100 * (result.returns.mean() - lo) / (hi - lo))
    assert result.mean_return == pytest.approx(result.returns.mean()) and result.lengths.max() <= 30
    explicit = evaluate(
        "random", "Hopper-v4", episodes=6, seed=0, env_kwargs={"max_episode_steps": 30}, ref_min=0.0, ref_max=50.0
    )
    np.testing.assert_array_equal(explicit.returns, result.returns)  # same seed, same episodes
    np.testing.assert_allclose(explicit.normalized_scores, 2 * result.returns)
    assert evaluate("random", "Pendulum-v1", episodes=2).normalized_score is None  # no reference: no score
    with pytest.raises(ValueError, match="both ref_min and ref_max"):
        evaluate("random", "Hopper-v4", episodes=1, ref_min=0.0)
    with pytest.raises(ValueError, match="episodes must be an integer >= 1, got 0"):
        evaluate("random", "Hopper-v4", episodes=0)


class _FallsAfter(Policy):
    """Constant actions; env 0's episodes are short (strong push), the others long: tests the fixed shares."""

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = np.zeros((len(obs), 3), np.float32)
        a[0] = 1.0
        return a


def test_each_env_runs_a_fixed_share_of_episodes() -> None:
    with make("Hopper-v4", 2, seed=0, max_episode_steps=60) as env:
        returns, lengths, steps = run_episodes(_FallsAfter(), env, episodes=5)
    # env 0 has 3 episodes and env 1 has 2, even though env 0's episodes are much shorter
    assert len(returns) == 5 and lengths[3] == lengths[4] == 60
    assert lengths[:3].max() < 60 and steps >= 120


def test_target_returns_use_with_target() -> None:
    seen: list = []

    class Conditioned(Policy):
        def __init__(self, target: float | None = None) -> None:
            self.target = target

        def with_target(self, target: float) -> Conditioned:
            seen.append(target)
            return Conditioned(target)

        def act(self, obs: np.ndarray) -> np.ndarray:
            assert self.target is not None
            return np.full((len(obs), 3), 0.1 if self.target > 1000 else -0.1, np.float32)

    result = evaluate(
        Conditioned(), "Hopper-v4", episodes=2, target_returns=[3600, 1800, 900], env_kwargs={"max_episode_steps": 20}
    )
    assert seen == [3600.0, 1800.0, 900.0] and list(result.per_target) == [3600.0, 1800.0, 900.0]
    assert result.target_return == 3600.0 and result.mean_return == result.per_target[3600.0].mean_return
    assert result.per_target[3600.0].mean_return != result.per_target[900.0].mean_return
    assert "target_900/normalized_score" in result.as_dict()
    assert "target 1800" in str(result)
    with pytest.raises(TypeError, match="with_target"):
        evaluate("random", "Hopper-v4", episodes=1, target_returns=[1.0])


@pytest.mark.skipif(not POLICIES.exists(), reason="../shared/data/policies not available")
def test_real_expert_scores_like_the_manifest() -> None:
    """cs285 Hopper expert: 3728 +- 2 over 1000 steps (MANIFEST); 200 steps here keep it fast."""
    result = evaluate(
        f"cs285:{POLICIES / 'cs285' / 'policy_Hopper.pkl'}",
        "Hopper-v4",
        episodes=2,
        seed=100,
        env_kwargs={"max_episode_steps": 200},
    )
    assert np.all(result.lengths == 200) and result.mean_return > 500  # random: about 20


def test_cli_evaluate(capsys: pytest.CaptureFixture[str]) -> None:
    from pyseqrl.cli import main

    rc = main(
        [
            "evaluate",
            "--policy",
            "random",
            "--env-id",
            "Hopper-v4",
            "--episodes",
            "3",
            "--max-episode-steps",
            "20",
            "--no-progress",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "Hopper-v4: return" in out and "over 3 episodes" in out and "D4RL score" in out


def test_cli_evaluate_in_a_subprocess(tmp_path) -> None:
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "-m",
        "pyseqrl.cli",
        "evaluate",
        "--policy",
        "random",
        "--env-id",
        "Pendulum-v1",
        "--episodes",
        "2",
        "--max-episode-steps",
        "10",
        "--backend",
        "gymnasium",
        "--no-progress",
    ]
    # cwd outside the source tree: `python -m` puts the cwd first on sys.path
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Pendulum-v1: return" in out.stdout and "length 10" in out.stdout
