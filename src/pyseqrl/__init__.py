"""pyseqrl: pretrained sequence models for reinforcement learning.

The native data core (``returns_to_go``, ``SegmentSampler``, ``ReplayBuffer``) and the dataset layer
(``pyseqrl.data``) import without torch; models, training and environments are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pyseqrl")  # pyproject.toml's, the one version number (also pyseqrl._core.__version__)
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

from pyseqrl.data.native import ReplayBuffer, SegmentSampler, returns_to_go  # noqa: E402

_LAZY = {
    "evaluate": ("pyseqrl.evaluation", "evaluate"),
    "data": ("pyseqrl.data", None),
    "envs": ("pyseqrl.envs", None),
    "models": ("pyseqrl.models", None),
    "policies": ("pyseqrl.policies", None),
}

__all__ = ["ReplayBuffer", "SegmentSampler", "returns_to_go", "evaluate", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        mod = import_module(module)
        return mod if attr is None else getattr(mod, attr)
    raise AttributeError(f"module 'pyseqrl' has no attribute {name!r}")
