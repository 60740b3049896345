"""The run contract of every ``pyseqrl train`` command: run options, run directory, saved config, resume, logger.

Every run writes into ``run_dir``:

* ``config.yaml``: the resolved configuration (also a valid ``--config`` preset, so a run can be repeated);
* ``metrics.csv`` and TensorBoard events under ``tb/``;
* ``checkpoint.pt``: written every ``checkpoint_every`` steps and at the end.

With ``resume`` (the default) a run whose ``checkpoint.pt`` exists continues from it; ``--no-resume`` starts
over. On resume the metrics keep every row up to and including the checkpoint step and drop the rest (a run
logs, evaluates and then checkpoints, so those rows are exactly the ones the checkpoint has seen); re-running a
finished command changes nothing.

Configuration: each trainer's config dataclass derives from :class:`RunOptions`; :func:`parse_config` reads it
from the command line with an optional YAML preset (``--config preset.yaml``, flat or nested keys).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tyro
import yaml

from pyseqrl.utils.checkpoint import load_torch
from pyseqrl.utils.logger import RunLogger

T = TypeVar("T")


@dataclass
class RunOptions:
    """Where a run writes, whether it resumes, and how often it logs, evaluates and checkpoints (each trainer's
    config derives from this and sets its own ``run_dir`` and cadence defaults)."""

    run_dir: str = "runs/run"
    """where config.yaml, metrics.csv, tb/ and checkpoint.pt go"""
    resume: bool = True
    """continue from <run_dir>/checkpoint.pt when it exists (--no-resume starts over)"""
    log_every: int = 1000
    """log training metrics every this many steps"""
    eval_every: int = 10_000
    """evaluate every this many steps and at the end (0: never)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    checkpoint_every: int = 50_000
    """checkpoint every this many steps (and at the end)"""
    tensorboard: bool = True
    """also write TensorBoard event files"""
    progress: bool = True
    """show a progress bar"""
    threads: int = 0
    """torch CPU threads (0: leave torch's default)"""


def plain(value: Any) -> Any:
    """A config (dataclass, tuple, Path, ...) as plain YAML/JSON types: dicts, lists, str, numbers, None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def open_run(options: RunOptions, config: Any = None) -> dict[str, Any] | None:
    """Start or resume a run: apply ``threads``, create ``run_dir``, write ``config.yaml``.

    Args:
        options: the run options (usually the trainer's whole config).
        config: what to save as ``config.yaml`` (default: ``options``).

    Returns:
        the checkpoint to resume from: None unless ``resume`` is set and ``<run_dir>/checkpoint.pt`` exists.
    """
    if options.threads:
        import torch  # optional dependency (the 'torch' extra)

        torch.set_num_threads(options.threads)
    run_dir = Path(options.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(options)
    state = load_torch(ckpt) if options.resume and ckpt.exists() else None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(plain(options if config is None else config), sort_keys=False))
    return state


def checkpoint_path(options: RunOptions) -> Path:
    """``<run_dir>/checkpoint.pt``."""
    return Path(options.run_dir) / "checkpoint.pt"


def open_logger(options: RunOptions, resumed_step: int | None) -> RunLogger:
    """The metrics logger of a run, with the one resume rule of every trainer.

    Args:
        options: the run options (``run_dir``, ``tensorboard``).
        resumed_step: the step of the checkpoint the run resumed from, or None for a new run (then an old
            metrics.csv in ``run_dir`` is replaced).

    On resume, rows (and TensorBoard events) at steps ``<= resumed_step`` are kept and later ones dropped: they
    were logged after the checkpoint and will be logged again.
    """
    keep_before = None if resumed_step is None else resumed_step + 1
    return RunLogger(options.run_dir, tensorboard=options.tensorboard, resume_step=keep_before)


def due(step: int, every: int, last: int) -> bool:
    """Whether a periodic action (log, evaluate, checkpoint) happens after ``step`` steps of ``last``:
    every ``every`` steps (never when ``every`` is 0) and at the last step."""
    return step == last or (every > 0 and step % every == 0)


def merge_yaml(default: T, values: dict[str, Any], where: str = "") -> T:
    """``default`` (a dataclass instance) with the fields in ``values`` replaced; nested dicts update nested
    dataclass fields field by field, so a partial block keeps the other fields of the default.

    Raises:
        ValueError: a key that is not a field (named with its path, e.g. ``agent.num_critic``).
    """
    fields = {f.name for f in dataclasses.fields(default)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"unknown {type(default).__name__} key(s) {[where + k for k in unknown]}; known: {sorted(fields)}"
        )
    changes: dict[str, Any] = {}
    for key, value in values.items():
        current = getattr(default, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = merge_yaml(current, value, f"{where}{key}.")
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(default, **changes)  # type: ignore[type-var]


def parse_config(cls: type[T], argv: list[str] | None, description: str, default: T | None = None) -> T:
    """The config dataclass ``cls`` from the command line, with an optional YAML preset (``--config x.yaml``).

    Precedence: ``default`` (else ``cls()``) < YAML < explicit flags. The YAML is flat (``total_steps: 1000``)
    with nested blocks for nested configs (``agent: {num_critics: 2}``); a nested block changes only the fields
    it names. A saved ``config.yaml`` of a run is a valid preset.

    Args:
        cls: the config dataclass.
        argv: the arguments (None: ``sys.argv[1:]``).
        description: the ``--help`` description.
        default: the values before the preset (default: ``cls()``).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(list(argv) if argv is not None else None)
    base = default if default is not None else cls()
    if known.config is not None:
        data = yaml.safe_load(Path(known.config).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{known.config}: expected a mapping of config keys, got {type(data).__name__}")
        try:
            base = merge_yaml(base, data)
        except ValueError as e:
            raise ValueError(f"{known.config}: {e}") from None
    return tyro.cli(cls, args=rest, default=base, description=description)
