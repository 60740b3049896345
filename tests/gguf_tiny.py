"""A tiny random Llama causal LM written as a GGUF file, for tests that load GGUF checkpoints.

`write_tiny_llama_gguf(path)` writes the file the way llama.cpp's `convert_hf_to_gguf.py` would
(architecture "llama", F32 tensors under GGUF names, the Q/K rows permuted into llama.cpp's rotary layout,
a byte-level BPE tokenizer in the metadata) and returns the same network as a
`transformers.LlamaForCausalLM`, so a test can compare what a GGUF loader builds against a known reference:

    model = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="tiny.gguf")

Notes on what transformers' GGUF loader expects (checked against transformers 5.x):
- The config is read from `llama.*` keys plus the tokenizer ids: `tokenizer.ggml.bos_token_id` /
  `eos_token_id` also become `config.bos_token_id` / `eos_token_id`, and `llama.rope.dimension_count`
  becomes `config.head_dim`.
- `config.tie_word_embeddings` is True exactly when the file has no `output.weight` tensor, as in llama.cpp.
- Floats are stored as float32, so the reference config uses the float32-rounded `rms_norm_eps`.
- The tokenizer is rebuilt as a `GPT2Tokenizer` (byte-level BPE with GPT-2's split regex) from
  `tokenizer.ggml.{tokens,merges,token_type}`; tokens of type CONTROL (3) become special tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import transformers

EOS_TOKEN = "<|endoftext|>"

# Shape of the model: GQA (2 KV heads for 4 query heads), head_dim 8.
VOCAB_SIZE = 300
HIDDEN_SIZE = 32
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
INTERMEDIATE_SIZE = 64
MAX_POSITIONS = 256
RMS_NORM_EPS = float(np.float32(1e-5))  # GGUF stores it as float32; keep the reference config identical
ROPE_THETA = 10000.0

# Fixed text the BPE vocabulary is learnt from (a few hundred words).
_CORPUS = """\
The agent observes the state of the environment, picks an action, and receives a reward. Over many
episodes it learns a policy that maximises the expected return. A value function estimates how good
a state is, and a critic scores the actions the actor proposes. Offline reinforcement learning
trains on a fixed data set of transitions collected by some other behaviour policy, so the agent
cannot try new actions and must be careful not to trust values of actions it has never seen.
Conservative methods push those values down; implicit methods never query them at all. Online fine
tuning then lets the agent collect fresh experience and improve further.
A language model reads a sequence of tokens and predicts the next one. The tokenizer splits text
into tokens: bytes are merged into frequent pairs, and frequent pairs into longer pieces, until the
vocabulary is full. The model embeds every token as a vector, mixes the vectors with attention, and
turns the last hidden state into logits over the vocabulary. Sampling from those logits, one token
at a time, generates text. A decision transformer treats a trajectory of returns, states and actions
as such a sequence, and predicts the action that should come next given the return it is asked to
reach.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. How vexingly
quick daft zebras jump! Sphinx of black quartz, judge my vow. 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024
3.14 -1 +1 = < > ( ) [ ] { } / \\ | ; : ' " , . ? ! @ # $ % ^ & * _ ~ `
In the morning the robot walked to the kitchen, opened the drawer, took out a cup, and filled it
with water. Then it walked back to the table, put the cup down, and waited for the next instruction.
The reward was one when the cup reached the table without spilling, and zero otherwise. After a
thousand tries the robot rarely spilled.
"""


def _train_tokenizer():
    """A byte-level BPE (GPT-2 style pre-tokenization) with `VOCAB_SIZE` tokens, `EOS_TOKEN` at id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    return tokenizer


def _tokenizer_tables(tokenizer) -> tuple[list[str], list[int], list[str]]:
    """`(tokens by id, llama.cpp token types, merges as "a b")` of a trained byte-level BPE."""
    from gguf import TokenType

    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = [None] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    assert all(token is not None for token in tokens), "token ids are not contiguous"
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special}
    types = [int(TokenType.CONTROL if token in special else TokenType.NORMAL) for token in tokens]
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    # tokenizers >= 0.20 serialises merges as pairs, older versions as "a b" strings
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    return tokens, types, merges


def _permute_for_gguf(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: per head, interleave the two rotary halves (HF) into pairs (GGUF).

    transformers' GGUF loader undoes this (`LlamaTensorProcessor._reverse_permute_weights`), with `n_head` the
    number of heads of that projection: the query heads for `attn_q`, the KV heads for `attn_k`.
    """
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _randomize(model, seed: int) -> None:
    """Fill every parameter from a generator seeded with `seed`, at scales that make attention non-uniform
    and every norm weight distinct, so a wrongly mapped or wrongly permuted tensor shows in the logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if param.ndim == 1:  # RMSNorm weights
                param.copy_(1.0 + 0.2 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                param.copy_(0.5 * noise)
            else:  # Linear (out, in): unit-variance outputs for unit-RMS inputs (sharper for Q and K)
                gain = 2.0 if ("q_proj" in name or "k_proj" in name) else 1.0
                param.copy_(noise * (gain / param.shape[1] ** 0.5))


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> transformers.LlamaForCausalLM:
    """Write a tiny random Llama causal LM (with a byte-level BPE tokenizer) as a GGUF file at `path`, and
    return the same model as a transformers LlamaForCausalLM (fp32, eval mode) for comparison."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = _train_tokenizer()
    tokens, token_types, merges = _tokenizer_tables(tokenizer)
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    head_dim = HIDDEN_SIZE // NUM_HEADS

    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_KV_HEADS,
        head_dim=head_dim,
        max_position_embeddings=MAX_POSITIONS,
        rms_norm_eps=RMS_NORM_EPS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=None,
    )
    # Leave the caller's global RNG alone: the constructor's own init draws from it.
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    model = model.to(torch.float32)
    _randomize(model, seed)
    model.eval()

    def array(tensor: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(tensor.detach().to(torch.float32).numpy())

    writer = gguf.GGUFWriter(path, "llama", use_temp_file=False)
    writer.add_name("tiny-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(len(tokens))
    writer.add_context_length(MAX_POSITIONS)
    writer.add_embedding_length(HIDDEN_SIZE)
    writer.add_block_count(NUM_LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE_SIZE)
    writer.add_head_count(NUM_HEADS)
    writer.add_head_count_kv(NUM_KV_HEADS)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(ROPE_THETA)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eos_id)
    writer.add_eos_token_id(eos_id)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)

    state = model.state_dict()
    writer.add_tensor("token_embd.weight", array(state["model.embed_tokens.weight"]))
    for i in range(NUM_LAYERS):
        hf = f"model.layers.{i}."
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", array(state[hf + "input_layernorm.weight"]))
        q_weight = array(state[hf + "self_attn.q_proj.weight"])
        k_weight = array(state[hf + "self_attn.k_proj.weight"])
        writer.add_tensor(blk + "attn_q.weight", _permute_for_gguf(q_weight, NUM_HEADS))
        writer.add_tensor(blk + "attn_k.weight", _permute_for_gguf(k_weight, NUM_KV_HEADS))
        writer.add_tensor(blk + "attn_v.weight", array(state[hf + "self_attn.v_proj.weight"]))
        writer.add_tensor(blk + "attn_output.weight", array(state[hf + "self_attn.o_proj.weight"]))
        writer.add_tensor(blk + "ffn_norm.weight", array(state[hf + "post_attention_layernorm.weight"]))
        writer.add_tensor(blk + "ffn_gate.weight", array(state[hf + "mlp.gate_proj.weight"]))
        writer.add_tensor(blk + "ffn_up.weight", array(state[hf + "mlp.up_proj.weight"]))
        writer.add_tensor(blk + "ffn_down.weight", array(state[hf + "mlp.down_proj.weight"]))
    writer.add_tensor("output_norm.weight", array(state["model.norm.weight"]))
    # Tied embeddings: like llama.cpp, no `output.weight`; transformers then sets tie_word_embeddings.

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
