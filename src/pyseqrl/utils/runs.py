"""The run contract of every pyseqrl trainer: run options, run directory, saved config, resume, logger.

Every run (``pyseqrl train dt|wiki|lamo|sac|calql|wsrl``, ``pyseqrl pretrain-lm``) writes into ``run_dir``:

* ``config.yaml``: the resolved configuration (also a valid ``--config`` preset, so a run can be repeated);
* ``metrics.csv`` and TensorBoard events under ``tb/``;
* ``checkpoint.pt``: written every ``checkpoint_every`` steps and at the end.

With ``resume`` (the default) a run whose ``checkpoint.pt`` exists continues from it. A run directory that
already holds a run is never overwritten silently: ``--no-resume`` there is refused unless ``--overwrite`` says
to start over. On resume the metrics keep every row up to and including the checkpoint step and drop the rest (a
run logs, evaluates and then checkpoints, so those rows are exactly the ones the checkpoint has seen);
re-running a finished command changes nothing.

Configuration: each trainer's config dataclass derives from :class:`RunOptions`; :func:`parse_config` reads it
from the command line with an optional YAML preset (``--config preset.yaml``, flat or nested keys).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import tyro
import yaml

from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import atomic_write, load_torch, previous_path
from pyseqrl.utils.logger import RunLogger

T = TypeVar("T")


@dataclass
class RunOptions:
    """Where a run writes, whether it resumes, and how often it logs, evaluates and checkpoints (each trainer's
    config derives from this and sets its own ``run_dir`` and cadence defaults)."""

    run_dir: str = "runs/run"
    """where config.yaml, metrics.csv, tb/ and checkpoint.pt go"""
    resume: bool = True
    """continue from <run_dir>/checkpoint.pt when it exists"""
    overwrite: bool = False
    """with --no-resume, start over in a run_dir that already holds a run (its checkpoint and metrics are lost)"""
    log_every: int = 1000
    """log training metrics every this many steps"""
    eval_every: int = 10_000
    """evaluate every this many steps and at the end (0: never)"""
    checkpoint_every: int = 50_000
    """checkpoint every this many steps (and at the end)"""
    tensorboard: bool = True
    """also write TensorBoard event files"""
    progress: bool = True
    """show a progress bar"""
    threads: int = 0
    """torch CPU threads (0: leave torch's default)"""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """fp32, or bf16 autocast ('bf16' needs hardware support; 'auto': bf16 where the CPU or GPU has it); weights,
    optimizer state, losses and checkpoints stay fp32"""


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


def open_run(
    options: RunOptions,
    config: Any = None,
    check: Callable[[dict[str, Any]], None] | None = None,
    primary: bool = True,
) -> dict[str, Any] | None:
    """Start or resume a run: check the options, apply ``threads``, create ``run_dir``, write ``config.yaml``.

    Args:
        options: the run options (usually the trainer's whole config).
        config: what to save as ``config.yaml`` (default: ``options``).
        check: called with the checkpoint before anything is written; raises when it cannot be resumed with
            these options (e.g. another dataset), so a refused resume changes nothing in ``run_dir``.
        primary: whether this process writes (False on the other ranks of a multi-process run).

    Returns:
        the checkpoint to resume from: None unless ``resume`` is set and ``<run_dir>/checkpoint.pt`` exists.

    Raises:
        ValueError: bad cadence options, or ``resume=False`` in a run directory that holds a run without
            ``overwrite``.
    """
    check_options(options)
    if options.threads:
        import torch  # optional dependency (the 'torch' extra)

        torch.set_num_threads(options.threads)
    run_dir = Path(options.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"run_dir {str(run_dir)!r} is a file, expected a directory (or a path that does not exist)")
    ckpt = checkpoint_path(options)
    held = [p.name for p in (ckpt, run_dir / "metrics.csv") if p.exists()]
    if not options.resume and held and not options.overwrite:
        raise ValueError(
            f"run_dir {str(run_dir)!r} already holds a run ({', '.join(held)}): resume it (drop --no-resume), "
            "choose another --run-dir, or add --overwrite to start over"
        )
    state = load_torch(ckpt) if options.resume and ckpt.exists() else None
    if state is not None and check is not None:
        check(state)
    if primary:
        if not options.resume:  # starting over: the old run's checkpoints must not become the new run's fallback
            for old in (ckpt, previous_path(ckpt)):
                old.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(plain(options if config is None else config), sort_keys=False)
        atomic_write(run_dir / "config.yaml", lambda f: f.write(text), mode="w")
    return state


def check_options(options: RunOptions) -> None:
    """The run options' ranges (ValueError naming the option and the value found)."""
    checks.integer("log_every", options.log_every, 1)
    checks.integer("checkpoint_every", options.checkpoint_every, 1)
    checks.integer("eval_every", options.eval_every, 0)  # 0: never
    checks.integer("threads", options.threads, 0)  # 0: torch's default
    if not options.run_dir:
        raise ValueError("run_dir must not be empty")


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
    hints = typing.get_type_hints(type(default))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        current = getattr(default, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = merge_yaml(current, value, f"{where}{key}.")
        else:
            value = coerce(value, hints[key], where + key)
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
        changes[key] = value
    return dataclasses.replace(default, **changes)  # type: ignore[type-var]


def coerce(value: Any, hint: Any, name: str) -> Any:
    """A YAML value checked against the field's type: YAML reads ``1e-4`` as a string and ``5`` as an int, so
    numbers in strings become numbers and ints become floats where a float is expected.

    Raises:
        ValueError: a value of another type (naming the key, the expected type and what was found).
    """
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return coerce(value, typing.get_args(hint)[0], name)
    options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError(f"{name}: expected {_type_name(hint)}, found null")
    for option in options:
        base = typing.get_origin(option) or option
        if base is typing.Literal:
            if value in typing.get_args(option):
                return value
        elif base is bool:
            if isinstance(value, bool):
                return value
        elif base in (int, float):
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and (base is float or float(value).is_integer()):
                return base(value)
            if isinstance(value, str) and str not in options:
                try:
                    number = float(value)
                except ValueError:
                    continue
                if base is float or number.is_integer():
                    return base(number)
        elif base is str:
            if isinstance(value, str):
                return value
        elif base in (list, tuple):
            if isinstance(value, list):
                item = typing.get_args(option)[:1]
                return [coerce(v, item[0], f"{name}[{i}]") for i, v in enumerate(value)] if item else value
        elif isinstance(base, type) and isinstance(value, base):
            return value
    raise ValueError(f"{name}: expected {_type_name(hint)}, found {value!r} ({type(value).__name__})")


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


def parse_config(
    cls: type[T], argv: list[str] | None, description: str, default: T | None = None, prog: str | None = None
) -> T:
    """The config dataclass ``cls`` from the command line, with an optional YAML preset (``--config x.yaml``).

    Precedence: ``default`` (else ``cls()``) < YAML < explicit flags. The YAML is flat (``total_steps: 1000``)
    with nested blocks for nested configs (``agent: {num_critics: 2}``); a nested block changes only the fields
    it names. A saved ``config.yaml`` of a run is a valid preset.

    Args:
        cls: the config dataclass.
        argv: the arguments (None: ``sys.argv[1:]``).
        description: the ``--help`` description.
        default: the values before the preset (default: ``cls()``).
        prog: the command's name on the usage line (e.g. ``pyseqrl train sac``).

    Raises:
        FileNotFoundError: the preset does not exist.
        ValueError: the preset is not a mapping, or has an unknown key or a value of the wrong type.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(list(argv) if argv is not None else None)
    base = default if default is not None else cls()
    if known.config is not None:
        if not Path(known.config).is_file():
            raise FileNotFoundError(f"--config {known.config!r}: no such file")
        try:
            data = yaml.safe_load(Path(known.config).read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{known.config}: not a YAML file ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{known.config}: expected a mapping of config keys, got {type(data).__name__}")
        try:
            base = merge_yaml(base, data)
        except ValueError as e:
            raise ValueError(f"{known.config}: {e}") from None
    return tyro.cli(cls, args=rest, default=base, description=description, prog=prog)
