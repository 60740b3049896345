"""Range checks of configuration values, one rule each, shared by every trainer and command.

Each check raises a ValueError that names the option, the range it expects and the value it found, e.g.
``agent.gamma must be a finite number in (0, 1], got 1.5``. Configs are checked before any work starts (before a
dataset is read, an environment made or a run directory touched).
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any


def integer(name: str, value: Any, minimum: int = 0) -> None:
    """``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``value`` is a finite real number in the interval from ``low`` to ``high`` (each end closed unless
    ``low_open`` / ``high_open``; an infinite end means no bound)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if ok:
        x = float(value)
        ok = (x > low if low_open else x >= low) and (x < high if high_open else x <= high)
    if not ok:
        raise ValueError(f"{name} must be a finite number{_interval(low, high, low_open, high_open)}, got {value!r}")


def positive(name: str, value: Any) -> None:
    """``value`` is a finite number > 0 (a learning rate, a temperature, a scale)."""
    number(name, value, low=0.0, low_open=True)


def fraction(name: str, value: Any) -> None:
    """``value`` is in (0, 1] (a discount factor, a Polyak rate)."""
    number(name, value, low=0.0, high=1.0, low_open=True)


def optional(check: Any, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
    """``check(name, value, ...)`` unless ``value`` is None (an option whose None means "the default")."""
    if value is not None:
        check(name, value, *args, **kwargs)


def output_file(name: str, path: str | os.PathLike) -> None:
    """``path`` can be written as a file: it is not a directory and no parent of it is a file."""
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{name} must be a file path, got an empty string")
    if os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a directory, expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise ValueError(f"{name} {path!r}: {parent!r} is a file, not a directory")


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(low) and math.isinf(high):
        return ""
    if math.isinf(high):
        return f" {'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
