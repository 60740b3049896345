"""Shared fixtures: the ../shared assets folder and small random datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests cleanly where CUDA is unavailable."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


def random_dataset(lengths, obs_dim=3, act_dim=2, seed=0, terminal_last=True, next_obs=False, metadata=None):
    """An EpisodeDataset with the given episode lengths and random contents."""
    from pyseqrl.data import EpisodeDataset

    rng = np.random.default_rng(seed)
    n = int(np.sum(lengths))
    ends = np.cumsum(lengths)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    flags = rng.random(len(lengths)) < 0.5
    terminals[ends[flags] - 1] = True
    timeouts[ends[~flags] - 1] = True
    if not terminal_last:
        terminals[-1] = timeouts[-1] = False
    return EpisodeDataset.from_arrays(
        observations=rng.normal(size=(n, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        next_observations=rng.normal(size=(n, obs_dim)).astype(np.float32) if next_obs else None,
        metadata=metadata,
    )
