"""Atomic checkpoint writing and torch RNG state capture.

A checkpoint is written to a temporary file in the same directory, flushed and fsynced, then renamed over the
target, so an interrupted save never leaves a truncated file behind (the previous checkpoint stays intact). The
temporary file of a save whose process was killed is removed by the next save of the same file. Trainers keep
the checkpoint before the newest as ``checkpoint.pt.prev``: a file damaged after it was written (a disk error, a
partial copy) costs one checkpoint interval, not the run.
"""

from __future__ import annotations

import glob
import os
import random
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file and atomically rename it to ``path``.

    The file gets the permissions ``open(path, "w")`` would give it (those of the file it replaces, else 0o666
    minus the umask), not the owner-only 0o600 of a temporary file. Temporary files of earlier saves of ``path``
    whose process no longer runs (it was killed mid-save) are removed.

    Raises:
        IsADirectoryError: ``path`` is a directory.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a directory, expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    # created like open() creates a file (0o666 minus the umask, applied by the kernel); never an existing one
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def remove_orphans(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`atomic_write` calls left next to ``path``: those whose
    writing process no longer runs (the name holds its process id). Returns the files removed."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".")[0]
        if pid.isdigit() and not _running(int(pid)):
            try:
                tmp.unlink()
            except FileNotFoundError:  # another process removed it first
                continue
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def previous_path(path: str | os.PathLike) -> Path:
    """Where :func:`save_torch` with ``keep_previous`` keeps the checkpoint that the last save replaced."""
    path = Path(path)
    return path.with_name(path.name + ".prev")


def save_torch(obj: Any, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """``torch.save`` written atomically. With ``keep_previous``, the checkpoint it replaces stays as
    :func:`previous_path` (a hard link where the filesystem has them, else a copy): a fallback should the newest
    file be damaged later. Both files exist at every moment of the save."""
    import shutil

    import torch

    path = Path(path)
    if keep_previous and path.is_file():
        prev = previous_path(path)
        remove_orphans(prev)
        tmp = prev.with_name(f".{prev.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, prev)
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint written by :func:`save_torch`, with a clear error when it is missing or corrupt."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, wrong format, ...
        prev = previous_path(path)
        hint = f" (the checkpoint before it is {str(prev)!r}: rename it to {path.name!r} to go on from there)"
        raise ValueError(
            f"checkpoint {str(path)!r} is corrupt or not a torch checkpoint: {e}" + (hint if prev.is_file() else "")
        ) from e


def rng_state() -> dict[str, Any]:
    """The state of every RNG a training run uses (python, numpy, torch CPU and CUDA)."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
