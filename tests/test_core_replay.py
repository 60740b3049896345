"""ReplayBuffer (native): ring semantics, sampling, prioritized replay, concurrency, save/load, bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import random_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

import pyseqrl

OBS, ACT = (3,), (2,)


def transitions(ids):
    """Transitions whose every field encodes its id, so a torn or mismatched transition is detectable."""
    ids = np.asarray(ids, np.float32)
    return (
        np.stack([ids, ids + 0.25, ids + 0.5], 1),
        np.stack([-ids, -ids - 0.5], 1),
        ids * 10,
        np.stack([ids + 1, ids + 1.25, ids + 1.5], 1),
        (ids.astype(np.int64) % 3 == 0),
    )


def check_consistent(batch):
    ids = batch["observations"][:, 0]
    o, a, r, n, t = transitions(ids)
    np.testing.assert_array_equal(batch["observations"], o)
    np.testing.assert_array_equal(batch["actions"], a)
    np.testing.assert_array_equal(batch["rewards"], r)
    np.testing.assert_array_equal(batch["next_observations"], n)
    np.testing.assert_array_equal(batch["terminals"], t.astype(np.float32))
    return ids


@given(capacity=st.integers(1, 40), adds=st.lists(st.integers(0, 30), min_size=1, max_size=12))
@settings(max_examples=80, deadline=None)
def test_ring_buffer_matches_reference(capacity, adds):
    rb = pyseqrl.ReplayBuffer(capacity, OBS, ACT, seed=0)
    all_ids: list[int] = []
    for n in adds:
        ids = list(range(len(all_ids), len(all_ids) + n))
        rb.add(*transitions(ids))
        all_ids += ids
    assert len(rb) == min(capacity, len(all_ids))
    if not all_ids:
        return
    live = set(all_ids[-capacity:])  # exactly the newest `capacity` transitions survive
    state = rb.get_state()
    assert set(state["observations"][:, 0].astype(int)) == live
    assert state["position"] == len(all_ids) % capacity
    ids = check_consistent(rb.sample(64))
    assert set(ids.astype(int)) <= live


def test_uniform_sampling_and_seed_determinism():
    rb1, rb2 = (pyseqrl.ReplayBuffer(100, OBS, ACT, seed=7) for _ in range(2))
    for rb in (rb1, rb2):
        rb.add(*transitions(range(100)))
    a, b = rb1.sample(20000), rb2.sample(20000)
    np.testing.assert_array_equal(a["observations"], b["observations"])
    counts = np.bincount(a["observations"][:, 0].astype(int), minlength=100)
    assert counts.min() > 120 and counts.max() < 290  # ~200 each
    rb3 = pyseqrl.ReplayBuffer(100, OBS, ACT, seed=8)
    rb3.add(*transitions(range(100)))
    assert not np.array_equal(rb3.sample(50)["observations"], rb1.sample(50)["observations"])


def test_multidimensional_shapes():
    rb = pyseqrl.ReplayBuffer(10, obs_shape=(2, 3), action_shape=4, seed=0)
    rb.add(np.ones((5, 2, 3)), np.ones((5, 4)), np.ones(5), np.ones((5, 2, 3)), np.zeros(5))
    b = rb.sample(7)
    assert b["observations"].shape == (7, 2, 3) and b["actions"].shape == (7, 4)
    assert rb.obs_shape == (2, 3) and rb.action_shape == (4,)


def test_save_load_restores_contents_and_rng(tmp_path):
    for prioritized in (False, True):
        rb = pyseqrl.ReplayBuffer(50, OBS, ACT, seed=3, prioritized=prioritized)
        rb.add(*transitions(range(70)))  # wrapped
        if prioritized:
            b = rb.sample(10)
            rb.update_priorities(b["indices"], np.arange(10) + 1.0)
        rb.sample(5)
        path = rb.save(tmp_path / f"rb{prioritized}.npz")
        want = [rb.sample(32) for _ in range(3)]
        rb2 = pyseqrl.ReplayBuffer.load(path)
        assert len(rb2) == 50 and rb2.prioritized == prioritized and rb2.position == rb.position
        for w in want:
            got = rb2.sample(32)
            for k in w:
                np.testing.assert_array_equal(got[k], w[k])
        # and adding continues at the same ring position
        rb.add(*transitions([1000]))
        rb2.add(*transitions([1000]))
        np.testing.assert_array_equal(rb.get_state()["observations"], rb2.get_state()["observations"])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pyseqrl.ReplayBuffer.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="corrupt or not an .npz"):
        pyseqrl.ReplayBuffer.load(bad)
    rb = pyseqrl.ReplayBuffer(10, OBS, ACT)
    rb.add(*transitions(range(4)))
    path = rb.save(tmp_path / "rb.npz")
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        pyseqrl.ReplayBuffer.load(truncated)
    other = pyseqrl.ReplayBuffer(10, (4,), ACT)
    with pytest.raises(ValueError, match=r"obs_shape is \[3\] but this buffer has \[4\]"):
        other.load_state_dict(rb.state_dict())


def tampered(state, key, index, value):
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}
    if isinstance(state[key], np.ndarray):
        state[key].reshape(-1)[index] = value
    else:
        state[key] = value
    return state


@pytest.mark.parametrize(
    "key, index, value, match",
    [
        ("observations", 4, np.nan, r"state\['observations'\]: expected finite values, got nan in transition 1"),
        ("next_observations", 0, np.inf, r"state\['next_observations'\]: expected finite values, got inf"),
        ("actions", 5, -np.inf, r"state\['actions'\]: expected finite values, got -inf in transition 2"),
        ("rewards", 3, np.nan, r"state\['rewards'\]: expected finite values, got nan in transition 3"),
        ("terminals", 2, 0.5, r"state\['terminals'\]: expected booleans \(0 or 1\), got 0.5 in transition 2"),
        ("priorities", 1, -1.0, r"state\['priorities'\]: expected finite positive values, got -1 in transition 1"),
        ("priorities", 0, np.nan, r"state\['priorities'\]: expected finite positive values"),
        ("priorities", 2, 0.0, r"state\['priorities'\]: expected finite positive values, got 0"),
        ("max_priority", None, np.inf, r"state\['max_priority'\]: expected a finite positive value, got inf"),
        ("rng", slice(None), 0, r"state\['rng'\]: .* all zeros"),
    ],
)
def test_load_validates_contents_like_add(tmp_path, key, index, value, match):
    """What add() would reject cannot enter through load / load_state_dict / set_state either."""
    rb = pyseqrl.ReplayBuffer(10, OBS, ACT, seed=1, prioritized=True)
    rb.add(*transitions(range(6)))
    good = rb.state_dict()
    bad = tampered(good, key, index, value)
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: np.asarray(v) for k, v in bad.items()})
    with pytest.raises(ValueError, match=match):
        pyseqrl.ReplayBuffer.load(path)
    other = pyseqrl.ReplayBuffer(10, OBS, ACT, seed=2, prioritized=True)
    other.add(*transitions(range(3)))
    before = other.get_state()
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(bad)
    after = other.get_state()  # a rejected state changes nothing
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    other.load_state_dict(good)  # the untampered state still loads
    assert len(other) == 6


def test_load_rejects_values_that_do_not_fit_float32(tmp_path):
    rb = pyseqrl.ReplayBuffer(10, OBS, ACT)
    rb.add(*transitions(range(3)))
    state = rb.state_dict()
    state["rewards"] = state["rewards"].astype(np.float64)
    state["rewards"][1] = 1e300  # inf once stored as float32, as add() would see it
    with (
        np.errstate(over="ignore"),
        pytest.raises(ValueError, match=r"state\['rewards'\]: expected finite values, got inf in transition 1"),
    ):
        rb.load_state_dict(state)


def test_prioritized_sampling_and_weights():
    rb = pyseqrl.ReplayBuffer(8, OBS, ACT, seed=0, prioritized=True, alpha=1.0, beta=1.0, eps=1e-9)
    rb.add(*transitions(range(4)))
    prios = np.array([1.0, 2.0, 3.0, 4.0])
    rb.update_priorities(np.arange(4), prios)
    b = rb.sample(20000)
    check_consistent(b)
    freq = np.bincount(b["indices"], minlength=4) / 20000
    np.testing.assert_allclose(freq, prios / prios.sum(), atol=0.01)
    # w_i = (N p_i)^-beta / max_j w_j, with p = prios / sum
    expected_w = (4 * prios / prios.sum()) ** -1.0
    expected_w /= expected_w.max()
    np.testing.assert_allclose(b["weights"], expected_w[b["indices"]], rtol=1e-5)
    # new transitions get the maximum priority seen so far
    rb.add(*transitions([4]))
    assert rb.get_state()["priorities"][4] == pytest.approx(4.0)
    with pytest.raises(IndexError, match=r"index 5 at position 0 is out of range \[0, 5\)"):
        rb.update_priorities(np.array([5]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite non-negative priorities"):
        rb.update_priorities(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="created with prioritized=False"):
        pyseqrl.ReplayBuffer(4, OBS, ACT).update_priorities(np.array([0]), np.array([1.0]))


def test_concurrent_add_and_sample_never_tears():
    rb = pyseqrl.ReplayBuffer(256, OBS, ACT, seed=0)
    rb.add(*transitions(range(16)))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        i = 16
        try:
            while not stop.is_set() and i < 200_000:
                rb.add(*transitions(range(i, i + 16)))
                i += 16
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(400):
            check_consistent(rb.sample(128))
    finally:
        stop.set()
        t.join()
    assert not errors


def test_add_dataset():
    ds = random_dataset([5, 7, 3], obs_dim=3, act_dim=2, terminal_last=False)
    rb = pyseqrl.ReplayBuffer(100, (3,), (2,))
    n = rb.add_dataset(ds)
    t = ds.transitions()
    assert n == len(rb) == len(t["rewards"])
    np.testing.assert_array_equal(rb.get_state()["next_observations"], t["next_observations"])


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: pyseqrl.ReplayBuffer(0, OBS, ACT), ValueError, "capacity: expected a positive integer, got 0"),
        (lambda: pyseqrl.ReplayBuffer(10, (), ACT), ValueError, "obs_shape: expected a non-empty shape"),
        (lambda: pyseqrl.ReplayBuffer(10, (0,), ACT), ValueError, "obs_shape: expected positive sizes"),
        (lambda: pyseqrl.ReplayBuffer(10, OBS, ACT, alpha=-1), ValueError, "alpha"),
        (lambda: pyseqrl.ReplayBuffer(10, OBS, ACT, seed=-2), ValueError, "seed"),
        # 7 x 0x6DB6DB6DB6DB6DB7 wraps to 1 in 64 bits: the buffer had one float per slot
        (
            lambda: pyseqrl.ReplayBuffer(10, (7, 0x6DB6DB6DB6DB6DB7), ACT),
            ValueError,
            "obs_shape: the size 7 x 7905747460161236407 overflows 64 bits",
        ),
        (lambda: pyseqrl.ReplayBuffer(10, OBS, (2**32, 2**32)), ValueError, "action_shape: .* overflows 64 bits"),
        (lambda: pyseqrl.ReplayBuffer(2**40, (2**30,), ACT), ValueError, "capacity x obs_shape: .* overflows"),
        (
            lambda: pyseqrl.ReplayBuffer(2**40, OBS, ACT),
            MemoryError,
            r"capacity: the replay buffer: needs \d+ bytes .* physical memory",
        ),
        (lambda: pyseqrl.ReplayBuffer(2**40, OBS, ACT, prioritized=True), MemoryError, "capacity"),
    ],
)
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bad_add_and_sample():
    rb = pyseqrl.ReplayBuffer(10, OBS, ACT)
    with pytest.raises(ValueError, match="the replay buffer is empty"):
        rb.sample(4)
    o, a, r, n, t = transitions(range(4))
    with pytest.raises(ValueError, match=r"actions: expected shape \(4, 2\), got \(4, 3\)"):
        rb.add(o, np.zeros((4, 3)), r, n, t)
    with pytest.raises(ValueError, match=r"rewards: expected shape \(4,\), got \(3,\)"):
        rb.add(o, a, r[:3], n, t)
    with pytest.raises(ValueError, match=r"next_observations: expected shape \(4, 3\)"):
        rb.add(o, a, r, n[:, :2], t)
    bad = o.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="observations: expected finite values, got inf in transition 2"):
        rb.add(bad, a, r, n, t)
    with pytest.raises(ValueError, match="terminated: expected booleans"):
        rb.add(o, a, r, n, np.array([0, 2, 0, 0]))
    with pytest.raises(ValueError, match="observations: expected a numeric array"):
        rb.add(np.array([["a"] * 3] * 4), a, r, n, t)
    assert len(rb) == 0  # nothing was added by the failed calls
    rb.add(o, a, r, n, t)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        rb.sample(0)
    with pytest.raises(ValueError, match="batch_size x obs_shape: .* overflows 64 bits"):
        rb.sample(2**61)
    with pytest.raises(MemoryError, match="batch_size: one sample: needs"):
        rb.sample(2**45)
