"""EpisodeDataset: construction, statistics, subsets, transitions and validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_dataset

from pyseqrl.data import EpisodeDataset, load
from pyseqrl.scores import D4RL_REFERENCE_SCORES


def test_from_arrays_splits_at_terminals_and_timeouts_and_keeps_trailing():
    ds = EpisodeDataset.from_arrays(
        observations=np.arange(7, dtype=np.float32)[:, None],
        actions=np.zeros((7, 1)),
        rewards=np.arange(7),
        terminals=[0, 1, 0, 0, 0, 0, 0],
        timeouts=[0, 0, 0, 1, 0, 0, 0],
    )
    assert ds.episode_ends.tolist() == [2, 4, 7]
    assert ds.episode_lengths().tolist() == [2, 2, 3]
    assert ds.episode_returns().tolist() == [1.0, 5.0, 15.0]
    assert not ds.terminals[-1] and not ds.timeouts[-1]  # the trailing unfinished episode is kept, truncated
    assert ds.episode_starts.tolist() == [0, 2, 4]
    assert ds.episode_index().tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert ds.observations.dtype == np.float32 and ds.terminals.dtype == bool


def test_complete_episodes_leave_out_the_ones_cut_by_the_budget():
    # lengths 2 (terminal), 4 (time limit), 1 (terminal), 4 (time limit), 3 (cut by the end of the collection)
    term = [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    tout = [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0]
    ds = EpisodeDataset.from_arrays(np.zeros((14, 1)), np.zeros((14, 1)), np.arange(14), term, tout)
    assert ds.episode_lengths().tolist() == [2, 4, 1, 4, 3]
    assert ds.complete_episodes().tolist() == [True, True, True, True, False]
    # no episode at a time limit: every one that did not terminate was cut, the longest of them too
    term, tout = [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0, 0]
    cut = EpisodeDataset.from_arrays(np.zeros((8, 1)), np.zeros((8, 1)), np.ones(8), term, tout)
    assert cut.episode_lengths().tolist() == [2, 4, 2] and cut.complete_episodes().tolist() == [True, False, False]


def test_collected_dataset_scores_its_complete_episodes():
    """The behaviour level of a collected dataset: its complete episodes, as the collector's own statistics."""
    pytest.importorskip("envpool")
    from pyseqrl import experiments as ex
    from pyseqrl.collect import collect
    from pyseqrl.scores import normalized_score

    ds = collect("random", "Hopper-v4", num_envs=4, steps=300, seed=0, progress=False)
    complete = ds.complete_episodes()
    assert complete.sum() == ds.metadata["num_complete_episodes"] and not complete.all()  # 4 cut, one per env
    level = normalized_score(ds.metadata["return_mean"], *ds.reference_scores())
    assert ex.dataset_score(ds) == pytest.approx(level)
    assert ex.behaviour_scores(ds).shape == (complete.sum(),)


def test_from_episodes_with_t_plus_one_observations_and_flags():
    eps = [
        {"observations": np.zeros((4, 2)), "actions": np.zeros((3, 1)), "rewards": np.ones(3), "terminated": True},
        {
            "observations": np.ones((2, 2)),
            "actions": np.zeros((2, 1)),
            "rewards": np.ones(2),
            "next_observations": np.ones((2, 2)) * 2,
            "truncated": True,
        },
    ]
    ds = EpisodeDataset.from_episodes(eps)
    assert ds.episode_ends.tolist() == [3, 5]
    assert ds.terminals.tolist() == [False, False, True, False, False]
    assert ds.timeouts.tolist() == [False, False, False, False, True]
    assert ds.next_observations is not None and ds.next_observations[4].tolist() == [2, 2]
    # singular (CS285-style) keys
    ds2 = EpisodeDataset.from_episodes(
        [
            {
                "observation": np.zeros((3, 2)),
                "action": np.zeros((3, 1)),
                "reward": np.ones(3),
                "terminal": np.array([0, 0, 1]),
            }
        ]
    )
    assert ds2.terminals.tolist() == [False, False, True]


def test_statistics_against_numpy():
    ds = random_dataset([10, 20, 5], obs_dim=4, metadata={"env_id": "Hopper-v4"})
    mean, std = ds.state_stats()
    np.testing.assert_allclose(mean, ds.observations.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std, ds.observations.std(0) + 1e-6, rtol=1e-5)
    lo, hi = D4RL_REFERENCE_SCORES["hopper"]
    np.testing.assert_allclose(ds.normalized_scores(), 100 * (ds.episode_returns() - lo) / (hi - lo))
    np.testing.assert_allclose(ds.normalized_scores(0.0, 2.0), 50 * ds.episode_returns())
    with pytest.raises(ValueError, match="need reference scores"):
        random_dataset([3]).normalized_scores()
    with pytest.raises(KeyError, match="no built-in D4RL reference scores for env 'Pong-v5'"):
        random_dataset([3], metadata={"env_id": "Pong-v5"}).normalized_scores()


def test_top_episodes_matches_dt_pct_traj():
    lengths = np.array([10, 30, 20, 40])
    ds = random_dataset(lengths)
    returns = ds.episode_returns()
    for pct in (0.01, 0.25, 0.5, 0.75, 1.0):
        # the original DT selection
        num_timesteps = max(int(pct * lengths.sum()), 1)
        sorted_inds = np.argsort(returns)
        n, t, ind = 1, lengths[sorted_inds[-1]], len(lengths) - 2
        while ind >= 0 and t + lengths[sorted_inds[ind]] <= num_timesteps:
            t += lengths[sorted_inds[ind]]
            n += 1
            ind -= 1
        want = np.sort(sorted_inds[-n:])
        sub = ds.top_episodes(pct)
        np.testing.assert_allclose(sub.episode_returns(), returns[want], rtol=1e-6)


def test_subsets_are_seeded_and_sized():
    ds = random_dataset(np.full(100, 10))
    a, b = ds.subset_episodes(0.1, seed=1), ds.subset_episodes(0.1, seed=1)
    assert a.num_episodes == 10 and np.array_equal(a.observations, b.observations)
    assert not np.array_equal(ds.subset_episodes(0.1, seed=2).observations, a.observations)
    s = ds.subset_steps(0.25, seed=0)
    assert len(s) == 250 and s.metadata["subset"] == {"kind": "steps", "fraction": 0.25, "seed": 0}
    assert ds.subset_steps(0.001, seed=0).num_episodes == 1
    with pytest.raises(ValueError, match=r"fraction: expected a number in \(0, 1\], got 0"):
        ds.subset_episodes(0)
    with pytest.raises(ValueError, match="fraction"):
        ds.top_episodes(1.5)


def test_select_concatenate_transitions():
    ds = random_dataset([3, 4, 5], obs_dim=2, act_dim=1, terminal_last=False)
    sel = ds.select([2, 0])
    assert sel.episode_lengths().tolist() == [5, 3]
    np.testing.assert_array_equal(sel.observations[:5], ds.observations[7:12])
    both = EpisodeDataset.concatenate([ds, sel])
    assert both.num_episodes == 5 and both.episode_ends.tolist() == [3, 7, 12, 17, 20]
    with pytest.raises(IndexError, match="episode indices must be in"):
        ds.select([3])
    with pytest.raises(ValueError, match="dimensions differ"):
        EpisodeDataset.concatenate([ds, random_dataset([2], obs_dim=5)])
    t = ds.transitions()
    # a non-terminal episode end has no next observation: dropped; terminal ends are kept
    last = ds.episode_ends - 1
    kept_last = [i for i in last if ds.terminals[i]]
    assert len(t["rewards"]) == len(ds) - len(last) + len(kept_last)
    i = int(np.flatnonzero(t["step_index"] == 0)[0])
    np.testing.assert_array_equal(t["next_observations"][i], ds.observations[1])


def test_select_with_boolean_masks_and_bad_indices():
    ds = random_dataset([3, 4, 5, 6], obs_dim=2, act_dim=1)
    lengths = ds.episode_lengths()
    for mask in ([False, False, True, True], np.array([True, False, True, False]), (True, True, False, True)):
        sel = ds.select(mask)
        want = np.flatnonzero(np.asarray(mask))  # numpy's own boolean indexing is the reference
        assert sel.episode_lengths().tolist() == lengths[want].tolist()
        np.testing.assert_array_equal(
            sel.observations, np.concatenate([ds.episode(int(i))["observations"] for i in want])
        )
    # integer indices of any integer dtype, in order, repeats allowed
    for ids in ([3, 0, 3], np.array([1, 2], np.uint8), np.array([2], np.int32), range(4)):
        assert ds.select(ids).episode_lengths().tolist() == lengths[np.asarray(list(ids))].tolist()
    with pytest.raises(ValueError, match=r"a boolean mask must have one entry per episode \(4\), got 3"):
        ds.select([True, False, True])
    with pytest.raises(ValueError, match="expected at least one episode index, got none"):
        ds.select(np.zeros(4, bool))
    with pytest.raises(TypeError, match=r"got dtype float64 \(e.g. 1.5\); floats are not truncated"):
        ds.select([0.0, 1.5])
    with pytest.raises(TypeError, match="got dtype float32"):
        ds.select(np.array([1, 2], np.float32))
    with pytest.raises(TypeError, match="mix of booleans and integers"):
        ds.select([True, 2])
    with pytest.raises(TypeError, match="dtype <U1"):
        ds.select(["a"])
    with pytest.raises(IndexError, match=r"episode indices must be in \[0, 4\), got -1..2"):
        ds.select([2, -1])
    with pytest.raises(IndexError, match=r"must be in \[0, 4\), got 0..4"):
        ds.select(np.array([0, 4]))
    with pytest.raises(ValueError, match=r"1-D sequence .* got shape \(2, 1\)"):
        ds.select(np.array([[0], [1]]))
    with pytest.raises(TypeError, match="episode index: expected an integer, got float 1.0"):
        ds.episode(1.0)
    with pytest.raises(TypeError, match="expected an integer, got bool"):
        ds.episode(True)
    assert ds.episode(np.int64(-1))["rewards"].shape == (6,)


def test_save_and_load_round_trip(tmp_path):
    ds = random_dataset([3, 8, 2], next_obs=True, metadata={"env_id": "Hopper-v4", "seed": np.int64(3), "policy": "x"})
    path = ds.save(tmp_path / "d.h5")
    back = load(path)
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations", "episode_ends"):
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
    assert back.metadata == {"env_id": "Hopper-v4", "seed": 3, "policy": "x"}
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


def test_fingerprint_names_the_transitions_not_the_file(tmp_path):
    from pyseqrl import experiments as ex

    ds = random_dataset([3, 8, 2], metadata={"env_id": "Hopper-v4"})
    fp = ex.dataset_fingerprint(ds)
    assert len(fp) == 16 and ex.dataset_fingerprint(ds.save(tmp_path / "a.h5")) == fp  # a saved copy: the same
    rewards = ds.rewards.copy()
    rewards[5] += 1e-6  # one reward a hair apart: another sample
    other = EpisodeDataset(ds.observations, ds.actions, rewards, ds.terminals, ds.timeouts, ds.episode_ends)
    assert ex.dataset_fingerprint(other) != fp


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(observations=np.zeros((0, 3))), ValueError, "the dataset is empty"),
        (dict(observations=np.zeros(4)), ValueError, r"observations: expected shape \[N, S\]"),
        (dict(actions=np.zeros((3, 2))), ValueError, r"actions: expected shape \[4, A\]"),
        (dict(rewards=np.zeros(5)), ValueError, r"rewards: expected shape \[4\], got \(5,\)"),
        (dict(terminals=np.zeros(3)), ValueError, r"terminals: expected shape \[4\]"),
        (dict(terminals=np.array([0, 2, 0, 0])), ValueError, "terminals: expected 0/1 flags, found 2"),
        (dict(observations=np.array([["a"] * 3] * 4)), TypeError, "observations: expected a numeric array"),
    ],
)
def test_bad_arrays(kwargs, exc, match):
    base = dict(
        observations=np.zeros((4, 3)),
        actions=np.zeros((4, 1)),
        rewards=np.zeros(4),
        terminals=np.zeros(4),
        timeouts=np.zeros(4),
    )
    with pytest.raises(exc, match=match):
        EpisodeDataset.from_arrays(**{**base, **kwargs})


def test_nan_is_reported_with_episode_and_step():
    obs = np.zeros((30, 3))
    obs[17, 2] = np.nan
    with pytest.raises(
        ValueError,
        match=r"observations: expected finite values, found nan at step 17 "
        r"\(episode 1, step 7 of it\), dimension 2",
    ):
        EpisodeDataset.from_arrays(
            observations=obs, actions=np.zeros((30, 1)), rewards=np.zeros(30), terminals=np.arange(30) % 10 == 9
        )
    with pytest.raises(ValueError, match="rewards: expected finite values, found inf"):
        EpisodeDataset.from_arrays(
            observations=np.zeros((3, 1)), actions=np.zeros((3, 1)), rewards=[0, np.inf, 0], terminals=[0, 0, 1]
        )


def test_bad_episodes():
    with pytest.raises(ValueError, match="expected at least one episode"):
        EpisodeDataset.from_episodes([])
    with pytest.raises(ValueError, match="episode 1: has zero steps"):
        EpisodeDataset.from_episodes(
            [
                {"observations": np.zeros((2, 2)), "actions": np.zeros((2, 1)), "rewards": np.ones(2)},
                {"observations": np.zeros((0, 2)), "actions": np.zeros((0, 1)), "rewards": np.ones(0)},
            ]
        )
    with pytest.raises(KeyError, match="episode 0: missing key 'actions'"):
        EpisodeDataset.from_episodes([{"observations": np.zeros((2, 2)), "rewards": np.ones(2)}])
    with pytest.raises(ValueError, match=r"observations: expected shape \[2, S\] or \[3, S\], got \(5, 2\)"):
        EpisodeDataset.from_episodes(
            [{"observations": np.zeros((5, 2)), "actions": np.zeros((2, 1)), "rewards": np.ones(2)}]
        )
    with pytest.raises(ValueError, match="episode 1 is empty"):
        EpisodeDataset(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros(3), np.zeros(3), np.zeros(3), np.array([1, 1, 3]))
