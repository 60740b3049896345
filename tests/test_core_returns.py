"""returns_to_go (native) against the plain references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyseqrl
from pyseqrl.data.reference import returns_to_go_loop, returns_to_go_numpy

lengths_st = st.lists(st.integers(1, 40), min_size=1, max_size=25)
gamma_st = st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 1.0))


@given(lengths=lengths_st, gamma=gamma_st, seed=st.integers(0, 2**16))
@settings(max_examples=80, deadline=None)
def test_matches_python_loop(lengths, gamma, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(scale=10, size=sum(lengths)).astype(np.float32)
    ends = np.cumsum(lengths).astype(np.int64)
    got = pyseqrl.returns_to_go(rewards, ends, gamma)
    assert got.dtype == np.float32 and got.shape == rewards.shape
    np.testing.assert_allclose(got, returns_to_go_loop(rewards, ends, gamma), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got, returns_to_go_numpy(rewards, ends, gamma), rtol=1e-5, atol=1e-4)


def test_large_parallel_matches_reference():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 1000, size=600)
    rewards = rng.normal(size=lengths.sum()).astype(np.float32)
    ends = np.cumsum(lengths)
    for gamma in (1.0, 0.99):
        np.testing.assert_allclose(
            pyseqrl.returns_to_go(rewards, ends, gamma), returns_to_go_numpy(rewards, ends, gamma), rtol=1e-5, atol=1e-3
        )


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize(
    "lengths",
    [
        [200_000],  # one episode spanning every segment
        [50_000] * 4,  # episode ends exactly on segment boundaries
        [1] * 5_000 + [70_000],  # many one-step episodes, then a long one
        [3, 131_069, 1, 7, 65_456],  # long episodes crossing several segments, short ones between
        [255, 1, 1023],  # fewer steps than the segment size
    ],
)
def test_segmented_passes_match_reference(lengths, parallel):
    rng = np.random.default_rng(len(lengths))
    rewards = rng.normal(size=sum(lengths)).astype(np.float32)
    ends = np.cumsum(lengths)
    for gamma in (1.0, 0.999, 0.5, 0.0):
        got = pyseqrl._native.core.returns_to_go(rewards, ends, gamma, parallel)
        np.testing.assert_allclose(got, returns_to_go_numpy(rewards, ends, gamma), rtol=1e-5, atol=2e-3)


@given(lengths=st.lists(st.integers(1, 3000), min_size=1, max_size=8), gamma=gamma_st)
@settings(max_examples=30, deadline=None)
def test_segmented_random_lengths(lengths, gamma):
    rewards = np.random.default_rng(0).normal(size=sum(lengths)).astype(np.float32)
    ends = np.cumsum(lengths)
    np.testing.assert_allclose(
        pyseqrl._native.core.returns_to_go(rewards, ends, gamma, False),
        returns_to_go_loop(rewards, ends, gamma),
        rtol=1e-5,
        atol=1e-3,
    )


def test_float64_accumulation():
    # 1e6 rewards of 0.1: float32 accumulation drifts by ~1e-3 relative; float64 does not.
    rewards = np.full(1_000_000, 0.1, np.float32)
    out = pyseqrl.returns_to_go(rewards, np.array([rewards.size]))
    assert abs(out[0] - np.float64(np.float32(0.1)) * 1e6) / 1e5 < 1e-6


@pytest.mark.parametrize(
    "rewards, ends, gamma, match",
    [
        (np.ones(4, np.float64), np.array([4]), 1.0, "rewards: expected dtype float32, got float64"),
        (np.ones((4, 1), np.float32), np.array([4]), 1.0, "rewards: expected a 1-D array"),
        (np.ones(4, np.float32), np.array([4], np.int32), 1.0, "episode_ends: expected dtype int64"),
        (np.ones(4, np.float32), np.array([2, 2, 4]), 1.0, "strictly increasing"),
        (np.ones(4, np.float32), np.array([0, 4]), 1.0, "strictly increasing"),
        (np.ones(4, np.float32), np.array([3]), 1.0, "must equal the number of steps 4, got 3"),
        (np.ones(4, np.float32), np.array([2, 5]), 1.0, "must equal the number of steps 4, got 5"),
        (np.ones(4, np.float32), np.zeros(0, np.int64), 1.0, "at least one episode"),
        (np.ones(4, np.float32), np.array([4]), 1.5, r"gamma: expected a value in \[0, 1\], got 1.5"),
        (np.ones(4, np.float32), np.array([4]), -0.1, "gamma"),
        (np.array([1, np.nan, 1, 1], np.float32), np.array([4]), 1.0, "finite values, got nan at index 1"),
        (np.array([1, 1, np.inf, 1], np.float32), np.array([2, 4]), 1.0, r"index 2 \(episode 1\)"),
        ([1.0, 2.0], np.array([2]), 1.0, "rewards: expected a numpy array, got list"),
    ],
)
def test_bad_input(rewards, ends, gamma, match):
    with pytest.raises(ValueError, match=match):
        pyseqrl.returns_to_go(rewards, np.asarray(ends) if not isinstance(ends, np.ndarray) else ends, gamma)
