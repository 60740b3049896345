"""kill -9 and resume, per trainer: a run killed mid-way (after its first checkpoint, at a random moment) and run
again with the same command ends with the same checkpoint, weights and metrics as a run never interrupted; the
temporary file of a checkpoint write killed half-way is removed by the next run."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pyseqrl._core")
pytest.importorskip("torch")
import torch
from conftest import random_dataset

from pyseqrl.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYSEQRL_DEBUG": "1"}


def _cli(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "pyseqrl.cli", *argv]


def _dead_pid() -> int:
    """The id of a process that has ended (as the one of a killed checkpoint write)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def kill_and_resume(argv: list[str], run_dir: Path, seed: int) -> None:
    """Start ``pyseqrl <argv>``, kill -9 it at a random moment after its first checkpoint, leave a half-written
    checkpoint beside it, and run the same command again to the end."""
    proc = subprocess.Popen(_cli(argv), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed: " + proc.stderr.read().decode()
    proc.stderr.close()
    orphan = run_dir / f".checkpoint.pt.{_dead_pid()}.5eed5eed5eed.tmp"
    orphan.write_bytes((run_dir / "checkpoint.pt").read_bytes()[:100])  # a save killed half-way
    done = subprocess.run(_cli(argv), env=ENV, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert not orphan.exists()
    assert not list(run_dir.glob(".*.tmp"))


def tensors(obj: Any, path: str = "") -> dict[str, Any]:
    """Every tensor and array inside a checkpoint, by path."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in tensors(value, f"{path}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in tensors(value, f"{path}/{i}").items()}
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return {path: obj}
    return {}


def assert_same_run(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> None:
    """Same checkpoint (step, weights, optimizer and RNG states, but the paths starting with one of ``ignore``) and
    same metrics, wall-clock columns aside."""
    sa, sb = (torch.load(d / "checkpoint.pt", weights_only=False) for d in (a, b))
    assert sa["step"] == sb["step"]
    ta, tb = ({k: v for k, v in tensors(s).items() if not k.startswith(ignore)} for s in (sa, sb))
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        np.testing.assert_array_equal(np.asarray(ta[k]), np.asarray(tb[k]), err_msg=k)
    assert _metrics(a) == _metrics(b)


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    clock = ("time", "per_s", "second", "minute", "elapsed")
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if not any(c in k for c in clock)} for row in csv.DictReader(f)]


def _run_both(tmp_path: Path, argv: list[str], seed: int, ignore: tuple[str, ...] = ()) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main([*argv, "--run-dir", str(whole)]) == 0
    kill_and_resume([*argv, "--run-dir", str(killed)], killed, seed)
    assert_same_run(whole, killed, ignore)


COMMON = ["--no-progress", "--no-tensorboard", "--threads", "1", "--eval-every", "0"]
AGENT = ["--agent.hidden-dims", "16", "16", "--agent.num-critics", "2"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("kill") / "data.h5"
    random_dataset([40] * 6, obs_dim=3, act_dim=1, next_obs=True, metadata={"env_id": "Pendulum-v1"}).save(path)
    return str(path)


@pytest.mark.slow
def test_calql(tmp_path, dataset) -> None:
    argv = ["train", "calql", "--dataset", dataset, *AGENT, "--batch-size", "8", "--steps", "600"]
    _run_both(tmp_path, [*argv, *COMMON, "--log-every", "50", "--checkpoint-every", "100"], seed=1)


@pytest.mark.slow
def test_sac(tmp_path) -> None:
    pytest.importorskip("envpool")
    argv = ["train", "sac", "--env-id", "Pendulum-v1", *AGENT, "--batch-size", "8", "--total-steps", "500"]
    argv += ["--learning-starts", "50", "--buffer-size", "1000"]
    _run_both(tmp_path, [*argv, *COMMON, "--log-every", "50", "--checkpoint-every", "100"], seed=2)


@pytest.mark.slow
def test_wsrl(tmp_path) -> None:
    pytest.importorskip("envpool")
    argv = ["train", "wsrl", "--mode", "scratch", "--env-id", "Pendulum-v1", *AGENT, "--batch-size", "8"]
    argv += ["--total-steps", "500", "--warmup-steps", "50", "--utd", "2", "--buffer-size", "1000"]
    _run_both(tmp_path, [*argv, *COMMON, "--log-every", "50", "--checkpoint-every", "100"], seed=3)


@pytest.mark.slow
def test_dt(tmp_path, dataset) -> None:
    argv = ["train", "dt", "--dataset", dataset, "--steps", "300", "--batch-size", "4", "--context-len", "4"]
    argv += ["--hidden-size", "16", "--n-layer", "1", "--max-ep-len", "64", "--warmup-steps", "10", "--no-export"]
    _run_both(tmp_path, [*argv, *COMMON, "--log-every", "25", "--checkpoint-every", "50"], seed=4)


@pytest.mark.slow
def test_pretrain_lm(tmp_path) -> None:
    text = tmp_path / "corpus.txt"
    words = ["alpha", "beta", "gamma", "delta", "wiki", "pedia", "robot", "hopper", "walker", "cheetah"]
    rng = np.random.default_rng(0)
    text.write_text("\n".join(" ".join(rng.choice(words, size=12)) + " ." for _ in range(400)))
    argv = ["pretrain-lm", "--text", str(text), "--preset", "tiny", "--vocab-size", "300", "--seq-len", "32"]
    argv += ["--batch-size", "8", "--warmup-steps", "5", "--lr", "3e-3", "--max-steps", "300", "--eval-every", "50"]
    argv += ["--valid-fraction", "0.1", "--test-fraction", "0.1", "--no-progress", "--threads", "1"]
    argv += ["--max-minutes", "None"]  # a time budget would make the schedule depend on the clock
    # pretraining never draws from numpy's global generator, nor seeds it: its saved state is the process's own
    argv += ["--log-every", "25", "--checkpoint-every", "50"]
    _run_both(tmp_path, argv, seed=5, ignore=("/rng/numpy",))
