"""EpisodeDataset: an offline RL dataset as flat arrays plus episode boundaries.

All steps of all episodes are stored back to back (D4RL's layout), with ``episode_ends`` giving the exclusive end
offset of each episode. The arrays are validated once, at construction: shapes, dtypes, lengths, NaN/Inf and
empty episodes, with errors that name the array, the episode and the step.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pyseqrl.data.native import returns_to_go

FORMAT = "pyseqrl.EpisodeDataset"
FORMAT_VERSION = 1


class EpisodeDataset:
    """Flat transition arrays plus episode boundaries.

    Attributes:
        observations: float32 [N, S].
        actions: float32 [N, A].
        rewards: float32 [N].
        terminals: bool [N], True where the episode ended in a terminal state.
        timeouts: bool [N], True where the episode was cut by a time limit.
        next_observations: float32 [N, S] or None (then a step's next observation is the following step's).
        episode_ends: int64 [E], exclusive end offset of each episode; the last equals N.
        metadata: free-form dict; pyseqrl uses ``env_id``, ``policy``, ``seed``, ``ref_min_score``,
            ``ref_max_score``.

    Build one with :meth:`from_arrays` (split at terminals/timeouts) or :meth:`from_episodes`; read files with
    :func:`pyseqrl.data.load`.

    Example:
        >>> ds = EpisodeDataset.from_arrays(
        ...     observations=np.zeros((5, 3)), actions=np.zeros((5, 1)), rewards=np.ones(5),
        ...     terminals=[0, 1, 0, 0, 1], timeouts=np.zeros(5))
        >>> ds.num_episodes, ds.episode_lengths().tolist(), ds.episode_returns().tolist()
        (2, [2, 3], [2.0, 3.0])
    """

    def __init__(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray,
        episode_ends: np.ndarray,
        next_observations: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str = "arrays",
    ):
        self.source = source
        obs = _float_array(observations, "observations", source)
        if obs.ndim != 2:
            raise ValueError(f"{source}: observations: expected shape [N, S], got {obs.shape}")
        n = obs.shape[0]
        if n == 0:
            raise ValueError(f"{source}: the dataset is empty (0 steps)")
        if obs.shape[1] == 0:
            raise ValueError(f"{source}: observations: expected a positive state dimension, got shape {obs.shape}")
        act = _float_array(actions, "actions", source)
        if act.ndim == 1:
            act = act[:, None]
        if act.ndim != 2 or act.shape[0] != n or act.shape[1] == 0:
            raise ValueError(f"{source}: actions: expected shape [{n}, A] with A > 0, got {act.shape}")
        rew = _float_array(rewards, "rewards", source)
        if rew.ndim == 2 and rew.shape[1] == 1:  # D4RL sometimes stores [N, 1]
            rew = np.ascontiguousarray(rew[:, 0])
        if rew.shape != (n,):
            raise ValueError(f"{source}: rewards: expected shape [{n}], got {rew.shape}")
        term = _bool_array(terminals, "terminals", n, source)
        tout = _bool_array(timeouts, "timeouts", n, source)
        ends = np.asarray(episode_ends)
        if ends.ndim != 1 or ends.size == 0 or not np.issubdtype(ends.dtype, np.integer):
            raise ValueError(f"{source}: episode_ends: expected a non-empty 1-D integer array, got {ends!r:.80}")
        ends = np.ascontiguousarray(ends, dtype=np.int64)
        if ends[-1] != n:
            raise ValueError(f"{source}: episode_ends: the last end must equal the number of steps {n}, got {ends[-1]}")
        lengths = np.diff(ends, prepend=0)
        if (lengths <= 0).any():
            e = int(np.argmax(lengths <= 0))
            raise ValueError(
                f"{source}: episode {e} is empty (episode_ends[{e}] = {ends[e]}, previous end "
                f"{ends[e - 1] if e else 0}); every episode needs at least one step"
            )
        nxt = None
        if next_observations is not None:
            nxt = _float_array(next_observations, "next_observations", source)
            if nxt.shape != obs.shape:
                raise ValueError(f"{source}: next_observations: expected shape {obs.shape}, got {nxt.shape}")
        self.observations, self.actions, self.rewards = obs, act, rew
        self.terminals, self.timeouts, self.next_observations = term, tout, nxt
        self.episode_ends = ends
        self.metadata: dict[str, Any] = dict(metadata or {})
        for name, arr in (("observations", obs), ("actions", act), ("rewards", rew), ("next_observations", nxt)):
            if arr is not None:
                self._check_finite(name, arr)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(
        cls,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        timeouts: np.ndarray | None = None,
        next_observations: np.ndarray | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str = "arrays",
    ) -> EpisodeDataset:
        """Flat D4RL-style arrays, split into episodes after every terminal or timeout.

        A trailing run of steps with neither flag is kept as a final, truncated (unfinished) episode.

        Args:
            observations: [N, S]; actions: [N, A]; rewards: [N]; terminals, timeouts: [N] booleans (or 0/1).
            next_observations: optional [N, S].
        """
        obs = np.asarray(observations)
        n = obs.shape[0] if obs.ndim else 0
        if n == 0:
            raise ValueError(f"{source}: the dataset is empty (0 steps)")
        term = _bool_array(terminals, "terminals", n, source)
        tout = np.zeros(n, bool) if timeouts is None else _bool_array(timeouts, "timeouts", n, source)
        ends = np.flatnonzero(term | tout) + 1
        if ends.size == 0 or ends[-1] != n:
            ends = np.append(ends, n)
        return cls(obs, actions, rewards, term, tout, ends, next_observations, metadata, source)

    @classmethod
    def from_episodes(
        cls, episodes: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any] | None = None, source: str = "episodes"
    ) -> EpisodeDataset:
        """A list of per-episode dicts.

        Each dict has ``observations`` [T, S] (or [T+1, S], Minari-style, the last being the final next
        observation), ``actions`` [T, A], ``rewards`` [T]; episode ends as ``terminals``/``timeouts`` [T] arrays or
        ``terminated``/``truncated`` booleans (or Minari's ``terminations``/``truncations`` arrays); optional
        ``next_observations`` [T, S]. Singular keys (``observation``, ``action``, ``reward``, ``terminal``,
        ``next_observation``) and DT's ``dones`` are accepted too.
        """
        if len(episodes) == 0:
            raise ValueError(f"{source}: expected at least one episode, got an empty list")
        cols: dict[str, list[Any]] = {k: [] for k in ("obs", "act", "rew", "term", "tout", "next")}
        have_next = True
        for i, ep in enumerate(episodes):
            where = f"{source}: episode {i}"
            if not isinstance(ep, Mapping):
                raise TypeError(f"{where}: expected a dict of arrays, got {type(ep).__name__}")
            obs = np.asarray(_get(ep, where, "observations", "observation"))
            act = np.asarray(_get(ep, where, "actions", "action"))
            rew = np.asarray(_get(ep, where, "rewards", "reward")).reshape(-1)
            t = rew.shape[0]
            if t == 0:
                raise ValueError(f"{where}: has zero steps; every episode needs at least one step")
            if act.shape[0] != t:
                raise ValueError(f"{where}: actions have {act.shape[0]} steps but rewards have {t}")
            nxt = _get(ep, where, "next_observations", "next_observation", required=False)
            if obs.ndim == 2 and obs.shape[0] == t + 1:
                nxt = obs[1:] if nxt is None else nxt
                obs = obs[:t]
            elif obs.ndim != 2 or obs.shape[0] != t:
                raise ValueError(f"{where}: observations: expected shape [{t}, S] or [{t + 1}, S], got {obs.shape}")
            term = _flags(ep, where, t, ("terminals", "terminal", "terminations", "dones"), ("terminated",))
            tout = _flags(ep, where, t, ("timeouts", "truncations"), ("truncated",))
            if nxt is None:
                have_next = False
            cols["obs"].append(obs)
            cols["act"].append(act.reshape(t, -1))
            cols["rew"].append(rew)
            cols["term"].append(term)
            cols["tout"].append(tout)
            cols["next"].append(np.asarray(nxt) if nxt is not None else None)
        lengths = np.array([len(r) for r in cols["rew"]], np.int64)
        dims = {c.shape[1] for c in cols["obs"]}
        if len(dims) != 1:
            raise ValueError(f"{source}: episodes have different observation dimensions {sorted(dims)}")
        nxt_all = np.concatenate(cols["next"]) if have_next else None
        return cls(
            np.concatenate(cols["obs"]),
            np.concatenate(cols["act"]),
            np.concatenate(cols["rew"]),
            np.concatenate(cols["term"]),
            np.concatenate(cols["tout"]),
            np.cumsum(lengths),
            nxt_all,
            metadata,
            source,
        )

    # ------------------------------------------------------------------ basic properties
    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def num_steps(self) -> int:
        return len(self)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_ends.shape[0])

    @property
    def episode_starts(self) -> np.ndarray:
        """int64 [E], first step of each episode."""
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """Views of the arrays of episode ``i`` (negative ``i`` counts from the end)."""
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"episode index: expected an integer, got {type(i).__name__} {i!r}")
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode index {i} out of range for {self.num_episodes} episodes")
        i = int(i) % self.num_episodes
        s, e = int(self.episode_starts[i]), int(self.episode_ends[i])
        out = {
            "observations": self.observations[s:e],
            "actions": self.actions[s:e],
            "rewards": self.rewards[s:e],
            "terminals": self.terminals[s:e],
            "timeouts": self.timeouts[s:e],
        }
        if self.next_observations is not None:
            out["next_observations"] = self.next_observations[s:e]
        return out

    def episode_index(self) -> np.ndarray:
        """int64 [N], the episode each step belongs to."""
        return np.repeat(np.arange(self.num_episodes, dtype=np.int64), self.episode_lengths())

    # ------------------------------------------------------------------ statistics
    def episode_lengths(self) -> np.ndarray:
        """int64 [E]."""
        return np.diff(self.episode_ends, prepend=0).astype(np.int64)

    def complete_episodes(self) -> np.ndarray:
        """bool [E]: episodes that really ended -- in a terminal state, or at the time limit. An episode cut shorter
        by the end of a collection budget (each environment's last one) is not complete: its return says nothing
        about the policy's level.

        The time limit is read from the data: the longest length among episodes that did not terminate, when at
        least two of them have it (episodes cut by a budget stop at scattered lengths); otherwise no episode
        reached a time limit.
        """
        terminal = self.terminals[self.episode_ends - 1]
        lengths = self.episode_lengths()
        open_lengths = lengths[~terminal]
        limit = open_lengths.max() if len(open_lengths) else -1
        if (open_lengths == limit).sum() < 2:
            limit = -1
        return terminal | (lengths == limit)

    def episode_returns(self) -> np.ndarray:
        """float64 [E], undiscounted return of each episode."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def state_stats(self, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """(mean float32 [S], std + eps float32 [S]) over all steps, as the DT pipeline normalises states."""
        obs = self.observations.astype(np.float64)
        return obs.mean(0).astype(np.float32), (obs.std(0) + eps).astype(np.float32)

    def reference_scores(self, ref_min: float | None = None, ref_max: float | None = None) -> tuple[float, float]:
        """Reference (min, max) returns: the arguments, else metadata, else D4RL's table for metadata['env_id']."""
        from pyseqrl.scores import reference_scores

        lo = ref_min if ref_min is not None else self.metadata.get("ref_min_score")
        hi = ref_max if ref_max is not None else self.metadata.get("ref_max_score")
        if lo is None or hi is None:
            env_id = self.metadata.get("env_id")
            if env_id is None:
                raise ValueError(
                    "normalised scores need reference scores: pass ref_min/ref_max, or set metadata "
                    "'ref_min_score'/'ref_max_score' or 'env_id'"
                )
            d_lo, d_hi = reference_scores(str(env_id))
            lo, hi = (d_lo if lo is None else lo), (d_hi if hi is None else hi)
        return float(lo), float(hi)

    def normalized_scores(self, ref_min: float | None = None, ref_max: float | None = None) -> np.ndarray:
        """float64 [E], D4RL-normalised score of each episode: 100 * (R - min) / (max - min)."""
        from pyseqrl.scores import normalized_score

        return normalized_score(self.episode_returns(), *self.reference_scores(ref_min, ref_max))

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        """float32 [N], discounted return from each step to its episode's end (native)."""
        return returns_to_go(self.rewards, self.episode_ends, gamma)

    def transitions(self) -> dict[str, np.ndarray]:
        """(s, a, r, s', terminal) transitions for Q-learning.

        Uses ``next_observations`` when stored. Otherwise a step's next observation is the following step of its
        episode, and the last step of an episode is kept only when it is terminal (its next observation is then
        irrelevant and set to the observation itself). Returns float32 arrays, ``terminals`` as 0/1, plus
        ``step_index`` int64 [M], the dataset step of each transition.
        """
        idx = np.arange(len(self), dtype=np.int64)
        if self.next_observations is not None:
            keep = idx
            nxt = self.next_observations
        else:
            last = np.zeros(len(self), bool)
            last[self.episode_ends - 1] = True
            keep = idx[~last | self.terminals]
            nxt = self.observations[np.where(last[keep], keep, keep + 1)]
        return {
            "observations": self.observations[keep],
            "actions": self.actions[keep],
            "rewards": self.rewards[keep],
            "next_observations": nxt,
            "terminals": self.terminals[keep].astype(np.float32),
            "step_index": keep,
        }

    # ------------------------------------------------------------------ subsets
    def select(self, episodes: Iterable[int] | Iterable[bool] | np.ndarray) -> EpisodeDataset:
        """A new dataset with the given episodes.

        Args:
            episodes: integer episode indices in ``[0, num_episodes)`` (kept in the given order, repeats allowed),
                or a boolean mask of length ``num_episodes`` (the episodes where it is True, in dataset order).
                Floats are rejected rather than truncated.
        """
        ids = _episode_selection(episodes, self.num_episodes)
        starts, lengths = self.episode_starts[ids], self.episode_lengths()[ids]
        steps = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])
        return EpisodeDataset(
            self.observations[steps],
            self.actions[steps],
            self.rewards[steps],
            self.terminals[steps],
            self.timeouts[steps],
            np.cumsum(lengths),
            None if self.next_observations is None else self.next_observations[steps],
            self.metadata,
            self.source,
        )

    def subset_episodes(self, fraction: float, seed: int = 0) -> EpisodeDataset:
        """A random ``fraction`` of the episodes (at least one), kept in dataset order."""
        _check_fraction(fraction)
        k = max(1, int(round(fraction * self.num_episodes)))
        ids = np.sort(np.random.default_rng(seed).choice(self.num_episodes, size=k, replace=False))
        return self._with_subset_meta(self.select(ids), "episodes", fraction, seed)

    def subset_steps(self, fraction: float, seed: int = 0) -> EpisodeDataset:
        """The fewest random whole episodes holding at least ``fraction`` of the steps (LaMo's data ratio)."""
        _check_fraction(fraction)
        order = np.random.default_rng(seed).permutation(self.num_episodes)
        cum = np.cumsum(self.episode_lengths()[order])
        # the fewest episodes whose steps reach the budget
        k = min(int(np.searchsorted(cum, fraction * len(self), side="left")) + 1, self.num_episodes)
        return self._with_subset_meta(self.select(np.sort(order[:k])), "steps", fraction, seed)

    def top_episodes(self, fraction: float) -> EpisodeDataset:
        """The best episodes by return holding at most ``fraction`` of the steps (the best always kept).

        Exactly the ``pct_traj`` selection of the original Decision Transformer code; episodes stay in dataset order.
        """
        _check_fraction(fraction)
        lengths, returns = self.episode_lengths(), self.episode_returns()
        budget = max(int(fraction * len(self)), 1)
        order = np.argsort(returns, kind="stable")
        count, steps, i = 1, int(lengths[order[-1]]), self.num_episodes - 2
        while i >= 0 and steps + lengths[order[i]] <= budget:
            steps += int(lengths[order[i]])
            count += 1
            i -= 1
        return self._with_subset_meta(self.select(np.sort(order[-count:])), "top", fraction, None)

    @staticmethod
    def _with_subset_meta(ds: EpisodeDataset, kind: str, fraction: float, seed: int | None) -> EpisodeDataset:
        ds.metadata = {**ds.metadata, "subset": {"kind": kind, "fraction": float(fraction), "seed": seed}}
        return ds

    @classmethod
    def concatenate(
        cls, datasets: Sequence[EpisodeDataset], metadata: Mapping[str, Any] | None = None
    ) -> EpisodeDataset:
        """Episodes of several datasets back to back (e.g. medium + expert = medium-expert)."""
        if not datasets:
            raise ValueError("concatenate: expected at least one dataset")
        for d in datasets[1:]:
            if (d.observation_dim, d.action_dim) != (datasets[0].observation_dim, datasets[0].action_dim):
                raise ValueError(
                    f"concatenate: dimensions differ: (S, A) = {(datasets[0].observation_dim, datasets[0].action_dim)}"
                    f" vs {(d.observation_dim, d.action_dim)}"
                )
        offsets = np.cumsum([0] + [len(d) for d in datasets[:-1]])
        have_next = all(d.next_observations is not None for d in datasets)
        meta = (
            dict(metadata)
            if metadata is not None
            else {**datasets[0].metadata, "sources": [d.metadata for d in datasets]}
        )
        return cls(
            np.concatenate([d.observations for d in datasets]),
            np.concatenate([d.actions for d in datasets]),
            np.concatenate([d.rewards for d in datasets]),
            np.concatenate([d.terminals for d in datasets]),
            np.concatenate([d.timeouts for d in datasets]),
            np.concatenate([d.episode_ends + o for d, o in zip(datasets, offsets)]),
            np.concatenate([d.next_observations for d in datasets]) if have_next else None,
            meta,
            "concatenate",
        )

    # ------------------------------------------------------------------ saving
    def save(self, path: str | os.PathLike) -> Path:
        """Write pyseqrl's HDF5 file (D4RL key names + ``episode_ends`` + JSON metadata), atomically."""
        import h5py

        from pyseqrl.utils.checkpoint import atomic_write

        def write(f: Any) -> None:
            with h5py.File(f, "w") as h5:
                h5.attrs["format"] = FORMAT
                h5.attrs["format_version"] = FORMAT_VERSION
                h5.attrs["metadata"] = json.dumps(self.metadata, default=_json_default)
                for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
                    arr = getattr(self, key)
                    if arr is not None:
                        h5.create_dataset(key, data=arr, compression="gzip" if arr.size > 4096 else None)
                h5.create_dataset("episode_ends", data=self.episode_ends)

        return atomic_write(path, write)

    def summary(self) -> dict[str, Any]:
        """Sizes and return statistics, for printing."""
        ret, lens = self.episode_returns(), self.episode_lengths()
        out = {
            "episodes": self.num_episodes,
            "steps": len(self),
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "return_mean": float(ret.mean()),
            "return_std": float(ret.std()),
            "return_min": float(ret.min()),
            "return_max": float(ret.max()),
            "length_mean": float(lens.mean()),
            "terminals": int(self.terminals.sum()),
            "timeouts": int(self.timeouts.sum()),
        }
        try:
            scores = self.normalized_scores()
            out["normalized_score_mean"] = float(scores.mean())
        except (ValueError, KeyError):
            pass
        return out

    def __repr__(self) -> str:
        env = self.metadata.get("env_id", "?")
        return (
            f"EpisodeDataset(env_id={env!r}, episodes={self.num_episodes}, steps={len(self)}, "
            f"obs_dim={self.observation_dim}, action_dim={self.action_dim})"
        )

    # ------------------------------------------------------------------ validation helpers
    def _check_finite(self, name: str, arr: np.ndarray) -> None:
        finite = np.isfinite(arr)
        if finite.all():
            return
        bad = np.argwhere(~finite)[0]
        step = int(bad[0])
        episode = int(np.searchsorted(self.episode_ends, step, side="right"))
        start = 0 if episode == 0 else int(self.episode_ends[episode - 1])
        where = f"step {step} (episode {episode}, step {step - start} of it)"
        if arr.ndim > 1:
            where += f", dimension {int(bad[1])}"
        raise ValueError(f"{self.source}: {name}: expected finite values, found {arr[tuple(bad)]} at {where}")


def _episode_selection(episodes: Any, num_episodes: int) -> np.ndarray:
    """int64 [k] episode indices from integer indices or a boolean mask, with errors that say what was wrong."""
    items = episodes if isinstance(episodes, np.ndarray) else list(episodes)
    arr = np.asarray(items)
    if arr.ndim != 1:
        raise ValueError(f"select: expected a 1-D sequence of episode indices or a boolean mask, got shape {arr.shape}")
    if arr.dtype == bool:
        if arr.shape[0] != num_episodes:
            raise ValueError(
                f"select: a boolean mask must have one entry per episode ({num_episodes}), got {arr.shape[0]}"
            )
        ids = np.flatnonzero(arr).astype(np.int64)
    elif arr.size == 0:
        ids = np.zeros(0, np.int64)
    elif np.issubdtype(arr.dtype, np.integer):
        if not isinstance(episodes, np.ndarray) and any(isinstance(x, (bool, np.bool_)) for x in items):
            raise TypeError("select: got a mix of booleans and integers; pass integer indices or a boolean mask")
        if arr.min() < 0 or arr.max() >= num_episodes:
            raise IndexError(f"select: episode indices must be in [0, {num_episodes}), got {arr.min()}..{arr.max()}")
        ids = arr.astype(np.int64)
    else:
        flat = arr.reshape(-1)
        if arr.dtype.kind == "f":  # show a value that truncation would have changed, if there is one
            fractional = flat[flat != np.floor(flat)]
            flat = fractional if fractional.size else flat
        raise TypeError(
            f"select: expected integer episode indices or a boolean mask, got dtype {arr.dtype} "
            f"(e.g. {flat[0].item()!r}); floats are not truncated to indices"
        )
    if ids.size == 0:
        raise ValueError("select: expected at least one episode index, got none")
    return ids


def _float_array(x: Any, name: str, source: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{source}: {name}: expected a numeric array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _bool_array(x: Any, name: str, n: int, source: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"{source}: {name}: expected shape [{n}], got {arr.shape}")
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number):
            raise TypeError(f"{source}: {name}: expected booleans, got dtype {arr.dtype}")
        if not np.isin(arr, (0, 1)).all():
            bad = arr[~np.isin(arr, (0, 1))][0]
            raise ValueError(f"{source}: {name}: expected 0/1 flags, found {bad}")
        arr = arr.astype(bool)
    return np.ascontiguousarray(arr)


def _get(ep: Mapping[str, Any], where: str, *names: str, required: bool = True) -> Any:
    for n in names:
        if n in ep and ep[n] is not None:
            return ep[n]
    if required:
        raise KeyError(f"{where}: missing key {names[0]!r} (found keys {sorted(ep)})")
    return None


def _flags(
    ep: Mapping[str, Any], where: str, t: int, array_keys: tuple[str, ...], bool_keys: tuple[str, ...]
) -> np.ndarray:
    """Per-step flags from an array key, or a single end-of-episode boolean key (set on the last step)."""
    for k in array_keys:
        if k in ep and ep[k] is not None:
            arr = np.asarray(ep[k]).reshape(-1)
            if arr.shape != (t,):
                raise ValueError(f"{where}: {k}: expected shape [{t}], got {arr.shape}")
            return arr.astype(bool)
    out = np.zeros(t, bool)
    for k in bool_keys:
        if k in ep and ep[k] is not None:
            out[-1] = bool(np.asarray(ep[k]).reshape(-1)[-1])
    return out


def _check_fraction(fraction: float) -> None:
    if not (isinstance(fraction, (int, float, np.floating)) and 0.0 < fraction <= 1.0):
        raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
