"""Import of the compiled core with an actionable error when it is missing or stale."""

from __future__ import annotations

from pathlib import Path

try:
    from pyseqrl import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only on broken installs
    package = Path(__file__).resolve().parent
    source_tree = (package.parent.parent / "pyproject.toml").is_file()
    where = (
        f"this is the source tree at {package}, which holds no compiled module; install the package and import "
        "it from anywhere (the src/ layout keeps the source tree off the import path unless PYTHONPATH adds it)"
        if source_tree
        else f"the installed package at {package} has no working compiled module"
    )
    raise ImportError(
        f"pyseqrl's compiled core (pyseqrl._core) could not be imported: {e}\n"
        f"({where}). Build and install it from the repository root with:\n"
        "    pip install .        (or, for development: pip install --no-build-isolation -ve .)\n"
        "This needs a C++17 compiler, CMake >= 3.18, scikit-build-core and pybind11."
    ) from e

core = _core
