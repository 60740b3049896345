"""SegmentSampler (native) against the original Decision Transformer get_batch loop."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import random_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

import pyseqrl
from pyseqrl.data import EpisodeDataset, torch_batches
from pyseqrl.data.reference import dt_get_batch, segment_batch_numpy

KEYS = ("states", "actions", "rewards", "returns_to_go", "timesteps", "attention_mask")


def assert_batches_equal(a, b, rtol=0.0, atol=0.0):
    assert set(a) == set(b) == set(KEYS)
    for k in KEYS:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    K=st.integers(1, 40),
    B=st.integers(1, 17),
    gamma=st.one_of(st.just(1.0), st.floats(0.0, 1.0)),
    normalise=st.booleans(),
    max_ep_len=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_matches_dt_reference(lengths, K, B, gamma, normalise, max_ep_len, seed):
    ds = random_dataset(lengths, obs_dim=4, act_dim=2, seed=seed % 1000)
    mean, std = ds.state_stats() if normalise else (np.zeros(4, np.float32), np.ones(4, np.float32))
    kw = dict(state_mean=mean, state_std=std) if normalise else {}
    sampler = pyseqrl.SegmentSampler(
        ds,
        context_len=K,
        batch_size=B,
        seed=seed,
        return_scale=7.0,
        gamma=gamma,
        max_ep_len=max_ep_len,
        prefetch=0,
        **kw,
    )
    for index in range(2):
        eps, starts = sampler.draws(index)
        assert ((starts >= 0) & (starts < ds.episode_lengths()[eps])).all()
        want = dt_get_batch(
            ds.observations, ds.actions, ds.rewards, ds.episode_ends, eps, starts, K, mean, std, 7.0, max_ep_len, gamma
        )
        got = sampler.sample()
        assert_batches_equal(got, want, rtol=1e-5, atol=1e-5)
        rtg = ds.returns_to_go(gamma)
        vec = segment_batch_numpy(
            ds.observations, ds.actions, ds.rewards, rtg, ds.episode_ends, eps, starts, K, mean, std, 7.0, max_ep_len
        )
        assert_batches_equal(got, vec, rtol=1e-5, atol=1e-5)


@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    K=st.integers(1, 40),
    B=st.integers(1, 17),
    normalise=st.booleans(),
    sample_by=st.sampled_from(["length", "uniform"]),
    max_ep_len=st.integers(1, 40),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_right_padding_matches_numpy_reference(lengths, K, B, normalise, sample_by, max_ep_len, seed):
    """padding="right": the numpy reference's right-padded batch, and the left-padded batch with its rows shifted."""
    ds = random_dataset(lengths, obs_dim=3, act_dim=2, seed=seed % 1000)
    mean, std = ds.state_stats() if normalise else (np.zeros(3, np.float32), np.ones(3, np.float32))
    kw = dict(state_mean=mean, state_std=std) if normalise else {}
    common = dict(context_len=K, batch_size=B, seed=seed, max_ep_len=max_ep_len, sample_by=sample_by, **kw)
    right = pyseqrl.SegmentSampler(ds, padding="right", prefetch=0, **common)
    left = pyseqrl.SegmentSampler(ds, prefetch=0, **common)
    rtg = ds.returns_to_go()
    for index in (0, 3):
        eps, starts = right.draws(index)
        got = right.batch_at(index)
        want = segment_batch_numpy(
            ds.observations,
            ds.actions,
            ds.rewards,
            rtg,
            ds.episode_ends,
            eps,
            starts,
            K,
            mean,
            std,
            1000.0,
            max_ep_len,
            padding="right",
        )
        assert_batches_equal(got, want, rtol=1e-5, atol=1e-5)
        lb = left.batch_at(index)  # same draws; each row's real steps move to the front, the padding to the back
        shift = (K - lb["attention_mask"].sum(1)).astype(np.int64)  # [B] padded steps of each row
        for r in range(B):
            for key in KEYS:
                np.testing.assert_array_equal(np.roll(lb[key][r], -shift[r], axis=0), got[key][r], err_msg=key)


def test_same_seed_same_batches_whatever_threads_and_prefetch():
    ds = random_dataset(np.random.default_rng(1).integers(1, 200, 50), obs_dim=17, act_dim=6)
    mean, std = ds.state_stats()
    batches = []
    for threads, prefetch in ((1, 0), (2, 0), (1, 3), (3, 2)):
        s = pyseqrl.SegmentSampler(
            ds,
            context_len=20,
            batch_size=256,
            seed=5,
            state_mean=mean,
            state_std=std,
            num_threads=threads,
            prefetch=prefetch,
        )
        batches.append([s.sample() for _ in range(4)])
    for other in batches[1:]:
        for a, b in zip(batches[0], other):
            assert_batches_equal(a, b)
    s2 = pyseqrl.SegmentSampler(ds, context_len=20, batch_size=256, seed=6, state_mean=mean, state_std=std)
    assert not np.array_equal(s2.sample()["states"], batches[0][0]["states"])


def test_resume_from_state_dict():
    ds = random_dataset([30, 5, 60, 1, 12])
    a = pyseqrl.SegmentSampler(ds, context_len=8, batch_size=16, seed=3)
    for _ in range(3):
        a.sample()
    state = a.state_dict()
    expected = [a.sample() for _ in range(3)]
    b = pyseqrl.SegmentSampler(ds, context_len=8, batch_size=16, seed=3)
    b.sample()
    b.load_state_dict(state)
    for want in expected:
        assert_batches_equal(b.sample(), want)
    assert b.batch_at(3)["states"].tobytes() == expected[0]["states"].tobytes()
    with pytest.raises(ValueError, match="seed"):
        pyseqrl.SegmentSampler(ds, seed=4).load_state_dict(state)


def test_sample_into_and_torch_batches_match_sample():
    torch = pytest.importorskip("torch")
    ds = random_dataset([40, 3, 25])
    ref = pyseqrl.SegmentSampler(ds, context_len=10, batch_size=8, seed=1, prefetch=0)
    want = [ref.sample() for _ in range(4)]
    for prefetch in (0, 2):
        s = pyseqrl.SegmentSampler(ds, context_len=10, batch_size=8, seed=1, prefetch=prefetch)
        out = s.empty_batch()
        s.sample_into(out)
        assert_batches_equal(out, want[0])
        it = torch_batches(s, device="cpu")
        for w in want[1:]:
            batch = next(it)
            assert isinstance(batch["states"], torch.Tensor)
            assert_batches_equal({k: v.numpy() for k, v in batch.items()}, w)
    # pinned staging path (pin_memory needs CUDA in torch; skip without it)
    if torch.cuda.is_available():
        s = pyseqrl.SegmentSampler(ds, context_len=10, batch_size=8, seed=1, prefetch=0)
        batch = next(torch_batches(s, device="cuda"))
        assert_batches_equal({k: v.cpu().numpy() for k, v in batch.items()}, want[0])


def _splitmix64(x: int) -> int:
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def _counter_hash(seed: int, stream: int, index: int, k: int) -> int:
    h = _splitmix64(_splitmix64(seed ^ 0x5851F42D4C957F2D) ^ stream)
    return _splitmix64(h ^ ((index * 0x2545F4914F6CDD1D + k) & ((1 << 64) - 1)))


@given(
    lengths=st.lists(st.integers(1, 50), min_size=1, max_size=40),
    B=st.integers(1, 40),
    by_length=st.booleans(),
    seed=st.integers(0, 2**63),
    index=st.integers(0, 2**40),
)
@settings(max_examples=40, deadline=None)
def test_draws_follow_the_documented_stream(lengths, B, by_length, seed, index):
    """Row r of batch b: hash(seed, b, r, 0) picks the episode (of a uniform step, or uniformly), hash(..., 1) its
    start. A plain Python transcription of the stream, so that the same seed keeps giving the same batches."""
    import bisect

    ds = random_dataset(lengths)
    ends = ds.episode_ends.tolist()
    s = pyseqrl.SegmentSampler(ds, batch_size=B, seed=seed, sample_by="length" if by_length else "uniform", prefetch=0)
    eps, starts = s.draws(index)
    for r in range(B):
        u0, u1 = (_counter_hash(seed, index, r, k) for k in (0, 1))
        e = bisect.bisect_right(ends, (u0 * ends[-1]) >> 64) if by_length else (u0 * len(ends)) >> 64
        first = ends[e - 1] if e else 0
        assert (eps[r], starts[r]) == (e, (u1 * (ends[e] - first)) >> 64)


def test_sampling_distribution():
    lengths = np.array([1, 9, 90])
    ds = random_dataset(lengths)
    s = pyseqrl.SegmentSampler(ds, context_len=5, batch_size=4000, seed=0, prefetch=0)
    eps, starts = s.draws(0)
    freq = np.bincount(eps, minlength=3) / len(eps)
    np.testing.assert_allclose(freq, lengths / lengths.sum(), atol=0.03)
    big = starts[eps == 2]
    assert big.min() == 0 and big.max() == 89  # start uniform over the whole episode
    assert abs(big.mean() - 44.5) < 3.0
    u = pyseqrl.SegmentSampler(ds, context_len=5, batch_size=3000, seed=0, sample_by="uniform", prefetch=0)
    eps_u, _ = u.draws(0)
    np.testing.assert_allclose(np.bincount(eps_u, minlength=3) / len(eps_u), [1 / 3] * 3, atol=0.04)


def test_padding_matches_reference_conventions():
    ds = random_dataset([3], obs_dim=2, act_dim=1)
    mean = np.array([1.0, -2.0], np.float32)
    std = np.array([2.0, 4.0], np.float32)
    s = pyseqrl.SegmentSampler(ds, context_len=5, batch_size=64, seed=0, state_mean=mean, state_std=std, prefetch=0)
    b = s.sample()
    eps, starts = s.draws(0)
    row = int(np.argmax(starts == 0))
    assert b["attention_mask"][row].tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_allclose(b["states"][row, 0], (0 - mean) / std)
    assert (b["actions"][row, :2] == -10).all() and (b["rewards"][row, :2] == 0).all()
    assert b["timesteps"][row].tolist() == [0, 0, 0, 1, 2]
    np.testing.assert_allclose(b["returns_to_go"][row, 2:, 0], np.cumsum(ds.rewards[::-1])[::-1] / 1000.0, rtol=1e-6)
    r = pyseqrl.SegmentSampler(
        ds, context_len=5, batch_size=64, seed=0, state_mean=mean, state_std=std, padding="right", prefetch=0
    ).sample()
    assert r["attention_mask"][row].tolist() == [1, 1, 1, 0, 0]
    np.testing.assert_allclose(r["states"][row, 4], (0 - mean) / std)
    assert (r["actions"][row, 3:] == -10).all() and (r["rewards"][row, 3:] == 0).all()
    assert r["timesteps"][row].tolist() == [0, 1, 2, 0, 0]
    np.testing.assert_array_equal(r["returns_to_go"][row, :3], b["returns_to_go"][row, 2:])


def test_batch_outlives_sampler():
    ds = random_dataset([50, 50])
    s = pyseqrl.SegmentSampler(ds, context_len=10, batch_size=32, seed=0)
    batch = s.sample()
    copy = {k: v.copy() for k, v in batch.items()}
    del s
    gc.collect()
    for _ in range(3):  # churn the allocator
        pyseqrl.SegmentSampler(ds, context_len=10, batch_size=32, seed=1).sample()
    assert_batches_equal(batch, copy)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(context_len=0), ValueError, "context_len: expected a positive integer, got 0"),
        (dict(batch_size=0), ValueError, "batch_size: expected a positive integer, got 0"),
        (dict(max_ep_len=0), ValueError, "max_ep_len"),
        (dict(return_scale=0.0), ValueError, "return_scale: expected a finite non-zero number"),
        (dict(return_scale=float("nan")), ValueError, "return_scale"),
        (dict(gamma=2.0), ValueError, "gamma"),
        (dict(sample_by="best"), ValueError, "sample_by: expected 'length' or 'uniform', got 'best'"),
        (dict(padding="center"), ValueError, "padding: expected 'left' or 'right', got 'center'"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(prefetch=-1), ValueError, "prefetch"),
        (dict(state_mean=np.zeros(3, np.float32)), ValueError, "give both or neither"),
        (
            dict(state_mean=np.zeros(4, np.float32), state_std=np.ones(4, np.float32)),
            ValueError,
            r"state_mean: expected shape \(3,\), got \(4,\)",
        ),
        (
            dict(state_mean=np.zeros(3, np.float32), state_std=np.array([1, 0, 1], np.float32)),
            ValueError,
            "state_std: expected finite positive values, got 0 at index 1",
        ),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    ds = random_dataset([5, 5])
    with pytest.raises(exc, match=match):
        pyseqrl.SegmentSampler(ds, **kwargs)


def test_bad_dataset_and_buffers():
    with pytest.raises(TypeError, match="dataset: expected an EpisodeDataset .*, got dict"):
        pyseqrl.SegmentSampler({"observations": np.zeros((3, 2))})
    s = pyseqrl.SegmentSampler(random_dataset([5, 5]), context_len=4, batch_size=2, prefetch=0)
    out = s.empty_batch()
    out["states"] = np.zeros((2, 4, 9), np.float32)
    with pytest.raises(ValueError, match=r"states: expected shape \(2, 4, 3\), got \(2, 4, 9\)"):
        s.sample_into(out)
    out = s.empty_batch()
    out["timesteps"] = out["timesteps"].astype(np.int32)
    with pytest.raises(ValueError, match="timesteps: expected dtype int64, got int32"):
        s.sample_into(out)
    out = s.empty_batch()
    del out["attention_mask"]
    with pytest.raises(ValueError, match="missing key 'attention_mask'"):
        s.sample_into(out)


def test_native_rejects_inconsistent_arrays_directly():
    from pyseqrl._native import core

    obs = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match=r"actions: expected shape \(4, \*\), got \(3, 1\)"):
        core.SegmentSampler(obs, np.zeros((3, 1), np.float32), np.zeros(4, np.float32), np.array([4]))
    with pytest.raises(ValueError, match="observations: expected finite values"):
        bad = obs.copy()
        bad[2, 1] = np.nan
        core.SegmentSampler(bad, np.zeros((4, 1), np.float32), np.zeros(4, np.float32), np.array([4]))
    with pytest.raises(ValueError, match="strictly increasing"):
        core.SegmentSampler(obs, np.zeros((4, 1), np.float32), np.zeros(4, np.float32), np.array([2, 2, 4]))
    with pytest.raises(ValueError, match="observations: expected a C-contiguous array"):
        core.SegmentSampler(
            np.zeros((2, 4), np.float32).T, np.zeros((4, 1), np.float32), np.zeros(4, np.float32), np.array([4])
        )


def test_long_episodes_and_single_step_episodes():
    ds = EpisodeDataset.from_arrays(
        observations=np.arange(6, dtype=np.float32)[:, None],
        actions=np.zeros((6, 1)),
        rewards=np.ones(6),
        terminals=np.ones(6, bool),
        timeouts=np.zeros(6, bool),
    )
    assert ds.num_episodes == 6
    b = pyseqrl.SegmentSampler(ds, context_len=3, batch_size=10, seed=0, prefetch=0).sample()
    assert (b["attention_mask"] == [0, 0, 1]).all()
    np.testing.assert_allclose(b["returns_to_go"][:, -1, 0], 1e-3)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        # 2^61 x 8 wraps to 0 in 64 bits: the batch was allocated empty and then overrun
        (
            dict(batch_size=2**61, context_len=8),
            ValueError,
            "batch_size x context_len: the size 2305843009213693952 x 8 overflows 64 bits",
        ),
        (dict(batch_size=2**31, context_len=2**31), ValueError, "batch_size x context_len x state_dim: .* overflows"),
        (dict(batch_size=1, context_len=2**62), ValueError, "context_len x state_dim: .* overflows"),
        # fits in 64 bits but not in any machine's memory
        (
            dict(batch_size=2**40, context_len=8),
            MemoryError,
            r"batch_size x context_len: one batch: needs \d+ bytes .* physical memory",
        ),
        (dict(batch_size=2**20, context_len=64, prefetch=2**20), MemoryError, "prefetch: the batches prepared ahead"),
    ],
)
def test_sizes_that_overflow_or_cannot_be_allocated(kwargs, exc, match):
    ds = random_dataset([5, 5])
    with pytest.raises(exc, match=match):
        pyseqrl.SegmentSampler(ds, **kwargs).sample()


def run_python(code: str, timeout: float, tmp_path) -> subprocess.CompletedProcess:
    """Runs code in a fresh interpreter (outside the source tree): a crash or a hang fails the test, not the run."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the subprocess hung for {timeout} s (deadlock?)")


CONCURRENCY = """
import sys, threading
import numpy as np
sys.path.insert(0, {tests!r})
from conftest import random_dataset
import pyseqrl

ds = random_dataset(np.random.default_rng(0).integers(1, 40, 30), obs_dim=5, act_dim=2)
prefetch, num_threads = {prefetch}, {num_threads}
s = pyseqrl.SegmentSampler(ds, context_len=6, batch_size=24, seed=11, prefetch=prefetch, num_threads=num_threads)
key = lambda b: b["states"].tobytes() + b["timesteps"].tobytes()

# 1. sample() from many threads: every index of [0, total) is handed out exactly once
per_thread, n_threads = 25, 8
got, errors = [], []
def sampler():
    try:
        for _ in range(per_thread):
            got.append(key(s.sample()))
    except BaseException as e:
        errors.append(e)
threads = [threading.Thread(target=sampler) for _ in range(n_threads)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors
total = per_thread * n_threads
assert s.position == total, s.position
assert sorted(got) == sorted(key(s.batch_at(i)) for i in range(total)), "a batch was lost, repeated or torn"

# 2. sample / sample_into / position setters / state_dict / load_state_dict / batch_at all at once
starts = (0, 1000, 5000)
reference = {{key(s.batch_at(p + i)): p + i for p in starts for i in range(400)}}
s.load_state_dict({{"seed": 11, "position": 0}})
def hammer(seed):
    rng = np.random.default_rng(seed)
    out = s.empty_batch()
    try:
        for _ in range(60):
            op = rng.integers(6)
            if op == 0:
                assert key(s.sample()) in reference, "sample() returned a batch of no stream position"
            elif op == 1:
                s.sample_into(out)
                assert key(out) in reference, "sample_into() wrote a batch of no stream position"
            elif op == 2:
                s._native.position = int(rng.choice(starts))  # the native setter
            elif op == 3:
                s.load_state_dict({{"seed": 11, "position": int(rng.choice(starts))}})
            elif op == 4:
                st = s.state_dict()
                assert st["seed"] == 11 and st["position"] >= 0
            else:
                i = int(rng.choice(starts))
                assert key(s.batch_at(i)) in reference
    except BaseException as e:
        errors.append(e)
threads = [threading.Thread(target=hammer, args=(i,)) for i in range(12)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors, errors

# 3. afterwards the stream is consistent: it resumes exactly where it is set
s.load_state_dict({{"seed": 11, "position": 7}})
assert s.position == 7
assert key(s.sample()) == key(s.batch_at(7)) and s.position == 8
print("ok")
"""


@pytest.mark.parametrize("prefetch, num_threads", [(2, 1), (0, 2), (1, 2)])
def test_concurrent_sample_and_set_position(prefetch, num_threads, tmp_path):
    """One sampler shared by many threads: no crash, deadlock or error, and every batch is a whole stream batch."""
    code = CONCURRENCY.format(tests=str(Path(__file__).parent), prefetch=prefetch, num_threads=num_threads)
    res = run_python(code, 180, tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"


def test_thread_pool_that_cannot_start_fails_cleanly(tmp_path):
    """Thread creation failing part way (address-space limit) raises a clear error instead of hanging."""
    code = f"""
    import resource, sys
    import numpy as np
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from conftest import random_dataset
    import pyseqrl

    ds = random_dataset([5, 5])
    pyseqrl.SegmentSampler(ds, num_threads=2).sample()  # warm up: libraries and arenas already mapped
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    # room for a few 8 MiB thread stacks, not for 30000 of them
    resource.setrlimit(resource.RLIMIT_AS, (used + (256 << 20), resource.RLIM_INFINITY))
    try:
        pyseqrl.SegmentSampler(ds, num_threads=30000)
    except RuntimeError as e:
        assert "num_threads: could not start 29999 worker threads" in str(e), str(e)
        print("raised")
    else:
        print("started all threads")
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    pyseqrl.SegmentSampler(ds, num_threads=2, prefetch=1).sample()  # still usable afterwards
    print("ok")
    """
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux /proc to size the address-space limit")
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("AddressSanitizer aborts the process when an mmap fails, which is how this test fails threads")
    res = run_python(code, 120, tmp_path)
    assert res.returncode == 0, f"rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    assert res.stdout.split() == ["raised", "ok"], res.stdout + res.stderr
