"""Decision Transformers on GPT-2 backbones (DT, Wiki-RL, LaMo) and their evaluation policy."""

from pyseqrl.models.alignment import alignment_loss, kmeans
from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig, ResidualMLPEmbedding, load_backbone
from pyseqrl.models.lora import LoRAConfig, apply_lora, has_lora, merge_lora
from pyseqrl.models.policy import DTPolicy
from pyseqrl.models.export import export_dt, load_dt, load_dt_policy

__all__ = [
    "DecisionTransformer",
    "DTConfig",
    "DTPolicy",
    "LoRAConfig",
    "ResidualMLPEmbedding",
    "alignment_loss",
    "export_dt",
    "load_dt",
    "load_dt_policy",
    "apply_lora",
    "has_lora",
    "kmeans",
    "load_backbone",
    "merge_lora",
]
