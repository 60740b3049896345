"""pyseqrl's own reference policies (pyseqrl/assets/policies) load through the builtin: scheme and act sensibly."""

from __future__ import annotations

import numpy as np
import pytest

from pyseqrl.policies import builtin_policies, load_policy
from pyseqrl.utils.checkpoint import load_torch


def test_builtin_policies_are_shipped_and_load():
    available = builtin_policies()
    dims = {"Hopper-v4": (11, 3), "HalfCheetah-v4": (17, 6), "Walker2d-v4": (17, 6)}
    assert set(dims) <= set(available)
    for env_id, (S, A) in dims.items():
        meta = load_torch(available[env_id])["metadata"]
        assert meta["env_id"] == env_id and meta["eval_episodes"] == 20
        assert meta["d4rl_score"] >= 40, f"{env_id}: the issue asks for at least medium-level policies"
        policy = load_policy(f"builtin:{env_id}")
        obs = np.random.default_rng(0).normal(size=(4, S)).astype(np.float32)
        actions = policy.act(obs)
        assert actions.shape == (4, A) and np.all(np.abs(actions) <= 1.0)
        np.testing.assert_array_equal(actions, policy.act(obs))  # deterministic


def test_unknown_builtin_policy_names_the_available_ones():
    with pytest.raises(ValueError, match=r"no built-in policy for 'Ant-v4'; available: \['HalfCheetah-v4'"):
        load_policy("builtin:Ant-v4")


@pytest.mark.parametrize("env_id", ["HalfCheetah-v4", "Hopper-v4", "Walker2d-v4"])
def test_builtin_policy_collects_its_measured_return(env_id):
    pytest.importorskip("envpool")
    from pyseqrl.evaluation import evaluate

    meta = load_torch(builtin_policies()[env_id])["metadata"]
    result = evaluate(f"builtin:{env_id}", env_id, episodes=2, seed=100)  # seed of the measurement
    assert abs(result.mean_return - meta["eval_return_mean"]) < 5 * meta["eval_return_std"] + 50
