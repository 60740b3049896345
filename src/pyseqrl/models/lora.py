"""LoRA on the attention Q/K/V projections of a frozen backbone (LaMo, Shi et al. 2024).

LaMo adapts GPT-2's fused ``c_attn`` with loralib's ``MergedLinear(enable_lora=[True, True, True])``: Q, K and V each
get an independent rank-r update, ``dW_q = B_q A_q`` and so on, scaled by ``alpha / r``; the projection's bias is
trained too (``bias="lora_only"``) and every other backbone weight is frozen. :class:`LoRALinear` implements exactly
that for any projection layout (:data:`pyseqrl.models.backbone.LORA_TARGETS`): separate ``q_proj/k_proj/v_proj``
(Llama, Qwen2) get one update each, GPT-2's ``[Q | K | V]`` blocks and GPT-NeoX's per-head ``[q | k | v]`` layout get
a block-structured update whose Q, K and V parts never share parameters. (A plain LoRA on a fused projection, as
peft applies it, shares one rank-r update between Q, K and V.)

:func:`merge_lora` folds the updates into the weights, so an exported model is a plain transformers model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyseqrl.models.backbone import LORA_TARGETS
from pyseqrl.ops.dropout import Dropout


@dataclass
class LoRAConfig:
    """LoRA hyper-parameters (LaMo's defaults: GPT2Config_LoRA in the official code)."""

    r: int = 16
    """Rank of each projection's update."""
    alpha: int = 32
    """Scaling numerator: the update is (alpha / r) B A."""
    dropout: float = 0.1
    """Dropout on the LoRA input."""
    train_bias: bool = True
    """Train the adapted projections' biases (loralib's bias="lora_only", as LaMo)."""


def _groups(out_features: int, layout: str, head_dim: int) -> torch.Tensor:
    """int64 (out,): which of Q (0), K (1), V (2) each output feature of a fused projection belongs to."""
    o = torch.arange(out_features)
    if layout == "blocks":  # [Q | K | V]
        return o // (out_features // 3)
    if layout == "per_head":  # per head [q | k | v]
        return (o % (3 * head_dim)) // head_dim
    return torch.zeros(out_features, dtype=torch.long)


class LoRALinear(nn.Module):
    """A frozen linear projection plus independent low-rank updates for each of its ``n`` output groups.

    ``y = base(x) + (alpha / r) * dropout(x) A^T (B * M)^T`` with ``A`` (n r, in), ``B`` (out, n r) and the fixed
    block mask ``M`` (out, n r) that lets output feature o use only the r columns of its own group. ``base`` is an
    ``nn.Linear`` or GPT-2's ``Conv1D`` (weight stored (in, out)).
    """

    def __init__(self, base: Any, cfg: LoRAConfig, groups: torch.Tensor):
        super().__init__()
        if cfg.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {cfg.r}")
        self.base = base
        self.fan_in_fan_out = not isinstance(base, nn.Linear)  # Conv1D keeps (in, out)
        w = base.weight
        in_f, out_f = (w.shape[0], w.shape[1]) if self.fan_in_fan_out else (w.shape[1], w.shape[0])
        n = int(groups.max()) + 1
        self.r, self.scaling = cfg.r, cfg.alpha / cfg.r
        self.lora_A = nn.Parameter(torch.empty(n * cfg.r, in_f, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(out_f, n * cfg.r, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # loralib's init; B = 0 so the update starts at 0
        cols = torch.arange(n * cfg.r, device=w.device) // cfg.r  # (n r,) group of each rank column
        self.mask: torch.Tensor
        self.register_buffer("mask", (groups.to(w.device)[:, None] == cols[None, :]).to(w.dtype), persistent=False)
        self.dropout = Dropout(cfg.dropout)  # native CPU masks (ops.dropout)
        base.weight.requires_grad_(False)
        if getattr(base, "bias", None) is not None:
            base.bias.requires_grad_(cfg.train_bias)

    def delta_weight(self) -> torch.Tensor:
        """The update in ``nn.Linear`` orientation (out, in)."""
        return (self.lora_B * self.mask) @ self.lora_A * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(self.dropout(x), self.lora_A)  # (..., n r)
        return self.base(x) + F.linear(z, self.lora_B * self.mask) * self.scaling  # (..., out)

    def merged(self) -> Any:
        """The base projection with the update folded into its weight."""
        with torch.no_grad():
            d = self.delta_weight()
            self.base.weight += d.T if self.fan_in_fan_out else d
        self.base.weight.requires_grad_(True)
        return self.base


def apply_lora(lm: Any, cfg: LoRAConfig | None = None) -> list[str]:
    """Freeze every weight of the causal LM ``lm`` and wrap its attention Q/K/V projections with :class:`LoRALinear`.

    Returns the names of the wrapped modules.

    Raises:
        ValueError: the architecture has no known attention projections (see ``LORA_TARGETS``).
    """
    cfg = cfg or LoRAConfig()
    model_type = lm.config.model_type
    target = LORA_TARGETS.get(model_type)
    if target is None:
        raise ValueError(
            f"LoRA: no known attention projections for model_type {model_type!r} (known: {sorted(LORA_TARGETS)})"
        )
    for p in lm.parameters():
        p.requires_grad_(False)
    head_dim = getattr(lm.config, "head_dim", None) or lm.config.hidden_size // lm.config.num_attention_heads
    wrapped = []
    for name, module in list(lm.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in target.modules or isinstance(module, LoRALinear):
            continue
        w = module.weight
        out_f = w.shape[1] if not isinstance(module, nn.Linear) else w.shape[0]
        parent = lm.get_submodule(name.rsplit(".", 1)[0]) if "." in name else lm
        setattr(parent, leaf, LoRALinear(module, cfg, _groups(out_f, target.layout, head_dim)))
        wrapped.append(name)
    if not wrapped:
        raise ValueError(f"LoRA: model_type {model_type!r} has none of the modules {target.modules}")
    return wrapped


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in module.modules())


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold every LoRA update of ``module`` into its projection, in place (no-op without adapters)."""
    for name, m in list(module.named_modules()):
        if isinstance(m, LoRALinear):
            parent = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            setattr(parent, name.rsplit(".", 1)[-1], m.merged())
    return module
