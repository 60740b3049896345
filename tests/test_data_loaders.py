"""pyseqrl.data.load on files the tests write, on corrupt files, and on the real D4RL file in ../shared."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pytest
from conftest import random_dataset

from pyseqrl.data import load


def write_d4rl(path, n=25, timeouts=True, next_obs=False, trailing=True):
    rng = np.random.default_rng(0)
    term = np.zeros(n, bool)
    term[[4, 14]] = True
    tout = np.zeros(n, bool)
    tout[9] = True
    if not trailing:
        tout[-1] = True
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, 3))
        f["actions"] = rng.normal(size=(n, 2)).astype(np.float32)
        f["rewards"] = rng.normal(size=(n,))
        f["terminals"] = term
        if timeouts:
            f["timeouts"] = tout
        if next_obs:
            f["next_observations"] = rng.normal(size=(n, 3))
        f.create_group("metadata")["algorithm"] = b"SAC"
    return path


def test_d4rl_hdf5(tmp_path):
    ds = load(write_d4rl(tmp_path / "d.hdf5"))
    assert ds.episode_ends.tolist() == [5, 10, 15, 25]  # trailing unfinished episode kept
    assert ds.metadata["source_format"] == "d4rl" and ds.metadata["d4rl/algorithm"] == "SAC"
    assert ds.next_observations is None
    ds2 = load(write_d4rl(tmp_path / "e.hdf5", timeouts=False, next_obs=True, trailing=False))
    assert ds2.episode_ends.tolist() == [5, 15, 25] and ds2.next_observations is not None


def test_minari_directory(tmp_path):
    root = tmp_path / "minari" / "data"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with h5py.File(root / "main_data.hdf5", "w") as f:
        f.attrs["env_spec"] = json.dumps({"id": "Hopper-v5"})
        for i, t in enumerate([4, 6]):
            g = f.create_group(f"episode_{i}")
            g["observations"] = rng.normal(size=(t + 1, 3))
            g["actions"] = rng.normal(size=(t, 2))
            g["rewards"] = np.ones(t)
            g["terminations"] = np.eye(1, t, t - 1, dtype=bool)[0] if i == 0 else np.zeros(t, bool)
            g["truncations"] = np.zeros(t, bool) if i == 0 else np.eye(1, t, t - 1, dtype=bool)[0]
    ds = load(tmp_path / "minari")
    assert ds.episode_ends.tolist() == [4, 10] and ds.metadata["env_id"] == "Hopper-v5"
    assert ds.terminals.sum() == 1 and ds.timeouts.sum() == 1
    with h5py.File(root / "main_data.hdf5", "r") as f:
        np.testing.assert_allclose(ds.next_observations[:4], f["episode_0/observations"][1:], rtol=1e-6)


def test_dt_pickle(tmp_path):
    ds = random_dataset([3, 5], next_obs=True)
    eps = [{**{k: v for k, v in ds.episode(i).items() if k != "timeouts"}} for i in range(2)]
    path = tmp_path / "hopper-medium-v2.pkl"
    path.write_bytes(pickle.dumps(eps))
    back = load(path)
    np.testing.assert_array_equal(back.observations, ds.observations)
    np.testing.assert_array_equal(back.episode_ends, ds.episode_ends)
    path.write_bytes(pickle.dumps({"observations": np.zeros((3, 2))}))
    with pytest.raises(ValueError, match="got one dict of flat arrays"):
        load(path)


def test_pyseqrl_file_round_trip(tmp_path):
    ds = random_dataset([4, 4], metadata={"env_id": "Walker2d-v4"})
    back = load(ds.save(tmp_path / "x.hdf5"))
    assert back.metadata["env_id"] == "Walker2d-v4"
    np.testing.assert_array_equal(back.rewards, ds.rewards)


def test_corrupt_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nope.hdf5")
    full = write_d4rl(tmp_path / "full.hdf5", n=5000)
    trunc = tmp_path / "trunc.hdf5"
    trunc.write_bytes(full.read_bytes()[:3000])
    with pytest.raises(ValueError, match="trunc.hdf5"):
        load(trunc)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="unknown dataset format"):
        load(junk)
    bad_pkl = tmp_path / "bad.pkl"
    bad_pkl.write_bytes(pickle.dumps([{"observations": np.zeros((2, 2))}])[:-5])
    with pytest.raises(ValueError, match="cannot unpickle"):
        load(bad_pkl)
    with h5py.File(tmp_path / "nokeys.hdf5", "w") as f:
        f["observations"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="missing dataset 'actions'"):
        load(tmp_path / "nokeys.hdf5")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="not a Minari dataset"):
        load(tmp_path / "emptydir")
    with pytest.raises(ValueError, match="format: expected one of"):
        load(full, format="rlds")


def test_real_d4rl_door_file(shared_dir):
    ds = load(shared_dir / "data" / "d4rl" / "door-v0_demos_clipped.hdf5")
    assert ds.observations.shape == (6729, 39) and ds.actions.shape == (6729, 28)
    assert ds.num_episodes == 50  # 25 terminals + 25 timeouts, never on the same step
    assert ds.rewards.sum() == pytest.approx(19891.4, rel=1e-4)
    assert np.abs(ds.actions).max() <= 1.0


def test_real_cs285_expert_pickle(shared_dir):
    ds = load(shared_dir / "data" / "policies" / "cs285" / "expert_data_Hopper-v4.pkl")
    assert ds.num_episodes == 2 and len(ds) == 2000
    np.testing.assert_allclose(ds.episode_returns(), [3717, 3718], atol=1.0)
