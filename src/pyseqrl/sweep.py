"""Sweeps of independent, resumable runs: one subprocess per run, one run per core, safe to stop at any moment.

A sweep is a list of :class:`Run` s, each with its own directory ``<root>/<run.name>``. A run is a job function
(``"module:function"``, called as ``function(run_dir=Path, **run.args)``) that writes ``checkpoint.pt`` as it goes
and resumes from it (every ``pyseqrl train`` command does). What a run directory holds says where the run stands:

* ``run.json``      -- the run's spec, written before its first start;
* ``checkpoint.pt`` -- the trainer's last checkpoint (``step`` in it gives "at step N of M");
* ``finished.json`` -- written atomically after the job returned, with what it returned: the run is finished;
* ``failed.json``   -- the error of its last attempt (removed when it finishes);
* ``run.log``       -- the output of every attempt.

:func:`run_sweep` starts ``workers`` runs at a time, each in its own process (``python -m pyseqrl.sweep
<run_dir>``, torch threads 1), skips finished runs, resumes half-finished ones, and retries a failed run (the
first retry resumes from its checkpoint, the second starts over). A checkpoint that does not load (truncated,
corrupt) is reported and moved aside to ``checkpoint.pt.corrupt``; the run goes on from the checkpoint before it
(``checkpoint.pt.prev``, which pyseqrl's trainers keep), else restarts from scratch. A run
process holds a lock on its directory, so two sweeps over the same directory never run the same run twice at
once. Ctrl-C or SIGTERM stops the run processes (checkpoints are written atomically, so nothing half-written
stays behind); running the sweep again continues where it stopped. :func:`status_table` says where each run is.
With ``keep``, every finished run's ``run.json`` and ``finished.json`` (a few kB, no checkpoint) are also copied
to ``<keep>/<run.name>``: a record small enough for version control, from which :func:`adopt` restores the
finished runs on another machine.

The numbers of a sweep (mean ± std over seeds, best of the evaluations, steps to a threshold) come from
:func:`summarize` and :func:`first_step_at`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pyseqrl.utils.checkpoint import atomic_write, previous_path

log = logging.getLogger(__name__)

SPEC, FINISHED, FAILED, LOG, LOCK, CHECKPOINT = (
    "run.json",
    "finished.json",
    "failed.json",
    "run.log",
    ".lock",
    ("checkpoint.pt"),
)
#: exit status of a run process that found its run directory locked by another process
BUSY = 75


@dataclass(frozen=True)
class Run:
    """One run of a sweep.

    Example:
        >>> Run("Hopper-v4/dt-s0", "pyseqrl.reproduce:dt_job", {"steps": 1000, "seed": 0}, steps=1000)
        ... # doctest: +ELLIPSIS
        Run(name='Hopper-v4/dt-s0', ...)
    """

    name: str
    """its directory under the sweep's root (``/`` separates folders)"""
    job: str
    """``"module:function"``; called as ``function(run_dir=Path, **args)`` and returns a JSON-able dict"""
    args: dict[str, Any] = field(default_factory=dict)
    """JSON-able keyword arguments of the job"""
    steps: int = 0
    """the step the run's checkpoint reaches when it is done (for "at step N of M")"""
    after: tuple[str, ...] = ()
    """names of the runs that must finish before this one starts"""

    def spec(self) -> dict[str, Any]:
        return json.loads(json.dumps({"job": self.job, "args": self.args, "steps": self.steps}))


@dataclass
class RunState:
    """Where a run stands, read from its directory."""

    name: str
    state: str
    """finished | running | partial | not started | failed | corrupt"""
    step: int | None = None
    """the step of its checkpoint"""
    steps: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    seconds: float | None = None
    """how long the finished run took (its last start)"""

    def describe(self) -> str:
        at = f"at step {self.step} of {self.steps}" if self.step is not None else None
        if self.state == "finished":
            return "finished"
        if self.state == "running":
            return "running" + (f", {at}" if at else "")
        if self.state == "partial":
            return at or "started"
        if self.state == "failed":
            return f"failed{' ' + at if at else ''}: {self.error}"
        if self.state == "corrupt":
            return f"corrupt checkpoint: {self.error}"
        return "not started"


# ------------------------------------------------------------------------------------------------ run directories
def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1, default=float)
    atomic_write(path, lambda f: f.write(text), mode="w")


def checkpoint_step(path: Path) -> int:
    """The ``step`` saved in a trainer checkpoint, read without loading its tensors (memory-mapped).

    Raises:
        ValueError: the file is truncated, corrupt or has no ``step`` (the message names the file).
    """
    import pickle
    import zipfile

    try:
        if zipfile.is_zipfile(path):  # torch.save's format (a truncated one is no zip file any more)
            import torch

            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        else:  # a plain pickle
            with open(path, "rb") as f:
                state = pickle.load(f)
        return int(state["step"])
    except Exception as e:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a trainer checkpoint: {e}") from e


def _spec_error(root: Path, run: Run) -> str | None:
    """Why ``run`` may not use its directory (it holds a run of another spec), or None."""
    d = root / run.name
    saved = _read_json(d / SPEC)
    if saved is None or saved == run.spec():
        return None
    old, new = saved.get("args", {}), run.spec()["args"]
    diff = sorted(k for k in {**old, **new} if old.get(k) != new.get(k))
    diff += [k for k in ("job", "steps") if saved.get(k) != run.spec()[k]]
    return f"{d} holds a run of another configuration (differs in {diff}): move it away, or use another --out"


def clear_stale(root: str | os.PathLike, runs: Sequence[Run]) -> list[str]:
    """Delete the directories of the runs whose saved options differ from ``runs``' (for a caller that owns
    ``root`` and wants changed runs started over, not refused); returns their names."""
    import shutil

    root = Path(root)
    stale = [run.name for run in runs if _spec_error(root, run) is not None and not _locked(root / run.name)]
    for name in stale:
        shutil.rmtree(root / name)
    return stale


def find_finished(
    root: str | os.PathLike, runs: Sequence[Run], sources: Sequence[str | os.PathLike]
) -> dict[str, Path]:
    """The finished runs of other sweeps (``sources``: their root directories, or records made with ``keep``) whose
    spec is that of a run of ``runs`` that ``root`` has not started: run name -> its directory in the source (the
    first source that has it). The same job with the same arguments is the same experiment."""
    root = Path(root)
    todo = {json.dumps(r.spec(), sort_keys=True): r for r in runs if not (root / r.name).exists()}
    found: dict[str, Path] = {}
    for src in map(Path, sources):
        if not todo or not src.is_dir() or src.resolve() == root.resolve():
            continue
        for spec_file in sorted(src.rglob(SPEC)):
            key = json.dumps(_read_json(spec_file), sort_keys=True)
            run = todo.get(key)
            if run is None or _read_json(spec_file.parent / FINISHED) is None:
                continue
            found[run.name] = spec_file.parent
            del todo[key]
    return found


def adopt(root: str | os.PathLike, runs: Sequence[Run], sources: Sequence[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Copy into ``root`` the runs :func:`find_finished` finds, so that sweeps that share runs run them once. A run
    that others wait for is copied from a source without its checkpoint (a record) only when every run waiting for
    it is finished or copied too: the others start from its checkpoint. Each copy appears at once (copied beside,
    then renamed). Returns (run name, the directory it came from) of each copied run."""
    import shutil

    root = Path(root)
    found = find_finished(root, runs, sources)
    waiting = {r.name: [w.name for w in runs if r.name in w.after] for r in runs}
    copied = []
    for name, src in found.items():
        usable = (src / CHECKPOINT).exists() or all(
            w in found or _read_json(root / w / FINISHED) is not None for w in waiting[name]
        )
        if not usable:
            continue
        dest = root / name
        tmp = dest.with_name(dest.name + ".adopting")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(LOCK))
        tmp.rename(dest)
        copied.append((name, src))
    return copied


def keep_record(root: str | os.PathLike, run: Run, keep: str | os.PathLike) -> bool:
    """Copy a finished run's ``run.json`` and ``finished.json`` to ``<keep>/<run.name>`` (each written atomically);
    returns whether ``run`` was finished. A record is never overwritten by another result: a run finished again
    with a different result (rerun on another machine, where its dataset can be another sample) is kept beside
    it, as ``<keep>/<run.name>@<digest of its result>`` (:func:`finished_results` lists them)."""
    src, dest = Path(root) / run.name, Path(keep) / run.name
    done = _read_json(src / FINISHED)
    if done is None:
        return False
    recorded = _read_json(dest / FINISHED)
    if recorded is not None and recorded.get("result") != done.get("result"):
        digest = hashlib.sha256(json.dumps(done.get("result"), sort_keys=True, default=float).encode()).hexdigest()
        dest = dest.with_name(f"{dest.name}@{digest[:12]}")
    elif recorded is not None and (dest / SPEC).exists():
        return True  # the same result is on record already (only its timing can differ)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (SPEC, FINISHED):
        data = (src / name).read_bytes()
        if not (dest / name).exists() or (dest / name).read_bytes() != data:
            atomic_write(dest / name, lambda f, data=data: f.write(data))
    return True


def finished_results(src: str | os.PathLike, run: Run) -> list[Path]:
    """The finished directories of ``run`` (same spec) under ``src``, a sweep's root or a record: its own, then
    the results :func:`keep_record` kept beside it (``<run.name>@<digest>``: the same run finished again with
    another result), oldest name first."""
    d = Path(src) / run.name
    if not d.parent.is_dir():
        return []
    found = [d, *sorted(d.parent.glob(f"{d.name}@*"))]
    return [v for v in found if _read_json(v / SPEC) == run.spec() and _read_json(v / FINISHED) is not None]


def _locked(run_dir: Path) -> bool:
    """Whether a run process holds the lock of ``run_dir`` now."""
    import fcntl

    path = run_dir / LOCK
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def inspect(root: Path, run: Run) -> RunState:
    """Where ``run`` stands (reads ``<root>/<run.name>``; never changes it)."""
    return inspect_dir(Path(root) / run.name, run)


def inspect_dir(d: Path, run: Run) -> RunState:
    """Where ``run`` stands, read from its directory ``d`` (a run directory or a record of one)."""
    st = RunState(run.name, "not started", steps=run.steps)
    done = _read_json(d / FINISHED)
    if done is not None:
        st.state, st.result, st.step = "finished", done.get("result", {}), run.steps
        st.seconds = done.get("seconds")
        return st
    ckpt = d / CHECKPOINT
    if ckpt.exists():
        try:
            st.step, st.state = checkpoint_step(ckpt), "partial"
        except ValueError as e:
            step = _good_step(previous_path(ckpt))
            again = "from scratch" if step is None else f"from its previous checkpoint, step {step}"
            st.state, st.error = "corrupt", f"{e} (the run goes on {again})"
    if d.is_dir() and _locked(d):
        st.state = "running"
        return st
    failed = _read_json(d / FAILED)
    if failed is not None and st.state != "corrupt":
        st.state, st.error = "failed", failed.get("error", "unknown error")
    return st


def status_table(root: Path, runs: Sequence[Run]) -> str:
    """One line per run (name, state) and a count of each state."""
    states = [inspect(root, r) for r in runs]
    width = max((len(s.name) for s in states), default=0)
    lines = [f"{s.name:<{width}}  {s.describe()}" for s in states]
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    lines.append(f"{len(states)} runs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the sweep
def _die_with_parent() -> None:
    """In a run process: get SIGTERM when the sweep process dies, even of SIGKILL (Linux; elsewhere nothing)."""
    parent = int(os.environ.get("PYSEQRL_SWEEP_PARENT", "0"))
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the sweep died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


class _Stop(Exception):
    """SIGTERM received by the sweep process."""


def _launch(root: Path, run: Run, threads: int) -> subprocess.Popen:
    d = root / run.name
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["PYSEQRL_SWEEP_PARENT"] = str(os.getpid())
    log_file = open(d / LOG, "a")  # noqa: SIM115 (the child writes to it; closed after the launch)
    log_file.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n")
    log_file.flush()
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "pyseqrl.sweep", str(d)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        log_file.close()


def _prepare(root: Path, run: Run, attempt: int, say: Any) -> str | None:
    """Check a run directory before a start; returns an error that fails the run, or None to start it."""
    d = root / run.name
    d.mkdir(parents=True, exist_ok=True)
    saved = _read_json(d / SPEC)
    if saved is not None and saved != run.spec():
        diff = sorted(
            k for k in {**saved.get("args", {}), **run.args} if saved.get("args", {}).get(k) != run.args.get(k)
        )
        return (
            f"{d} holds a run of another configuration (differs in {diff or ['job/steps']}): "
            "move it away, or use another --out"
        )
    if saved is None:
        _write_json(d / SPEC, run.spec())
    ckpt, prev = d / CHECKPOINT, previous_path(d / CHECKPOINT)
    if ckpt.exists():
        try:
            checkpoint_step(ckpt)
        except ValueError as e:
            os.replace(ckpt, d / (CHECKPOINT + ".corrupt"))
            step = _good_step(prev)
            if step is not None:
                os.replace(prev, ckpt)
                say(f"{run.name}: {e}; moved to {CHECKPOINT}.corrupt, going on from the one before (step {step})")
            else:
                _set_aside(prev, ".corrupt")
                say(f"{run.name}: {e}; moved to {CHECKPOINT}.corrupt, restarting the run from scratch")
            return None
        if attempt >= 2:  # resuming failed twice: start over
            os.replace(ckpt, d / (CHECKPOINT + f".failed-{attempt}"))
            _set_aside(prev, f".failed-{attempt}")
            say(f"{run.name}: failed twice from its checkpoint; restarting it from scratch")
    return None


def _good_step(path: Path) -> int | None:
    """The step of the checkpoint at ``path``, or None when there is none or it does not load."""
    try:
        return checkpoint_step(path) if path.is_file() else None
    except ValueError:
        return None


def _set_aside(path: Path, suffix: str) -> None:
    """Rename ``path`` (if any) with ``suffix``: a run that starts over must not fall back to it later."""
    if path.exists():
        os.replace(path, path.with_name(path.name + suffix))


def run_sweep(
    root: str | os.PathLike,
    runs: Sequence[Run],
    workers: int = 0,
    retries: int = 2,
    threads: int = 1,
    poll: float = 0.2,
    keep: str | os.PathLike | None = None,
) -> dict[str, RunState]:
    """Run every unfinished run of ``runs`` to completion, ``workers`` at a time; returns each run's final state.

    Args:
        root: the sweep's directory (run directories are ``<root>/<run.name>``).
        runs: the runs (names unique; ``after`` names earlier runs).
        workers: runs at a time (0: one per CPU core this process may use).
        retries: starts of a failed run after its first in this call (the first resumes, the second starts over).
        threads: torch / OpenMP threads of each run process.
        poll: seconds between checks of the run processes.
        keep: a directory that receives the record of every finished run as it finishes (:func:`keep_record`).

    A run that fails every attempt is reported as failed (its error in ``failed.json`` and the returned state),
    and so is every run waiting for it; the others go on. Raises KeyboardInterrupt on Ctrl-C or SIGTERM after
    stopping the run processes; calling again resumes.
    """
    root = Path(root)
    workers = workers or cpu_cores()
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
    by_name = {r.name: r for r in runs}
    for r in runs:
        unknown = [a for a in r.after if a not in by_name]
        if unknown:
            raise ValueError(f"run {r.name!r} waits for unknown run(s) {unknown}")

    def say(msg: str) -> None:
        print(msg, flush=True)  # a pipeline reports its progress
        log.info(msg)

    states = {r.name: inspect(root, r) for r in runs}
    given_up: set[str] = set()
    for r in runs:  # a finished run of another configuration is no result of this sweep
        error = _spec_error(root, r) if states[r.name].state == "finished" else None
        if error is not None:
            states[r.name] = RunState(r.name, "failed", steps=r.steps, error=error)
            given_up.add(r.name)
            say(f"FAILED {r.name}: {error}")
    if keep is not None:
        for r in runs:
            if r.name not in given_up:
                keep_record(root, r, keep)
    pending = [r for r in runs if states[r.name].state != "finished" and r.name not in given_up]
    attempts = dict.fromkeys(names, 0)
    running: dict[str, subprocess.Popen] = {}
    total, t0 = len(runs), time.perf_counter()
    say(f"sweep {root}: {total - len(pending)} of {total} runs finished, {len(pending)} to go, {workers} at a time")

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_sigterm) if _main_thread() else None
    try:
        while pending or running:
            for r in list(pending):
                if len(running) >= workers:
                    break
                blocked = [a for a in r.after if a in given_up]
                if blocked:
                    pending.remove(r)
                    given_up.add(r.name)
                    states[r.name] = RunState(
                        r.name, "failed", steps=r.steps, error=f"needs {blocked[0]}, which failed"
                    )
                    continue
                if any(states[a].state != "finished" for a in r.after):
                    continue
                pending.remove(r)
                error = _prepare(root, r, attempts[r.name], say)
                if error is not None:
                    _write_json(root / r.name / FAILED, {"error": error, "attempt": attempts[r.name] + 1})
                    given_up.add(r.name)
                    states[r.name] = RunState(r.name, "failed", steps=r.steps, error=error)
                    say(f"FAILED {r.name}: {error}")
                    continue
                attempts[r.name] += 1
                running[r.name] = _launch(root, r, threads)
            for name, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[name]
                r = by_name[name]
                st = inspect(root, r)
                if code == BUSY:
                    given_up.add(name)
                    st = RunState(
                        name, "failed", steps=r.steps, error="run by another process (its directory is locked)"
                    )
                elif st.state != "finished":
                    error = _failure(root / name, code)
                    st = RunState(name, "failed", st.step, r.steps, error)
                    if attempts[name] <= retries:
                        say(f"run {name} failed ({error}); starting it again")
                        pending.insert(0, r)
                    else:
                        given_up.add(name)
                        say(f"FAILED {name}: {error} (see {root / name / LOG})")
                states[name] = st
                if st.state == "finished":
                    if keep is not None:
                        keep_record(root, r, keep)
                    n_done = sum(s.state == "finished" for s in states.values())
                    say(f"[{n_done}/{total}] finished {name} ({(time.perf_counter() - t0) / 60:.1f} min)")
            if running or pending:
                time.sleep(poll)
    except (KeyboardInterrupt, _Stop):
        _stop(running)
        raise KeyboardInterrupt from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return states


def cpu_cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _failure(run_dir: Path, code: int) -> str:
    """The error of a run process that exited with ``code`` without finishing; recorded in ``failed.json``."""
    failed = _read_json(run_dir / FAILED)  # the run process removes it when it starts, then writes its error
    if failed is not None and code == 1:
        return str(failed.get("error"))
    error = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
    _write_json(run_dir / FAILED, {"error": error})
    return error


def _stop(running: dict[str, subprocess.Popen], grace: float = 10.0) -> None:
    for proc in running.values():
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in running.values():
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------------ one run
def run_one(run_dir: Path) -> int:
    """What a run process does: lock ``run_dir``, call its job, write ``finished.json`` (or ``failed.json``)."""
    import fcntl

    _die_with_parent()
    run_dir = Path(run_dir)
    lock = open(run_dir / LOCK, "a")  # noqa: SIM115 (held for the life of the process)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"{run_dir} is locked by another run process", file=sys.stderr)
        return BUSY
    if (run_dir / FINISHED).exists():
        return 0
    (run_dir / FAILED).unlink(missing_ok=True)
    for tmp in run_dir.glob(".*.tmp"):  # what a killed atomic write left behind
        tmp.unlink(missing_ok=True)
    spec = json.loads((run_dir / SPEC).read_text())  # torch takes its threads from OMP_NUM_THREADS (set by _launch)
    module, _, name = spec["job"].partition(":")
    t0 = time.perf_counter()
    try:
        result = getattr(importlib.import_module(module), name)(run_dir=run_dir, **spec["args"])
    except Exception as e:
        traceback.print_exc()
        _write_json(run_dir / FAILED, {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return 1
    _write_json(run_dir / FINISHED, {"result": result or {}, "seconds": time.perf_counter() - t0})
    (run_dir / FAILED).unlink(missing_ok=True)
    return 0


# ------------------------------------------------------------------------------------------------ aggregation
@dataclass
class Summary:
    """Mean and standard deviation (population, ddof=0) over the seeds that have a value, and how many do."""

    mean: float
    std: float
    n: int

    def __format__(self, spec: str) -> str:
        """``f"{s:.0f}"`` formats mean and std alike (default ``.1f``)."""
        spec = spec or ".1f"
        if self.n == 0:
            return "n/a"
        return f"{self.mean:{spec}} ± {self.std:{spec}}" if self.n > 1 else f"{self.mean:{spec}}"

    def __str__(self) -> str:
        return format(self)


def summarize(values: Sequence[float | None]) -> Summary:
    """Mean ± std of the values that are not None or NaN (a seed that has none does not count)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return Summary(math.nan, math.nan, 0)
    return Summary(float(v.mean()), float(v.std()), int(v.size))


def first_step_at(steps: Sequence[float], values: Sequence[float], threshold: float) -> float:
    """The first step at which a curve reaches ``threshold`` (``values >= threshold``); NaN if it never does."""
    reached = np.flatnonzero(np.asarray(values, dtype=np.float64) >= threshold)
    return float(np.asarray(steps)[reached[0]]) if len(reached) else math.nan


def curve_summary(
    curves: Sequence[tuple[Sequence[float], Sequence[float]] | None], threshold: float | None, last: int = 3
) -> dict:
    """Final score, mean of the last evaluations, best evaluation and steps to ``threshold`` over seeds.

    ``None`` curves are unfinished seeds. Returns a dict of :class:`Summary` (``final``, ``last`` -- each seed's
    mean over its last ``last`` evaluations, steadier than one evaluation of a policy whose score swings from one
    checkpoint to the next --, ``best``, ``to_threshold``), ``reached`` (seeds that reached the threshold) and
    ``seeds`` (all curves, finished or not).
    """
    done = [(np.asarray(x), np.asarray(y)) for c in curves if c is not None for x, y in [c] if len(y)]
    to = [first_step_at(x, y, threshold) for x, y in done] if threshold is not None else []
    return {
        "final": summarize([float(y[-1]) for _, y in done]),
        "last": summarize([float(y[-last:].mean()) for _, y in done]),
        "best": summarize([float(y.max()) for _, y in done]),
        "to_threshold": summarize(to),
        "reached": sum(not math.isnan(t) for t in to),
        "seeds": len(curves),
    }


def as_json(obj: Any) -> Any:
    """Summaries and numpy values as plain JSON types."""
    if isinstance(obj, Summary):
        return asdict(obj)
    if isinstance(obj, dict):
        return {k: as_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv: list[str] | None = None) -> int:
    """``python -m pyseqrl.sweep <run_dir>``: one run of a sweep (started by :func:`run_sweep`)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pyseqrl.sweep <run_dir>  (a run directory made by run_sweep)", file=sys.stderr)
        return 2
    return run_one(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
