"""D4RL reference scores and the normalised score.

D4RL score = 100 * (return - random) / (expert - random), with the reference returns of a random and an expert
policy that D4RL published for each MuJoCo task (``d4rl/infos.py``; identical for the v2 datasets of all qualities).
"""

from __future__ import annotations

import numpy as np

# env family -> (random return, expert return), from D4RL's infos.py (REF_MIN_SCORE / REF_MAX_SCORE).
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


def env_family(env_id: str) -> str:
    """'Hopper-v4' -> 'hopper', 'halfcheetah-medium-v2' -> 'halfcheetah'."""
    return env_id.split("-")[0].lower()


def reference_scores(env_id: str) -> tuple[float, float]:
    """(min, max) reference returns of an environment id, e.g. ``reference_scores("Hopper-v4")``.

    Raises:
        KeyError: the environment has no built-in reference; pass explicit references instead.
    """
    family = env_family(env_id)
    if family not in D4RL_REFERENCE_SCORES:
        raise KeyError(
            f"no built-in D4RL reference scores for env {env_id!r} (family {family!r}); known families: "
            f"{sorted(D4RL_REFERENCE_SCORES)}. Pass ref_min_score/ref_max_score explicitly."
        )
    return D4RL_REFERENCE_SCORES[family]


def normalized_score(returns, ref_min: float, ref_max: float):
    """100 * (returns - ref_min) / (ref_max - ref_min); works on scalars and arrays."""
    if not np.isfinite(ref_min) or not np.isfinite(ref_max) or ref_max == ref_min:
        raise ValueError(f"reference scores must be finite and differ, got min={ref_min!r}, max={ref_max!r}")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
