"""Decision Transformers on pretrained language-model backbones (DT, Wiki-RL, LaMo) and their evaluation policy."""

from pyseqrl.models.alignment import alignment_loss, anneal_weight, kmeans
from pyseqrl.models.backbone import load_causal_lm, load_tokenizer, position_scheme, smollm2_file
from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig, ResidualMLPEmbedding
from pyseqrl.models.export import export_dt, load_dt, load_dt_policy
from pyseqrl.models.lora import LoRAConfig, LoRALinear, apply_lora, has_lora, merge_lora
from pyseqrl.models.losses import action_loss
from pyseqrl.models.policy import DTPolicy

__all__ = [
    "DTConfig",
    "DTPolicy",
    "DecisionTransformer",
    "LoRAConfig",
    "LoRALinear",
    "ResidualMLPEmbedding",
    "action_loss",
    "alignment_loss",
    "anneal_weight",
    "apply_lora",
    "export_dt",
    "has_lora",
    "kmeans",
    "load_causal_lm",
    "load_dt",
    "load_dt_policy",
    "load_tokenizer",
    "merge_lora",
    "position_scheme",
    "smollm2_file",
]
