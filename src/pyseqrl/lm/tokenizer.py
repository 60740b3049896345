"""Byte-level BPE tokenizers: the real GPT-2 one from vocab.json/merges.txt, or one trained on a corpus.

Everything is a ``tokenizers.Tokenizer`` (fast, batch encoding in Rust). Note for transformers 5.x users: passing
``vocab_file=``/``merges_file=`` keywords to ``GPT2TokenizerFast`` silently gives an empty tokenizer; this module
avoids that path entirely.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer, Tokenizer

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a byte-level BPE tokenizer from a directory or file.

    Accepts a ``tokenizer.json`` file, a directory holding one, or a directory with GPT-2's ``vocab.json`` and
    ``merges.txt`` (e.g. a local copy of the ``gpt2`` tokenizer files, or any ``save_pretrained`` GPT-2 folder).

    Raises:
        FileNotFoundError: nothing loadable at ``path`` (the message lists what was looked for).
    """
    p = Path(os.path.expanduser(str(path)))
    if p.is_file() and p.suffix == ".json":
        return Tokenizer.from_file(str(p))
    if (p / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(p / "tokenizer.json"))
    if (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
        return ByteLevelBPETokenizer(str(p / "vocab.json"), str(p / "merges.txt"))._tokenizer
    raise FileNotFoundError(
        f"no tokenizer at {str(p)!r}: expected tokenizer.json, or vocab.json + merges.txt (GPT-2 BPE)"
    )


def train_bpe(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2) -> Tokenizer:
    """Train a GPT-2-style byte-level BPE on ``texts`` with ``<|endoftext|>`` as its only special token."""
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        texts, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS], show_progress=False
    )
    log.info("trained a byte-level BPE with %d tokens", tok.get_vocab_size())
    return tok._tokenizer


def eos_id(tok: Tokenizer) -> int:
    """Id of ``<|endoftext|>`` (documents are separated by it)."""
    i = tok.token_to_id(EOS)
    if i is None:
        raise ValueError(f"tokenizer has no {EOS!r} token")
    return int(i)


def save_tokenizer(tok: Tokenizer, out_dir: str | os.PathLike) -> None:
    """Save so that ``transformers.AutoTokenizer.from_pretrained(out_dir)`` and :func:`load_tokenizer` work."""
    from transformers import GPT2TokenizerFast

    fast = GPT2TokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    fast.save_pretrained(str(out_dir))
