"""Reading offline datasets: D4RL HDF5, Minari directories, Decision-Transformer pickles, pyseqrl files.

:func:`load` detects the format from the path: a directory is a Minari dataset; an HDF5 file is pyseqrl's own
format when it carries ``format = pyseqrl.EpisodeDataset`` and D4RL's otherwise; ``.pkl``/``.pickle`` is the
Decision-Transformer layout (a list of per-episode dicts, as written by DT's ``download_d4rl_datasets.py``).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from pyseqrl.data.dataset import FORMAT, EpisodeDataset

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def load(path: str | os.PathLike, format: str = "auto") -> EpisodeDataset:
    """Read a dataset file or directory.

    Args:
        path: a D4RL ``.hdf5`` file, a Minari dataset directory (holding ``main_data.hdf5``, directly or under
            ``data/``), a DT ``.pkl`` file, or a file written by :meth:`EpisodeDataset.save`.
        format: ``"auto"`` (detect), ``"pyseqrl"``, ``"d4rl"``, ``"minari"`` or ``"dt-pickle"``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is truncated, corrupt, of an unknown format or its contents are invalid; the
            message names the file and what was wrong.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {str(path)!r} does not exist")
    if format == "auto":
        format = _detect(path)
    readers = {"pyseqrl": _read_pyseqrl, "d4rl": read_d4rl, "minari": read_minari, "dt-pickle": read_dt_pickle}
    if format not in readers:
        raise ValueError(f"format: expected one of {['auto', *readers]}, got {format!r}")
    return readers[format](path)


def _detect(path: Path) -> str:
    if path.is_dir():
        if (path / "main_data.hdf5").is_file() or (path / "data" / "main_data.hdf5").is_file():
            return "minari"
        raise ValueError(f"{str(path)!r} is a directory but not a Minari dataset (no main_data.hdf5 in it or in data/)")
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _HDF5_MAGIC:
        with _open_h5(path) as h5:
            return "pyseqrl" if h5.attrs.get("format") == FORMAT else "d4rl"
    if path.suffix in (".pkl", ".pickle") or head[:1] == b"\x80":
        return "dt-pickle"
    raise ValueError(
        f"{str(path)!r}: unknown dataset format (expected an HDF5 file, a Minari directory or a .pkl file; "
        f"file starts with {head!r})"
    )


def _open_h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{str(path)!r}: cannot read as HDF5 (truncated or corrupt file?): {e}") from e


@overload
def _read(h5: Any, key: str, path: Path, required: Literal[True] = True) -> np.ndarray: ...
@overload
def _read(h5: Any, key: str, path: Path, required: bool) -> np.ndarray | None: ...
def _read(h5: Any, key: str, path: Path, required: bool = True) -> np.ndarray | None:
    if key not in h5:
        if required:
            raise ValueError(f"{str(path)!r}: missing dataset {key!r} (found keys {sorted(h5.keys())})")
        return None
    try:
        return h5[key][()]
    except Exception as e:  # truncated chunk, bad compression, ...
        raise ValueError(f"{str(path)!r}: cannot read {key!r} (truncated or corrupt file?): {e}") from e


def _read_pyseqrl(path: Path) -> EpisodeDataset:
    with _open_h5(path) as h5:
        version = int(h5.attrs.get("format_version", 0))
        if version > 1:
            raise ValueError(f"{str(path)!r}: pyseqrl dataset format version {version} is newer than this pyseqrl (1)")
        metadata = json.loads(h5.attrs.get("metadata", "{}"))
        arrays = {
            k: _read(h5, k, path)
            for k in ("observations", "actions", "rewards", "terminals", "timeouts", "episode_ends")
        }
        nxt = _read(h5, "next_observations", path, required=False)
    return EpisodeDataset(
        arrays["observations"],
        arrays["actions"],
        arrays["rewards"],
        arrays["terminals"],
        arrays["timeouts"],
        arrays["episode_ends"],
        nxt,
        metadata,
        source=str(path),
    )


def read_d4rl(path: str | os.PathLike) -> EpisodeDataset:
    """A D4RL HDF5 file: flat arrays split into episodes after each terminal or timeout.

    ``timeouts`` and ``next_observations`` are optional (older D4RL files lack them); a trailing unfinished
    episode is kept as truncated. Attributes of the file and D4RL's ``metadata/`` group go into the metadata.
    """
    path = Path(path)
    with _open_h5(path) as h5:
        obs = _read(h5, "observations", path)
        act = _read(h5, "actions", path)
        rew = _read(h5, "rewards", path)
        term = _read(h5, "terminals", path)
        tout = _read(h5, "timeouts", path, required=False)
        nxt = _read(h5, "next_observations", path, required=False)
        metadata: dict[str, Any] = {"source_format": "d4rl", "source_file": path.name}
        for k, v in h5.attrs.items():
            metadata[k] = _plain(v)
        if "metadata" in h5 and hasattr(h5["metadata"], "keys"):
            for k in h5["metadata"]:
                try:
                    metadata[f"d4rl/{k}"] = _plain(h5["metadata"][k][()])
                except Exception:
                    pass
    n = len(rew)
    for key, arr in (("observations", obs), ("actions", act), ("terminals", term)):
        if len(arr) != n:
            raise ValueError(f"{str(path)!r}: {key} has {len(arr)} rows but rewards has {n}")
    return EpisodeDataset.from_arrays(
        obs,
        act,
        rew.reshape(n),
        np.asarray(term).reshape(n),
        None if tout is None else np.asarray(tout).reshape(n),
        nxt,
        metadata,
        str(path),
    )


def read_minari(path: str | os.PathLike) -> EpisodeDataset:
    """A Minari dataset directory: ``main_data.hdf5`` with one group per episode holding T+1 observations."""
    path = Path(path)
    main = path / "main_data.hdf5" if (path / "main_data.hdf5").is_file() else path / "data" / "main_data.hdf5"
    metadata: dict[str, Any] = {"source_format": "minari", "source_file": str(path)}
    meta_json = main.parent / "metadata.json"
    if meta_json.is_file():
        try:
            metadata.update(json.loads(meta_json.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{str(meta_json)!r}: invalid JSON: {e}") from e
    episodes = []
    with _open_h5(main) as h5:
        for k, v in h5.attrs.items():
            metadata.setdefault(k, _plain(v))
        names = sorted((k for k in h5 if k.startswith("episode_")), key=lambda s: int(s.split("_")[1]))
        if not names:
            raise ValueError(f"{str(main)!r}: no episode_* groups found (keys {sorted(h5.keys())})")
        for name in names:
            g = h5[name]
            if "observations" in g and not hasattr(g["observations"], "shape"):
                raise ValueError(
                    f"{str(main)!r}: {name}/observations is a group (dict observation space); "
                    "only Box observations are supported"
                )
            ep = {
                key: _read(g, key, main)
                for key in ("observations", "actions", "rewards", "terminations", "truncations")
            }
            if len(ep["observations"]) != len(ep["rewards"]) + 1:
                raise ValueError(
                    f"{str(main)!r}: {name} has {len(ep['observations'])} observations for "
                    f"{len(ep['rewards'])} steps; Minari stores T+1 observations"
                )
            episodes.append(ep)
    env_spec = metadata.get("env_spec")
    if isinstance(env_spec, str):
        try:
            metadata.setdefault("env_id", json.loads(env_spec).get("id"))
        except json.JSONDecodeError:
            pass
    return EpisodeDataset.from_episodes(episodes, metadata, source=str(main))


def read_dt_pickle(path: str | os.PathLike) -> EpisodeDataset:
    """The Decision-Transformer pickle layout: a list of per-episode dicts of arrays.

    Warning: unpickling runs code from the file; only load pickles you trust.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            episodes = pickle.load(f)
    except OSError:
        raise
    except Exception as e:  # unpickling arbitrary bytes can raise almost anything (ValueError, KeyError, ...)
        raise ValueError(f"{str(path)!r}: cannot unpickle (truncated or corrupt file?): {e}") from e
    if isinstance(episodes, dict) and "observations" in episodes:
        raise ValueError(
            f"{str(path)!r}: expected a list of per-episode dicts, got one dict of flat arrays; "
            "use EpisodeDataset.from_arrays(**data)"
        )
    if not isinstance(episodes, (list, tuple)):
        raise ValueError(f"{str(path)!r}: expected a list of per-episode dicts, got {type(episodes).__name__}")
    return EpisodeDataset.from_episodes(
        list(episodes), {"source_format": "dt-pickle", "source_file": path.name}, source=str(path)
    )


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
