"""A restricted unpickler for third-party policy files (SB3 VecNormalize statistics, CS285 experts).

Pickles can run arbitrary code, so only numpy arrays, plain containers and inert stand-ins for classes of
stable-baselines3 / gym(nasium) are allowed: an SB3 ``VecNormalize`` object comes back as an attribute bag with
``obs_rms.mean``, ``obs_rms.var``, ``clip_obs`` and ``epsilon``, without stable-baselines3 installed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

_STUB_PACKAGES = ("stable_baselines3", "sb3_contrib", "gym", "gymnasium")
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("builtins", "slice"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy", "bool_"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.random._pickle", "__randomstate_ctor"),
    ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random._pickle", "__generator_ctor"),
}


class _Stub:
    """Inert stand-in for a pickled third-party object: keeps its state as attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slotstate)
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that maps ``numpy.core`` to ``numpy._core`` and stubs SB3/gym classes; refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core") :]
        if module.split(".")[0] in _STUB_PACKAGES:
            return type(name, (_Stub,), {"__module__": f"pyseqrl.policies._pickle.stub.{module}"})
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (not an allowed type for policy files)")


def safe_load(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`SafeUnpickler`."""
    with open(path, "rb") as f:
        return SafeUnpickler(f).load()
