"""Language-model side of Wiki-RL/LaMo: text corpora, GPT-2 BPE tokenizers and ChibiT pretraining."""

from pyseqrl.lm.corpus import TokenBlocks, encode_texts, read_texts
from pyseqrl.lm.tokenizer import load_tokenizer, save_tokenizer, train_bpe

__all__ = ["TokenBlocks", "encode_texts", "load_tokenizer", "read_texts", "save_tokenizer", "train_bpe"]
