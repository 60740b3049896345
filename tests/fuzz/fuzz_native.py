"""Fuzz target (atheris) for the argument checking of the compiled core's entry points.

Each input drives one call of ``pyseqrl._core``: ``returns_to_go``, ``SegmentSampler`` (construction, sampling,
positions, ``sample_into``), ``ReplayBuffer`` (construction, ``add``, ``sample``, priorities, ``set_state``) or
``dropout_keep_mask``, with arrays of fuzzed shapes, dtypes, layouts and values (NaN, infinities, huge sizes,
negative counts). A call may succeed or raise ValueError / TypeError / IndexError / OverflowError; anything else --
another exception, a crash, a hang -- is a finding. Run it under AddressSanitizer to catch out-of-bounds accesses
as well (.ci/run does).

    python tests/fuzz/fuzz_native.py -atheris_runs=20000            # a fixed number of inputs
    python tests/fuzz/fuzz_native.py -max_total_time=60              # or a time budget
"""

from __future__ import annotations

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    from pyseqrl import _core

EXPECTED = (ValueError, TypeError, IndexError, OverflowError)
DTYPES = [np.float32, np.float64, np.int64, np.int32, np.bool_, np.float16]
SPECIAL = [0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e38, -1e38, 1e-45]


def array(fdp: atheris.FuzzedDataProvider, max_dims: int = 3, max_len: int = 12) -> np.ndarray:
    """A small array of fuzzed shape, dtype, layout and values (special values mixed in)."""
    shape = tuple(fdp.ConsumeIntInRange(0, max_len) for _ in range(fdp.ConsumeIntInRange(0, max_dims)))
    size = int(np.prod(shape)) if shape else 1
    values = np.array([fdp.ConsumeRegularFloat() for _ in range(min(size, 64))] or [0.0])
    data = np.resize(values, size)
    for _ in range(min(size, fdp.ConsumeIntInRange(0, 3))):
        data[fdp.ConsumeIntInRange(0, size - 1)] = SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)]
    with np.errstate(all="ignore"):
        out = data.astype(DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]).reshape(shape)
    if out.ndim >= 1 and out.shape[0] > 1 and fdp.ConsumeBool():
        out = out[::2]  # not contiguous
    return out


def episode_ends(fdp: atheris.FuzzedDataProvider, n: int) -> np.ndarray:
    """Mostly valid episode boundaries for ``n`` steps, sometimes broken on purpose."""
    if fdp.ConsumeBool():
        return array(fdp, max_dims=1)
    cuts = sorted({fdp.ConsumeIntInRange(1, max(n, 1)) for _ in range(fdp.ConsumeIntInRange(0, 4))} | {n})
    return np.asarray(cuts, dtype=np.int64)


def integer(fdp: atheris.FuzzedDataProvider) -> int:
    """A count: usually small, sometimes negative or huge."""
    choice = fdp.ConsumeIntInRange(0, 9)
    if choice == 0:
        return fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if choice == 1:
        return -fdp.ConsumeIntInRange(0, 5)
    return fdp.ConsumeIntInRange(0, 40)


def fuzz_returns_to_go(fdp: atheris.FuzzedDataProvider) -> None:
    rewards = array(fdp, max_dims=2, max_len=40)
    n = rewards.shape[0] if rewards.ndim else 1
    _core.returns_to_go(rewards, episode_ends(fdp, n), fdp.ConsumeRegularFloat(), fdp.ConsumeBool())


def fuzz_sampler(fdp: atheris.FuzzedDataProvider) -> None:
    n, s, a = fdp.ConsumeIntInRange(0, 40), fdp.ConsumeIntInRange(0, 4), fdp.ConsumeIntInRange(0, 3)
    valid = fdp.ConsumeBool()
    obs = np.random.default_rng(0).normal(size=(n, s)).astype(np.float32) if valid else array(fdp)
    act = np.zeros((n, a), np.float32) if valid else array(fdp)
    rew = np.ones(n, np.float32) if valid else array(fdp, max_dims=1)
    stats = [None if fdp.ConsumeBool() else array(fdp, max_dims=1, max_len=5) for _ in range(2)]
    sampler = _core.SegmentSampler(
        obs,
        act,
        rew,
        episode_ends(fdp, n),
        stats[0],
        stats[1],
        context_len=integer(fdp),
        batch_size=integer(fdp),
        seed=integer(fdp),
        return_scale=fdp.ConsumeRegularFloat(),
        gamma=fdp.ConsumeRegularFloat(),
        max_ep_len=integer(fdp),
        sample_by_length=fdp.ConsumeBool(),
        pad_action=fdp.ConsumeRegularFloat(),
        pad_right=fdp.ConsumeBool(),
        prefetch=fdp.ConsumeIntInRange(-1, 3),
        num_threads=fdp.ConsumeIntInRange(-1, 3),
    )
    for _ in range(fdp.ConsumeIntInRange(0, 3)):
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            sampler.sample()
        elif op == 1:
            sampler.position = integer(fdp)
        elif op == 2:
            sampler.batch_at(integer(fdp))
        else:
            batch = sampler.sample()
            if fdp.ConsumeBool():  # a wrong buffer in place of one of the batch's arrays
                batch[sorted(batch)[fdp.ConsumeIntInRange(0, len(batch) - 1)]] = array(fdp)
            sampler.sample_into(batch)


def fuzz_replay_buffer(fdp: atheris.FuzzedDataProvider) -> None:
    shape = [integer(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    rb = _core.ReplayBuffer(
        integer(fdp),
        shape,
        [fdp.ConsumeIntInRange(0, 3)],
        seed=integer(fdp),
        prioritized=fdp.ConsumeBool(),
        alpha=fdp.ConsumeRegularFloat(),
        beta=fdp.ConsumeRegularFloat(),
        eps=fdp.ConsumeRegularFloat(),
    )
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            rb.add(array(fdp), array(fdp), array(fdp, max_dims=1), array(fdp), array(fdp, max_dims=1))
        elif op == 1:
            rb.sample(integer(fdp))
        elif op == 2:
            rb.update_priorities(array(fdp, max_dims=1), array(fdp, max_dims=1))
        else:
            state = rb.get_state()
            if state and fdp.ConsumeBool():
                state[sorted(state)[fdp.ConsumeIntInRange(0, len(state) - 1)]] = array(fdp)
            rb.set_state(state)


def fuzz_dropout_mask(fdp: atheris.FuzzedDataProvider) -> None:
    _core.dropout_keep_mask(array(fdp, max_dims=2), fdp.ConsumeRegularFloat(), integer(fdp))


TARGETS = [fuzz_returns_to_go, fuzz_sampler, fuzz_replay_buffer, fuzz_dropout_mask]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = TARGETS[fdp.ConsumeIntInRange(0, len(TARGETS) - 1)]
    try:
        target(fdp)
    except EXPECTED:
        pass


if __name__ == "__main__":
    atheris.instrument_all()  # coverage of this file's branches guides the fuzzer (the core itself is not instrumented)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
