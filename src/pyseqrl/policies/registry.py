"""Policy specs: ``load_policy("sb3:/path/sac_Hopper-v3.zip", env)`` and a registry other modules extend.

A spec is ``"<scheme>:<argument>"`` (or a bare scheme such as ``"random"``). Built-in schemes:

=========  ====================================================================
random     uniform random actions (``random`` or ``random:<seed>``)
sb3        Stable-Baselines3 / RL-Zoo agent zip (:func:`pyseqrl.policies.sb3.load_sb3`)
cs285      CS285 numpy expert pickle (:func:`pyseqrl.policies.cs285.load_cs285`)
pyseqrl    a pyseqrl checkpoint; dispatched on its ``"algo"`` entry to the loader of that scheme
dt, sac    pyseqrl DT exports / SAC checkpoints (lazy: ``pyseqrl.models.export:load_policy`` /
           ``pyseqrl.policies.sac:load_policy``)
builtin    pyseqrl's own reference SAC policies shipped in the package (``builtin:Hopper-v4``; see
           :func:`builtin_policies`)
=========  ====================================================================

A bare path ending in ``.zip`` means ``sb3:``, one ending in ``.pkl`` means ``cs285:``.

Extending: ``register_policy_loader("mine", fn)`` with ``fn(argument: str, env: VectorEnv | None, **kwargs) ->
Policy``, or with a ``"module:function"`` string that is imported on first use (no import cycles).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyseqrl.policies.base import Policy

PolicyLoader = Callable[..., Policy]
_LOADERS: dict[str, PolicyLoader | str] = {}


def register_policy_loader(scheme: str, loader: PolicyLoader | str, overwrite: bool = False) -> None:
    """Make ``load_policy(f"{scheme}:{argument}", env)`` call ``loader(argument, env, **kwargs)``.

    Args:
        scheme: the spec prefix, e.g. ``"dt"``.
        loader: a callable, or ``"package.module:function"`` imported lazily on first use.
        overwrite: replace an existing registration instead of raising.
    """
    if not scheme.isidentifier():
        raise ValueError(f"policy scheme must be an identifier, got {scheme!r}")
    if scheme in _LOADERS and not overwrite and _LOADERS[scheme] is not loader:
        raise ValueError(f"policy scheme {scheme!r} is already registered; pass overwrite=True to replace it")
    _LOADERS[scheme] = loader


def registered_schemes() -> list[str]:
    """Names of the registered policy schemes."""
    return sorted(_LOADERS)


def _resolve(scheme: str) -> PolicyLoader:
    loader = _LOADERS[scheme]
    if isinstance(loader, str):
        module, _, attr = loader.partition(":")
        try:
            loader = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"policy scheme {scheme!r}: cannot import its loader {_LOADERS[scheme]!r} ({e})") from e
    return loader  # type: ignore[return-value]


def load_policy(spec: str, env: Any | None = None, **kwargs: Any) -> Policy:
    """Build a policy from a spec string.

    Args:
        spec: e.g. ``"random"``, ``"sb3:/path/tqc_Hopper-v3.zip"``, ``"cs285:/path/policy_Hopper.pkl"``,
            ``"pyseqrl:/path/ckpt.pt"``.
        env: the :class:`pyseqrl.envs.VectorEnv` the policy will act in (bounds, sizes, time limit).
        **kwargs: passed to the scheme's loader (e.g. ``seed`` for ``random``).

    Raises:
        ValueError: unknown scheme or malformed spec.
    """
    scheme, sep, argument = spec.partition(":")
    if not sep:
        if spec.endswith(".zip"):
            scheme, argument = "sb3", spec
        elif spec.endswith(".pkl"):
            scheme, argument = "cs285", spec
        else:
            scheme, argument = spec, ""
    if scheme not in _LOADERS:
        raise ValueError(f"unknown policy spec {spec!r}: scheme {scheme!r} is not one of {registered_schemes()}")
    policy = _resolve(scheme)(argument, env, **kwargs)
    if not hasattr(policy, "act"):
        raise TypeError(f"loader for {scheme!r} returned {type(policy).__name__}, which has no act()")
    return policy


# -- built-in loaders ------------------------------------------------------------------------------------------
def _load_random(argument: str, env: Any | None, seed: int | None = None, **_: Any) -> Policy:
    from pyseqrl.policies.simple import RandomPolicy

    if env is None:
        raise ValueError("the 'random' policy needs env= for its action bounds")
    if argument and seed is None:
        seed = int(argument)
    return RandomPolicy(env.action_low, env.action_high, seed=0 if seed is None else seed)


def _load_sb3(argument: str, env: Any | None, **kwargs: Any) -> Policy:
    from pyseqrl.policies.sb3 import load_sb3

    kwargs.pop("seed", None)
    return load_sb3(argument, env, **kwargs)


def _load_cs285(argument: str, env: Any | None, **kwargs: Any) -> Policy:
    from pyseqrl.policies.cs285 import load_cs285

    kwargs.pop("seed", None)
    return load_cs285(argument, env, **kwargs)


def _load_pyseqrl(argument: str, env: Any | None, **kwargs: Any) -> Policy:
    from pyseqrl.utils.checkpoint import load_torch

    checkpoint = load_torch(argument)
    algo = checkpoint.get("algo") if isinstance(checkpoint, dict) else None
    if algo not in _LOADERS or algo == "pyseqrl":
        raise ValueError(
            f"{argument}: a pyseqrl checkpoint must name its policy scheme in checkpoint['algo'] (one of "
            f"{[s for s in registered_schemes() if s != 'pyseqrl']}), found {algo!r}"
        )
    return _resolve(algo)(argument, env, **kwargs)


ASSETS = Path(__file__).resolve().parents[1] / "assets" / "policies"


def builtin_policies() -> dict[str, Path]:
    """Environment id -> actor file of pyseqrl's own reference policies (``pyseqrl/assets/policies``)."""
    return {p.stem.removeprefix("sac_"): p for p in sorted(ASSETS.glob("sac_*.pt"))}


def _load_builtin(argument: str, env: Any | None, **kwargs: Any) -> Policy:
    available = builtin_policies()
    if argument not in available:
        raise ValueError(f"no built-in policy for {argument!r}; available: {sorted(available) or 'none'}")
    kwargs.pop("seed", None)
    return _resolve("sac")(str(available[argument]), env, **kwargs)


register_policy_loader("random", _load_random)
register_policy_loader("sb3", _load_sb3)
register_policy_loader("cs285", _load_cs285)
register_policy_loader("pyseqrl", _load_pyseqrl)
register_policy_loader("dt", "pyseqrl.models.export:load_policy")
register_policy_loader("sac", "pyseqrl.policies.sac:load_policy")
register_policy_loader("builtin", _load_builtin)
