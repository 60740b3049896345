"""pyseqrl.ops.gpu_sampler: the CPU fallback everywhere; bit-exact parity with SegmentSampler on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_dataset

import pyseqrl
from pyseqrl.ops import _cuda
from pyseqrl.ops.gpu_sampler import GPUSegmentSampler

needs_kernels = pytest.mark.skipif(not _cuda.compiled_with_cuda(), reason="pyseqrl built without CUDA kernels")

LENGTHS = [3, 25, 1, 40, 7, 60, 2]


def assert_same_batch(gpu_batch: dict[str, torch.Tensor], cpu_batch: dict[str, np.ndarray]) -> None:
    assert set(gpu_batch) == set(cpu_batch)
    for name, ref in cpu_batch.items():
        got = gpu_batch[name].cpu().numpy()
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        np.testing.assert_array_equal(got, ref, err_msg=name)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_cpu_fallback_is_the_cpu_sampler_stream(padding):
    ds = random_dataset(LENGTHS, obs_dim=4, act_dim=2, seed=0)
    mean, std = ds.state_stats()
    kw = {"context_len": 6, "batch_size": 5, "seed": 7, "state_mean": mean, "state_std": std, "padding": padding}
    ours = GPUSegmentSampler(ds, device="cpu", **kw)
    ref = pyseqrl.SegmentSampler(ds, prefetch=0, **kw)
    assert not ours.on_gpu
    for _ in range(3):
        assert_same_batch(ours.sample(), ref.sample())
    state = ours.state_dict()
    assert state == {"seed": 7, "position": 3}
    out = ours.empty_batch()
    ours.sample_into(out)
    assert_same_batch(out, ref.sample())
    ours.load_state_dict(state)
    assert_same_batch(ours.sample(), ref.batch_at(3))
    assert_same_batch(next(iter(ours)), ref.batch_at(4))
    with pytest.raises(ValueError, match="seed 8 does not match"):
        ours.load_state_dict({"seed": 8, "position": 0})


@pytest.mark.skipif(torch.cuda.is_available() and _cuda.compiled_with_cuda(), reason="kernels available here")
def test_cuda_device_without_kernels_is_a_clear_error():
    ds = random_dataset(LENGTHS, seed=1)
    with pytest.raises(RuntimeError, match="gather kernel is unavailable.*device='cpu'"):
        GPUSegmentSampler(ds, device="cuda")


def test_invalid_arguments_are_reported_by_the_cpu_checks():
    ds = random_dataset(LENGTHS, seed=2)
    with pytest.raises(ValueError, match="context_len"):
        GPUSegmentSampler(ds, context_len=0, device="cpu")
    with pytest.raises(ValueError, match="sample_by"):
        GPUSegmentSampler(ds, sample_by="reward", device="cpu")
    with pytest.raises(ValueError, match="padding: expected 'left' or 'right', got 'both'"):
        GPUSegmentSampler(ds, padding="both", device="cpu")


@pytest.mark.gpu
@needs_kernels
@pytest.mark.parametrize("normalise", [False, True])
@pytest.mark.parametrize("sample_by", ["length", "uniform"])
@pytest.mark.parametrize("context_len", [1, 20, 80])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_gpu_gather_is_bit_exact(normalise, sample_by, context_len, padding):
    ds = random_dataset(LENGTHS * 5, obs_dim=5, act_dim=3, seed=3)
    mean, std = ds.state_stats() if normalise else (None, None)
    kw = {
        "context_len": context_len,
        "batch_size": 33,
        "seed": 11,
        "state_mean": mean,
        "state_std": std,
        "sample_by": sample_by,
        "gamma": 0.99,
        "return_scale": 100.0,
        "max_ep_len": 30,
        "padding": padding,
    }
    ours = GPUSegmentSampler(ds, device="cuda", **kw)
    ref = pyseqrl.SegmentSampler(ds, prefetch=0, **kw)
    assert ours.on_gpu
    for _ in range(4):
        assert_same_batch(ours.sample(), ref.sample())
    assert ours.position == 4
    assert_same_batch(ours.batch_at(123), ref.batch_at(123))


@pytest.mark.gpu
@needs_kernels
def test_gpu_gather_replays_in_a_cuda_graph():
    ds = random_dataset(LENGTHS * 5, seed=4)
    ours = GPUSegmentSampler(ds, device="cuda", context_len=10, batch_size=16, seed=5)
    ref = pyseqrl.SegmentSampler(ds, prefetch=0, context_len=10, batch_size=16, seed=5)
    out = ours.empty_batch()
    ours.sample_into(out)  # warm-up outside the graph: batch 0
    assert_same_batch(out, ref.batch_at(0))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ours.sample_into(out)
    for i in range(1, 4):
        graph.replay()
        torch.cuda.synchronize()
        assert_same_batch(out, ref.batch_at(i))
    ours.load_state_dict({"seed": 5, "position": 40})
    graph.replay()
    assert_same_batch(out, ref.batch_at(40))
