"""Vectorised environments (EnvPool first, gymnasium.vector as fallback) with explicit next-step autoreset.

See :mod:`pyseqrl.envs.vector` for the semantics of ``info["reset_step"]`` and
:class:`pyseqrl.collect.EnvRunner` for stepping a policy and getting only real transitions.
"""

from pyseqrl.envs.vector import BACKENDS, MAX_SEED, VectorEnv, check_env_id, derive_seed, make

__all__ = ["BACKENDS", "MAX_SEED", "VectorEnv", "check_env_id", "derive_seed", "make"]
