"""The Decision Transformer (Chen et al. 2021) on any decoder-only language model, with the Wiki-RL and LaMo variants.

Each time step t contributes three tokens, (R_t, s_t, a_t): the return-to-go, the state and the action, each embedded
by its own input embedding, normalised by a LayerNorm and given a learned timestep embedding. The backbone reads the
interleaved sequence causally and the action a_t is predicted from the hidden state of the token s_t.

    R_1 s_1 a_1 R_2 s_2 a_2 ... R_K s_K a_K     (3K tokens; padded when the segment is shorter than K)
         |           |               |
        â_1         â_2             â_K

The backbone (:mod:`pyseqrl.models.backbone`) is a transformers causal LM: a GPT-2 built at random for the DT
baseline (128 hidden x 3 layers x 1 head), or a pretrained one for Wiki-RL and LaMo (ChibiT, GPT-2, SmolLM2, Qwen2,
GPT-NeoX...). The options below follow the official code of each method; ``docs/RECIPES.md`` lists where they
differ from the papers.

Padding never changes the outputs at real positions, so a padded segment and its unpadded version give the same
action predictions. Left padding (the DT paper's layout) puts the padding before the real steps: an explicit causal +
padding mask removes padded keys for every attention implementation, and position ids (when used) count real tokens
only. Right padding (``padding="right"``) puts the real steps first: the causal mask alone hides the padding that
follows them, so attention runs with no mask tensor (``is_causal``), which lets torch SDPA use its flash and cuDNN
kernels on a GPU. Both layouts train the same function: a model trained with either acts the same with either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyseqrl.models import backbone as bb
from pyseqrl.ops.dropout import use_native_dropout
from pyseqrl.utils import checks

log = logging.getLogger(__name__)

POSITIONS = ("none", "backbone")
TIME_EMBEDDINGS = ("before_ln", "after_ln")
ACTION_HEADS = ("linear", "tied", "mlp")
EMBEDDINGS = ("linear", "mlp")
PADDINGS = ("left", "right")


@dataclass
class DTConfig:
    """Architecture of a :class:`DecisionTransformer`."""

    state_dim: int
    """Size S of an observation vector."""
    act_dim: int
    """Size A of an action vector."""
    backbone: str = "random"
    """"random" (GPT-2 built from the sizes below), "smollm2", a .gguf file, a save_pretrained directory (ChibiT from
    ``pyseqrl pretrain-lm``) or a hub name such as "gpt2"."""
    backbone_weights: str = "pretrained"
    """For a named backbone: "pretrained" loads its weights, "untrained" builds its architecture with fresh
    weights (the ablation that separates pretraining from the rest of a recipe). Ignored by "random"."""
    hidden_size: int = 128
    """Width H of the random backbone (pretrained backbones bring their own)."""
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
    dropout: float | None = 0.1
    """Dropout of the random backbone; for a pretrained one, the family's dropout field (residual dropout for GPT-2,
    as Wiki-RL sets it, and GPT-NeoX; attention dropout for Llama/Qwen2). None keeps the checkpoint's."""
    embedding: str = "linear"
    """Input embeddings: "linear" (DT, Wiki-RL) or "mlp" (LaMo's residual GELU MLP)."""
    action_head: str = "linear"
    """"linear" (DT), "tied" (Wiki-RL's share_input_output_proj: tanh(h W_a) with the action embedding's weight) or
    "mlp" (LaMo: Linear-GELU-Linear)."""
    tanh_action: bool = True
    """Squash "linear" and "mlp" action heads with tanh ("tied" always squashes)."""
    positions: str = "none"
    """Token positions inside the backbone: "none" (the official DT, Wiki-RL and LaMo code adds no token-position
    embedding; a learned table is zeroed and frozen, a rotary backbone gets position id 0 everywhere, a rotation by
    zero) or "backbone" (the backbone's own scheme, positions counting real tokens)."""
    time_embedding: str = "before_ln"
    """Where the timestep embedding is added: "before_ln" (DT) or "after_ln" (Wiki-RL and LaMo)."""
    timestep_from_lm: bool | None = False
    """Initialise the timestep embedding from the backbone's learned position table, extended by repetition to
    max_ep_len (Wiki-RL's --extend_positions); True needs a learned table, None = exactly when there is one (and
    timestep_init_std is None)."""
    timestep_init_std: float | None = None
    """Standard deviation of a new timestep table's normal initialisation; None keeps nn.Embedding's N(0, 1), as the
    official DT. A table copied from the LM (timestep_from_lm) has the LM's scale instead (GPT-2 family: ~0.02)."""
    attn_implementation: str = "sdpa"
    """transformers attention implementation: "sdpa", "eager" or "pyseqrl" (the fused kernel)."""


class ResidualMLPEmbedding(nn.Module):
    """LaMo's input embedding: ``y = h + W_2 gelu(h)`` with ``h = W_1 x``; maps (..., in_dim) to (..., hidden)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return h + self.fc2(F.gelu(h))


class TiedActionHead(nn.Module):
    """Wiki-RL's shared input/output projection: ``tanh(h W)`` with W the action embedding's (H, A) weight."""

    def __init__(self, embed_action: nn.Linear):
        super().__init__()
        self.embed_action = [embed_action]  # a list: no second registration of the shared module

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.embed_action[0].weight)  # (..., H) x (H, A)


def _empty_cache(lm: Any) -> Any:
    """An empty key/value cache for ``lm``. A forward without an attention mask is given one: transformers then skips
    its packed-sequence look-up, which synchronises with the GPU and reads position ids of 0 (positions="none") as
    one sequence per token, so that each token would attend to itself only."""
    from transformers import DynamicCache

    return DynamicCache(config=lm.config)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class DecisionTransformer(nn.Module):
    """Return-conditioned policy: a causal LM over interleaved (return-to-go, state, action) tokens.

    Example:
        >>> model = DecisionTransformer(DTConfig(state_dim=11, act_dim=3, context_len=20))
        >>> B, K = 4, 20
        >>> a = model(torch.randn(B, K, 11), torch.randn(B, K, 3), torch.randn(B, K, 1),
        ...           torch.randint(0, 1000, (B, K)), torch.ones(B, K))
        >>> a.shape
        torch.Size([4, 20, 3])
    """

    def __init__(self, cfg: DTConfig, backbone_config: Any = None):
        super().__init__()
        if cfg.state_dim < 1 or cfg.act_dim < 1 or cfg.context_len < 1 or cfg.max_ep_len < 1:
            raise ValueError(
                f"state_dim, act_dim, context_len and max_ep_len must be >= 1, got {cfg.state_dim}, "
                f"{cfg.act_dim}, {cfg.context_len}, {cfg.max_ep_len}"
            )
        _check_choice("positions", cfg.positions, POSITIONS)
        _check_choice("backbone_weights", cfg.backbone_weights, bb.BACKBONE_WEIGHTS)
        _check_choice("time_embedding", cfg.time_embedding, TIME_EMBEDDINGS)
        _check_choice("action_head", cfg.action_head, ACTION_HEADS)
        _check_choice("embedding", cfg.embedding, EMBEDDINGS)
        if cfg.action_head == "tied" and cfg.embedding != "linear":
            raise ValueError("action_head='tied' shares the action embedding's weight: it needs embedding='linear'")
        self.cfg = cfg

        # --- the backbone: a causal LM (its LM head serves LM co-training)
        self.lm: Any
        if backbone_config is not None:  # an exported model: architecture known, weights come from a state dict
            self.lm = bb.load_causal_lm("", None, cfg.attn_implementation, config=backbone_config)
        elif cfg.backbone == "random":
            if cfg.hidden_size % max(1, cfg.n_head) or cfg.n_head < 1 or cfg.n_layer < 1:
                raise ValueError(
                    f"random backbone: need n_layer >= 1, n_head >= 1 and hidden_size divisible by "
                    f"n_head, got {cfg.n_layer}, {cfg.n_head}, {cfg.hidden_size}"
                )
            gcfg = bb.random_gpt2_config(
                cfg.hidden_size,
                cfg.n_layer,
                cfg.n_head,
                cfg.activation,
                0.1 if cfg.dropout is None else cfg.dropout,
                max(1024, 3 * cfg.context_len),
            )
            self.lm = bb.load_causal_lm("", None, cfg.attn_implementation, config=gcfg)
        else:
            self.lm = bb.load_causal_lm(
                cfg.backbone, cfg.dropout, cfg.attn_implementation, weights=cfg.backbone_weights
            )
        use_native_dropout(self.lm)  # the backbone's nn.Dropout draws its CPU masks natively (ops.dropout)
        H = int(self.lm.config.hidden_size)
        self.hidden_size = H
        self.position_scheme = bb.position_scheme(self.lm)
        if 3 * cfg.context_len > bb.max_positions(self.lm):
            raise ValueError(
                f"context_len={cfg.context_len} needs {3 * cfg.context_len} tokens, the backbone "
                f"supports {bb.max_positions(self.lm)}"
            )
        table = self.backbone.wpe if self.position_scheme == "learned" else None

        # --- the boxes of the DT figure: input embeddings, LayerNorm, action head
        self.embed_timestep = nn.Embedding(cfg.max_ep_len, H)
        auto = table is not None and cfg.timestep_init_std is None  # None: copy a learned table unless a scale is set
        from_lm = cfg.timestep_from_lm if cfg.timestep_from_lm is not None else auto
        if from_lm and backbone_config is None:  # (an export brings its trained table)
            if table is None:
                raise ValueError(
                    f"timestep_from_lm needs a backbone with a learned position table; "
                    f"{self.lm.config.model_type!r} uses {self.position_scheme} positions"
                )
            with torch.no_grad():
                self.embed_timestep.weight.copy_(bb.extend_table(table.weight, cfg.max_ep_len))
        if cfg.timestep_init_std is not None:
            checks.positive("timestep_init_std", cfg.timestep_init_std)
            if from_lm:
                raise ValueError(
                    "timestep_init_std sets the scale of a new timestep table, but timestep_from_lm copies the "
                    "backbone's position table: use one of them"
                )
            nn.init.normal_(self.embed_timestep.weight, 0.0, cfg.timestep_init_std)
        if table is not None and cfg.positions == "none":  # no token positions: zero the table and keep it frozen
            with torch.no_grad():
                table.weight.zero_()
            table.weight.requires_grad_(False)
        make: Any = ResidualMLPEmbedding if cfg.embedding == "mlp" else nn.Linear
        self.embed_return = make(1, H)
        self.embed_state = make(cfg.state_dim, H)
        self.embed_action = make(cfg.act_dim, H)
        self.embed_ln = nn.LayerNorm(H)
        squash = [nn.Tanh()] if cfg.tanh_action else []
        if cfg.action_head == "tied":
            if not isinstance(self.embed_action, nn.Linear):  # unreachable: embedding == "linear" was checked
                raise TypeError("action_head='tied' needs a linear action embedding")
            self.predict_action: nn.Module = TiedActionHead(self.embed_action)
        elif cfg.action_head == "mlp":
            self.predict_action = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Linear(H, cfg.act_dim), *squash)
        else:
            self.predict_action = nn.Sequential(nn.Linear(H, cfg.act_dim), *squash)

    @property
    def backbone(self) -> Any:
        """The LM's decoder (GPT2Model, LlamaModel, ...): hidden states without the LM head."""
        return self.lm.base_model

    @property
    def pretrained(self) -> bool:
        """Whether the backbone's weights came from a checkpoint (not "random", not "untrained")."""
        return self.cfg.backbone != "random" and self.cfg.backbone_weights == "pretrained"

    # ------------------------------------------------------------------ inputs
    def check_inputs(
        self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor
    ) -> None:
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
        if self.cfg.context_len < K:
            raise ValueError(f"segment length K={K} exceeds the model's context_len={self.cfg.context_len}")

    def embed(
        self, states: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token embeddings fed to the backbone.

        Args:
            states: float32 (B, T, S). actions: float32 (B, T, A). returns_to_go: float32 (B, T, 1).
            timesteps: int64 (B, T).

        Returns:
            (inputs, aligned): float (B, 3T, H) each, R_1, s_1, a_1, R_2, ...; ``inputs`` go to the backbone,
            ``aligned`` are the LayerNorm outputs the alignment loss pulls (without the timestep embedding when it
            is added after the LayerNorm, as in Wiki-RL's code).
        """
        B, T = states.shape[:2]
        time = self.embed_timestep(timesteps.clamp(0, self.cfg.max_ep_len - 1))  # (B, T, H)
        tokens = [self.embed_return(returns_to_go), self.embed_state(states), self.embed_action(actions)]
        if self.cfg.time_embedding == "before_ln":
            tokens = [t + time for t in tokens]
        x = torch.stack(tokens, dim=2).reshape(B, 3 * T, self.hidden_size)  # (B, 3T, H): R_1, s_1, a_1, R_2...
        x = self.embed_ln(x)
        if self.cfg.time_embedding == "after_ln":
            return x + time.repeat_interleave(3, dim=1), x  # (B, 3T, H)
        return x, x

    def run_backbone(
        self, x: torch.Tensor, key_mask: torch.Tensor | None, cache: Any = None, use_cache: bool = False
    ) -> tuple[torch.Tensor, Any]:
        """The backbone over new token embeddings ``x`` (B, q, H) given a bool key mask (B, cached + q).

        ``key_mask=None`` means that no padded token comes before a real one (no padding, or right padding only)
        and that nothing is cached yet: the causal mask alone is exact, so the backbone builds no mask tensor (SDPA
        runs ``is_causal``) and position ids, when counted, are 0, 1, 2, ...

        Returns the last hidden states (B, q, H) and the key/value cache (a transformers ``Cache``, when
        ``use_cache``).
        """
        B, q = x.shape[:2]
        if key_mask is None and cache is not None and cache.get_seq_length() > 0:
            raise ValueError("run_backbone: key_mask=None needs an empty cache (cached tokens need a key mask)")
        if cache is None and (use_cache or key_mask is None):
            cache = _empty_cache(self.lm)
        real = torch.ones(B, q, dtype=torch.bool, device=x.device) if key_mask is None else key_mask
        out = self.backbone(
            inputs_embeds=x,
            attention_mask=None if key_mask is None else bb.attention_mask_for(self.lm, key_mask, q, x.dtype),
            position_ids=bb.position_ids_for(real, q, counted=self.cfg.positions == "backbone"),
            cache=cache,
            use_cache=use_cache,
        )
        return out.last_hidden_state, (out.cache if use_cache else None)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        returns_to_go: torch.Tensor,
        timesteps: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_embeddings: bool = False,
        padding: str = "left",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict a_t from the state token s_t at every step of the segment.

        Args:
            states: float32 (B, K, S), normalised states.
            actions: float32 (B, K, A); a_t is never seen by its own prediction (causal mask).
            returns_to_go: float32 (B, K, 1), already divided by the return scale.
            timesteps: int64 (B, K), step index within the episode.
            attention_mask: float or bool (B, K), 1 for real steps, 0 for padding; None = all real.
            return_embeddings: also return the LayerNorm'd token embeddings (for the alignment loss).
            padding: where the padded steps of ``attention_mask`` are. ``"left"``: anywhere (the DT layout puts them
                first); an explicit mask hides them. ``"right"``: after the real steps of each row (as
                ``SegmentSampler(padding="right")`` lays them out); the causal mask alone hides them and attention
                runs with no mask tensor. The layout is checked on CPU tensors; on an accelerator it is trusted
                (checking would synchronise with the device).

        Returns:
            action predictions float (B, K, A); with ``return_embeddings`` also the embeddings (B, 3K, H).
        """
        self.check_inputs(states, actions, returns_to_go, timesteps)
        _check_choice("padding", padding, PADDINGS)
        B, K = states.shape[:2]
        if attention_mask is not None and tuple(attention_mask.shape) != (B, K):
            raise ValueError(f"attention_mask: expected shape {(B, K)}, got {tuple(attention_mask.shape)}")
        if padding == "right" and attention_mask is not None and attention_mask.device.type == "cpu":
            real = attention_mask.bool()
            rows = (real[:, 1:] & ~real[:, :-1]).any(1).nonzero().flatten().tolist()  # a real step after padding
            if rows:
                raise ValueError(
                    f"attention_mask: padding='right' expects the real steps of each row first (1, ..., 1, 0, ..., 0), "
                    f"got a real step after a padded one in rows {rows[:5]}"
                )
        x, aligned = self.embed(states, actions, returns_to_go, timesteps)  # (B, 3K, H)
        key_mask = None  # no padded key before a real query: the causal mask alone is exact
        if padding == "left" and attention_mask is not None:
            key_mask = attention_mask.bool().repeat_interleave(3, dim=1)  # (B, 3K)
        h, _ = self.run_backbone(x, key_mask)  # (B, 3K, H)
        h = h.reshape(B, K, 3, self.hidden_size)  # (B, K, 3, H): [R_t, s_t, a_t] per step
        action_preds = self.predict_action(h[:, :, 1])  # (B, K, A) from the state tokens
        return (action_preds, aligned) if return_embeddings else action_preds

    # ------------------------------------------------------------------ language modelling
    def lm_loss(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy of the backbone's own LM head on int64 (B, T) token blocks.

        Token positions follow ``cfg.positions`` as in the RL pass (the official Wiki-RL and LaMo code runs its
        co-training text without position embeddings too).
        """
        vocab = int(self.lm.config.vocab_size)
        if vocab < 2:
            raise ValueError("LM co-training needs a pretrained backbone with a vocabulary; backbone is 'random'")
        B, T = input_ids.shape
        if bb.max_positions(self.lm) < T:
            raise ValueError(f"LM blocks of {T} tokens exceed the backbone's {bb.max_positions(self.lm)} positions")
        pos = bb.position_ids_for(
            torch.ones(B, T, dtype=torch.bool, device=input_ids.device), T, counted=self.cfg.positions == "backbone"
        )
        logits = self.lm(input_ids=input_ids[:, :-1], position_ids=pos[:, :-1], cache=_empty_cache(self.lm)).logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), input_ids[:, 1:].reshape(-1))
