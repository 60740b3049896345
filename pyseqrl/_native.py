"""Import of the compiled core with an actionable error when it is missing or stale."""

from __future__ import annotations

try:
    from pyseqrl import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        f"pyseqrl's compiled core (pyseqrl._core) could not be imported: {e}\n"
        "Rebuild and reinstall it from the repository root with:\n"
        "    pip install --no-build-isolation -ve .      (or: pip install .)\n"
        "This needs a C++17 compiler, CMake >= 3.18, scikit-build-core and pybind11."
    ) from e

core = _core
