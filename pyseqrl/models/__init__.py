"""Decision Transformers on GPT-2 backbones (DT, Wiki-RL, LaMo) and their evaluation policy."""

from pyseqrl.models.alignment import alignment_loss, kmeans
from pyseqrl.models.decision_transformer import (
    DecisionTransformer,
    DTConfig,
    ResidualMLPEmbedding,
    load_backbone,
)
from pyseqrl.models.export import export_dt, load_dt, load_dt_policy
from pyseqrl.models.lora import LoRAConfig, apply_lora, has_lora, merge_lora
from pyseqrl.models.policy import DTPolicy

__all__ = [
    "DTConfig",
    "DTPolicy",
    "DecisionTransformer",
    "LoRAConfig",
    "ResidualMLPEmbedding",
    "alignment_loss",
    "apply_lora",
    "export_dt",
    "has_lora",
    "kmeans",
    "load_backbone",
    "load_dt",
    "load_dt_policy",
    "merge_lora",
]
