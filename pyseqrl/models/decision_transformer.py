"""The Decision Transformer on transformers' GPT2Model (Chen et al. 2021), with the Wiki-RL and LaMo variants.

Each time step t contributes three tokens, (R_t, s_t, a_t): the return-to-go, the state and the action, each embedded
by its own input embedding plus a learned timestep embedding. GPT-2 reads the interleaved sequence causally and the
action a_t is predicted from the hidden state of the token s_t.

    R_1 s_1 a_1 R_2 s_2 a_2 ... R_K s_K a_K     (3K tokens; left padded when the segment is shorter than K)
         |           |               |
        â_1         â_2             â_K

The backbone is a plain ``transformers.GPT2Model``, so any GPT-2-family checkpoint loads by hub name or directory
(Wiki-RL, LaMo), or it is built at random (the DT baseline, 128 hidden x 3 layers x 1 head).

Padding never changes the outputs at real positions: a 4-D attention mask removes padded keys and GPT-2 position ids
count real tokens only, so a left-padded segment and its unpadded version give the same action predictions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2Model

log = logging.getLogger(__name__)


@dataclass
class DTConfig:
    """Architecture of a :class:`DecisionTransformer`."""

    state_dim: int
    """Size S of an observation vector."""
    act_dim: int
    """Size A of an action vector."""
    backbone: str = "random"
    """"random" (GPT-2 built from the sizes below), a local directory of a Hugging Face GPT-2-family checkpoint
    (ChibiT from ``pyseqrl pretrain-lm`` included), or a hub name such as "gpt2"."""
    hidden_size: int = 128
    """Width H of the random backbone (ignored for pretrained backbones, which bring their own)."""
    n_layer: int = 3
    """Transformer blocks of the random backbone."""
    n_head: int = 1
    """Attention heads of the random backbone."""
    activation: str = "relu"
    """MLP activation of the random backbone (the DT paper uses relu; pretrained backbones keep theirs)."""
    context_len: int = 20
    """Context K in time steps (3K tokens)."""
    max_ep_len: int = 1000
    """Size of the timestep embedding table; larger timesteps are clamped to the last row."""
    dropout: float = 0.1
    """Dropout of the random backbone and of the input embeddings."""
    embedding: str = "linear"
    """Input embeddings: "linear" (DT, Wiki-RL) or "mlp" (LaMo's residual MLP)."""
    tanh_action: bool = True
    """Squash predicted actions with tanh (continuous actions in [-1, 1])."""
    position_embedding: bool | None = None
    """Add GPT-2's token-position table; None = only for pretrained backbones (the DT baseline has none)."""
    timestep_from_lm: bool = False
    """Initialise the timestep embedding from the LM's position table (Wiki-RL's option; needs H equal sizes)."""


class ResidualMLPEmbedding(nn.Module):
    """LaMo's input embedding: a linear projection followed by a residual GELU MLP.

    ``y = h + W_2 gelu(h)`` with ``h = W_1 x``; maps ``(..., in_dim)`` to ``(..., hidden)``.
    """

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return h + self.fc2(F.gelu(h))


def _embedding(kind: str, in_dim: int, hidden: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, hidden)
    if kind == "mlp":
        return ResidualMLPEmbedding(in_dim, hidden)
    raise ValueError(f"embedding must be 'linear' or 'mlp', got {kind!r}")


def load_backbone(cfg: DTConfig, gpt2_config: GPT2Config | None = None) -> GPT2Model:
    """Build or load the GPT-2 backbone named by ``cfg.backbone`` (or build ``gpt2_config`` untrained).

    Raises:
        FileNotFoundError: ``cfg.backbone`` looks like a path (contains a separator or starts with '.') but is
            not a directory holding a ``config.json``.
    """
    name = cfg.backbone
    if gpt2_config is not None:  # weights come from a state dict (exported models)
        return GPT2Model(gpt2_config)
    if name == "random":
        gcfg = GPT2Config(
            vocab_size=1,  # no text; LM co-training needs a pretrained backbone
            bos_token_id=0,
            eos_token_id=0,
            n_positions=max(1024, 3 * cfg.context_len),
            n_embd=cfg.hidden_size,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_inner=4 * cfg.hidden_size,
            activation_function=cfg.activation,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
        )
        return GPT2Model(gcfg)
    path = Path(os.path.expanduser(name))
    looks_local = path.exists() or os.sep in name or name.startswith(".")
    if looks_local and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"backbone {name!r}: expected a directory with a Hugging Face config.json (save_pretrained output), "
            f"found {'a directory without config.json' if path.is_dir() else 'nothing'}"
        )
    log.info("loading GPT-2 backbone from %s", name)
    # GPT2Model.from_pretrained accepts both GPT2Model and GPT2LMHeadModel checkpoints ("transformer." prefix)
    return GPT2Model.from_pretrained(str(path) if looks_local else name, local_files_only=looks_local)


def attention_mask_4d(key_mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """Causal + padding mask for the last ``q_len`` of ``L`` tokens.

    Args:
        key_mask: bool (B, L), True for real tokens (cached ones first, the ``q_len`` new ones last).
        q_len: number of query tokens.

    Returns:
        bool (B, 1, q_len, L), True where a query may attend. Every query may attend to itself, so rows of padded
        queries are never empty (no NaN); real queries never see padded keys.
    """
    L = key_mask.shape[1]
    q_pos = torch.arange(L - q_len, L, device=key_mask.device)[:, None]  # (q, 1) absolute index of each query
    k_pos = torch.arange(L, device=key_mask.device)[None, :]  # (1, L)
    causal = k_pos <= q_pos  # (q, L)
    mask = causal[None] & key_mask[:, None, :]  # (B, q, L)
    mask = mask | (k_pos == q_pos)[None]  # padded queries attend to themselves only
    return mask[:, None]  # (B, 1, q, L)


def position_ids_from_mask(key_mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """GPT-2 position of each of the last ``q_len`` tokens = number of real tokens before it (int64 (B, q_len))."""
    pos = key_mask.long().cumsum(1) - 1  # (B, L)
    return pos[:, -q_len:].clamp(min=0)


class DecisionTransformer(nn.Module):
    """Return-conditioned policy: GPT-2 over interleaved (return-to-go, state, action) tokens.

    Example:
        >>> model = DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context_len=20))
        >>> B, K = 4, 20
        >>> a = model(torch.randn(B, K, 11), torch.randn(B, K, 3), torch.randn(B, K, 1),
        ...           torch.randint(0, 1000, (B, K)), torch.ones(B, K))
        >>> a.shape
        torch.Size([4, 20, 3])
    """

    def __init__(self, cfg: DTConfig, gpt2_config: GPT2Config | None = None):
        super().__init__()
        if cfg.state_dim < 1 or cfg.act_dim < 1 or cfg.context_len < 1:
            raise ValueError(
                f"state_dim, act_dim and context_len must be >= 1, got {cfg.state_dim}, {cfg.act_dim}, "
                f"{cfg.context_len}"
            )
        self.cfg = cfg
        self.transformer = load_backbone(cfg, gpt2_config)
        H = self.transformer.config.n_embd
        self.hidden_size = H
        pretrained = cfg.backbone != "random"
        self.use_positions = pretrained if cfg.position_embedding is None else cfg.position_embedding
        if 3 * cfg.context_len > self.transformer.config.n_positions and self.use_positions:
            raise ValueError(
                f"context_len={cfg.context_len} needs {3 * cfg.context_len} positions, the backbone has "
                f"{self.transformer.config.n_positions}"
            )
        if not self.use_positions:  # the original DT has no token-position embedding: zero it and keep it frozen
            with torch.no_grad():
                self.transformer.wpe.weight.zero_()
            self.transformer.wpe.weight.requires_grad_(False)

        # --- the boxes of the DT figure: input embeddings, LayerNorm, action head
        self.embed_timestep = nn.Embedding(cfg.max_ep_len, H)
        if cfg.timestep_from_lm:
            wpe = self.transformer.wpe.weight
            if not pretrained or wpe.shape[0] < cfg.max_ep_len:
                raise ValueError(
                    f"timestep_from_lm needs a pretrained backbone with >= max_ep_len={cfg.max_ep_len} positions, "
                    f"got backbone={cfg.backbone!r} with {wpe.shape[0]}"
                )
            with torch.no_grad():
                self.embed_timestep.weight.copy_(wpe[: cfg.max_ep_len])
        self.embed_return = _embedding(cfg.embedding, 1, H)
        self.embed_state = _embedding(cfg.embedding, cfg.state_dim, H)
        self.embed_action = _embedding(cfg.embedding, cfg.act_dim, H)
        self.embed_ln = nn.LayerNorm(H)
        self.predict_action = nn.Sequential(nn.Linear(H, cfg.act_dim), nn.Tanh() if cfg.tanh_action else nn.Identity())

    # ------------------------------------------------------------------ inputs
    def check_inputs(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                     timesteps: torch.Tensor) -> None:
        """Raise ValueError naming the argument when a shape does not match the config."""
        B, K = states.shape[:2]
        expect = {
            "states": (states, (B, K, self.cfg.state_dim)),
            "actions": (actions, (B, K, self.cfg.act_dim)),
            "returns_to_go": (returns_to_go, (B, K, 1)),
            "timesteps": (timesteps, (B, K)),
        }
        for name, (t, shape) in expect.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape} (B, K, ...), got {tuple(t.shape)}")
        if K > self.cfg.context_len:
            raise ValueError(f"segment length K={K} exceeds the model's context_len={self.cfg.context_len}")

    def embed(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
              timesteps: torch.Tensor) -> torch.Tensor:
        """Token embeddings fed to GPT-2.

        Args:
            states: float32 (B, T, S). actions: float32 (B, T, A). returns_to_go: float32 (B, T, 1).
            timesteps: int64 (B, T).

        Returns:
            float (B, 3T, H): R_1, s_1, a_1, R_2, ... after the embedding LayerNorm.
        """
        B, T = states.shape[:2]
        time = self.embed_timestep(timesteps.clamp(0, self.cfg.max_ep_len - 1))  # (B, T, H)
        r = self.embed_return(returns_to_go) + time  # (B, T, H)
        s = self.embed_state(states) + time
        a = self.embed_action(actions) + time
        x = torch.stack((r, s, a), dim=2).reshape(B, 3 * T, self.hidden_size)  # (B, 3T, H): R_1, s_1, a_1, R_2...
        return self.embed_ln(x)

    def run_backbone(self, x: torch.Tensor, key_mask: torch.Tensor, past: Any = None,
                     use_cache: bool = False) -> tuple[torch.Tensor, Any]:
        """GPT-2 over new token embeddings ``x`` (B, q, H) given a bool key mask (B, past + q).

        Returns the last hidden states (B, q, H) and the key/value cache (when ``use_cache``).
        """
        q = x.shape[1]
        out = self.transformer(
            inputs_embeds=x,
            attention_mask=attention_mask_4d(key_mask, q),
            position_ids=position_ids_from_mask(key_mask, q),
            past_key_values=past,
            use_cache=use_cache,
        )
        return out.last_hidden_state, out.past_key_values

    # ------------------------------------------------------------------ forward
    def forward(self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
                timesteps: torch.Tensor, attention_mask: torch.Tensor | None = None,
                return_embeddings: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict a_t from the state token s_t at every step of the segment.

        Args:
            states: float32 (B, K, S), normalised states.
            actions: float32 (B, K, A); a_t is never seen by its own prediction (causal mask).
            returns_to_go: float32 (B, K, 1), already divided by the return scale.
            timesteps: int64 (B, K), step index within the episode.
            attention_mask: float or bool (B, K), 1 for real steps, 0 for (left) padding; None = all real.
            return_embeddings: also return the token embeddings (for the alignment loss).

        Returns:
            action predictions float (B, K, A); with ``return_embeddings`` also the embeddings (B, 3K, H).
        """
        self.check_inputs(states, actions, returns_to_go, timesteps)
        B, K = states.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(B, K, device=states.device)
        elif tuple(attention_mask.shape) != (B, K):
            raise ValueError(f"attention_mask: expected shape {(B, K)}, got {tuple(attention_mask.shape)}")
        x = self.embed(states, actions, returns_to_go, timesteps)  # (B, 3K, H)
        key_mask = attention_mask.bool().repeat_interleave(3, dim=1)  # (B, 3K)
        h, _ = self.run_backbone(x, key_mask)  # (B, 3K, H)
        h = h.reshape(B, K, 3, self.hidden_size)  # (B, K, 3, H): [R_t, s_t, a_t] per step
        action_preds = self.predict_action(h[:, :, 1])  # (B, K, A) from the state tokens
        return (action_preds, x) if return_embeddings else action_preds

    # ------------------------------------------------------------------ language modelling
    def lm_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Causal-LM logits of the backbone (head tied to the token table): int64 (B, T) -> float (B, T, V)."""
        if self.transformer.config.vocab_size < 2:
            raise ValueError("LM co-training needs a pretrained backbone with a vocabulary; backbone is 'random'")
        h = self.transformer(input_ids=input_ids).last_hidden_state  # (B, T, H)
        return F.linear(h, self.transformer.wte.weight)  # (B, T, V)

    def lm_loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on int64 (B, T) token blocks (mean over B x (T-1) predictions)."""
        logits = self.lm_logits(input_ids[:, :-1])  # (B, T-1, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1))

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
