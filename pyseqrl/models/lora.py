"""LoRA on GPT-2's attention QKV projection with peft (LaMo, Shi et al. 2024).

GPT-2 stores ``c_attn`` as a ``Conv1D`` whose weight is (in, out), so peft needs ``fan_in_fan_out=True``. After
:func:`apply_lora` only the LoRA matrices of the backbone are trainable; the Decision Transformer's embeddings and
heads live outside the backbone and stay trainable. :func:`merge_lora` folds the adapters back into plain weights
(the exported model then needs no peft).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyseqrl.models.decision_transformer import DecisionTransformer


@dataclass
class LoRAConfig:
    """LoRA hyper-parameters (LaMo's defaults)."""

    r: int = 16
    """Rank of the update."""
    alpha: int = 32
    """Scaling numerator: the update is (alpha / r) B A."""
    dropout: float = 0.1
    """Dropout on the LoRA input."""
    target_modules: tuple[str, ...] = ("c_attn",)
    """Backbone modules that get adapters (GPT-2's fused QKV projection)."""


def apply_lora(model: DecisionTransformer, cfg: LoRAConfig | None = None) -> DecisionTransformer:
    """Wrap ``model.transformer`` with peft LoRA adapters in place and freeze the rest of the backbone."""
    from peft import LoraConfig, get_peft_model

    cfg = cfg or LoRAConfig()
    peft_cfg = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        fan_in_fan_out=True,  # GPT-2 Conv1D weights are (in, out)
        bias="none",
    )
    model.transformer = get_peft_model(model.transformer, peft_cfg)  # freezes every non-LoRA backbone weight
    return model


def has_lora(model: DecisionTransformer) -> bool:
    return hasattr(model.transformer, "merge_and_unload")


def merge_lora(model: DecisionTransformer) -> DecisionTransformer:
    """Fold the LoRA updates into the backbone weights and drop peft (no-op without adapters)."""
    if has_lora(model):
        model.transformer = model.transformer.merge_and_unload()
    return model
