"""Train Decision Transformers: ``pyseqrl train dt | wiki | lamo`` (one trainer, three recipes).

* ``dt``   -- Chen et al. 2021: random GPT-2 (128 x 3 layers x 1 head), linear embeddings.
* ``wiki`` -- Reid et al. 2022 (Wiki-RL): LM-initialised backbone (GPT-2, ChibiT, SmolLM2...), alignment loss
              to k-means centroids of the LM token embeddings (sigmoid-annealed), optional LM co-training.
* ``lamo`` -- Shi et al. 2023 (LaMo): LM-initialised, frozen backbone with LoRA on the attention Q, K and V,
              residual-MLP embeddings and action head, LM co-training with weight 0.1.

Every recipe default follows the official code (:data:`RECIPES`; docs/RECIPES.md names the source of each).

The loop is straight-line: sample, loss, step, log, evaluate, checkpoint. Recipe-specific parts are marked
``# [wiki]`` / ``# [lamo]``. Presets: configs/dt/*.yaml (``--config``); precedence defaults < recipe < YAML < flags.

    pyseqrl train dt --dataset hopper-medium.h5 --run-dir runs/dt-hopper
    torchrun --nproc-per-node 2 -m pyseqrl.cli train lamo --dataset ... --backbone gpt2
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro
from torch import nn
from tqdm import tqdm

import pyseqrl
from pyseqrl.data import load, torch_batches
from pyseqrl.lm.corpus import TokenBlocks, encode_texts, read_texts
from pyseqrl.lm.pretrain import cache_dir
from pyseqrl.models.alignment import alignment_loss, anneal_weight, kmeans
from pyseqrl.models.backbone import BACKBONE_WEIGHTS, load_tokenizer, max_positions
from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
from pyseqrl.models.export import export_dt
from pyseqrl.models.lora import LoRAConfig, apply_lora, merge_lora
from pyseqrl.models.losses import action_loss
from pyseqrl.models.policy import DTPolicy
from pyseqrl.ops.gpu_sampler import GPUSegmentSampler
from pyseqrl.ops.graphed_step import TrainStep, set_warmup_lr
from pyseqrl.utils import checks
from pyseqrl.utils.checkpoint import load_torch, rng_state, save_torch, set_rng_state
from pyseqrl.utils.precision import autocast_bf16
from pyseqrl.utils.runs import RunOptions, checkpoint_path, due, open_logger, open_run, parse_config

log = logging.getLogger(__name__)


@dataclass
class TrainConfig(RunOptions):
    """Options of ``pyseqrl train dt|wiki|lamo``; options left at None take the recipe's default (docs/RECIPES.md)."""

    recipe: Annotated[str, tyro.conf.Suppress] = "dt"
    """dt | wiki | lamo (set by the subcommand)."""
    dataset: str = ""
    """Offline dataset (any format pyseqrl.data.load reads)."""
    run_dir: str = "runs/dt"
    """Output directory: config.yaml, metrics.csv, tb/, checkpoint.pt, export/."""
    data_ratio: float = 1.0
    """Train on this fraction of the dataset's trajectories, chosen at random by count (LaMo's data ratios)."""
    # ---- model
    backbone: str | None = None
    """'random', 'smollm2', a .gguf file, a save_pretrained directory (ChibiT) or a hub name ('gpt2').
    Recipe default: dt random, else gpt2."""
    backbone_weights: Literal["pretrained", "untrained"] = "pretrained"
    """'untrained' builds the named backbone's architecture with fresh weights and keeps every other part of the
    recipe: the ablation that shows what the pretrained weights themselves contribute."""
    hidden_size: int = 128
    """Width of a random backbone."""
    n_layer: int = 3
    """Layers of a random backbone."""
    n_head: int = 1
    """Heads of a random backbone."""
    context_len: int = 20
    """Context K in steps."""
    max_ep_len: int = 1000
    """Timestep embedding size."""
    dropout: float | None = None
    """Backbone dropout (see DTConfig.dropout). Recipe default: dt 0.1, wiki 0.2 (official run.sh), lamo the
    checkpoint's own."""
    embedding: Literal["linear", "mlp"] | None = None
    """'linear' or 'mlp'. Recipe default: mlp for lamo, linear otherwise."""
    action_head: Literal["linear", "tied", "mlp"] | None = None
    """'linear', 'tied' or 'mlp'. Recipe default: dt linear, wiki tied (--share_input_output_proj), lamo mlp."""
    tanh_action: bool | None = None
    """tanh on the action head. Recipe default: True, except lamo (its MLP head has none)."""
    positions: Literal["none", "backbone"] | None = None
    """Token positions in the backbone: 'none' (all official code) or 'backbone'. Recipe default: none."""
    time_embedding: Literal["before_ln", "after_ln"] | None = None
    """'before_ln' (DT) or 'after_ln' (Wiki-RL, LaMo). Recipe default accordingly."""
    timestep_from_lm: bool | None = None
    """Initialise the timestep embedding from the LM's learned position table (Wiki-RL's --extend_positions).
    Recipe default: wiki when the backbone has a learned table, else no."""
    timestep_init_std: float | None = None
    """Std of a new timestep table's normal init; None = N(0, 1) as the official DT. 0.02 (GPT-2's init, the scale
    of the table Wiki-RL copies from its LM) makes DT converge several times faster at small budgets
    (docs/RESULTS.md)."""
    attn_implementation: Literal["sdpa", "eager", "pyseqrl"] = "sdpa"
    """Attention of the backbone: torch SDPA, eager, or pyseqrl's fused CUDA kernel ('pyseqrl'; on a CPU it runs
    its torch reference)."""
    # ---- optimisation
    steps: int = 100_000
    """Gradient steps."""
    batch_size: int = 64
    """Segments per step (per process under torchrun)."""
    lr: float = 1e-4
    """Learning rate of everything that is not a pretrained LM weight (embeddings, heads, LoRA, random backbone)."""
    lm_lr: float | None = None
    """Learning rate of pretrained backbone weights; None = lr (what the official Wiki-RL and LaMo runs did: their
    separate LM learning rate never reached the optimizer)."""
    weight_decay: float | None = None
    """AdamW weight decay, applied to weights with >= 2 dimensions only. Recipe default: 1e-4, lamo 1e-5."""
    adam_eps: float | None = None
    """AdamW epsilon. Recipe default: 1e-8 for dt, 1e-6 for the pretrained recipes (official code)."""
    warmup_steps: int | None = None
    """Linear learning-rate warmup. Recipe default: 10,000, lamo 2,500."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    """'auto' (bf16 autocast where the CPU or GPU has bf16 matmuls, else fp32), 'fp32' or 'bf16'; weights, optimizer
    state and losses stay fp32. bf16 trains to the same action loss as fp32 (bench/bench_precision.py)."""
    return_scale: float = 1000.0
    """Returns-to-go are divided by this."""
    sample_by: Literal["length", "uniform"] = "length"
    """SegmentSampler episode weighting: 'length' (as DT) or 'uniform'."""
    padding: Literal["left", "right"] = "left"
    """Where the padding of short segments goes: 'left' (before the real steps, the DT paper's layout) or 'right'
    (after them: the causal mask alone hides it, so attention runs without a mask tensor and SDPA can use its
    flash/cuDNN kernels on a GPU). Outputs at real steps, and so training, are the same either way."""
    # ---- [wiki] alignment, [wiki]/[lamo] LM co-training, [lamo] LoRA
    align_weight: float | None = None
    """Weight of the alignment loss. Recipe default: 0.1 for wiki, 0 otherwise."""
    align_loss: Literal["official", "paper"] = "official"
    """'official' (per-coordinate max over clusters, Wiki-RL's code) or 'paper' (max cosine similarity)."""
    align_anneal: Literal["sigmoid", "linear", "none"] = "sigmoid"
    """Anneal of the alignment weight: 'sigmoid' (official), 'linear' or 'none'."""
    align_anneal_steps: int = 5000
    """Length of the anneal (the official sigmoid is 0.5 at half of it)."""
    kmeans_clusters: int = 1000
    """k-means centroids of the LM token table (capped at the vocabulary size)."""
    kmeans_metric: Literal["cosine", "euclidean"] = "cosine"
    """k-means assignment: 'cosine' (official) or 'euclidean'."""
    lm_weight: float | None = None
    """Weight of the LM co-training loss. Recipe default: dt 0, wiki 0 (its main runs; its lm_cotraining variant
    used 1.0), lamo 0.1 (LaMo's run_cotrain.sh)."""
    lm_text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Text for LM co-training (see pyseqrl.lm.read_texts)."""
    lm_tokenizer: str | None = None
    """Tokenizer for co-training (None: the backbone's own)."""
    lm_batch_size: int | None = None
    """LM blocks per step. Recipe default: 16; lamo 2 (official)."""
    lm_seq_len: int | None = None
    """LM block length in tokens. Recipe default: 128; lamo 1024 (official, capped at the backbone's positions)."""
    lm_max_chars: int | None = 5_000_000
    """Read at most this much co-training text."""
    lora: bool | None = None
    """Freeze the backbone and train LoRA adapters on its attention Q/K/V. Recipe default: True for lamo."""
    lora_r: int = 16
    """LoRA rank (of each of Q, K and V)."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.1
    """LoRA dropout."""
    # ---- evaluation, logging, checkpoints
    env_id: str | None = None
    """Environment for evaluation (None: the dataset's metadata env_id)."""
    eval_every: int = 10_000
    """Evaluate every this many steps and at the end (0 = never)."""
    eval_episodes: int = 10
    """Episodes per target return."""
    target_returns: list[float] = field(default_factory=list)
    """Target returns (env units). Empty = the dataset's best episode return."""
    eval_refresh_every: int = 1
    """DTPolicy refresh_every (1 = exact sliding window; K//2 = faster)."""
    log_every: int = 100
    """Metric logging period in steps."""
    checkpoint_every: int = 5000
    """Checkpoint period in steps (and at the end)."""
    export: bool = True
    """Write run_dir/export (merged weights + metadata, loadable by pyseqrl.models.load_dt) at the end."""
    seed: int = 0
    """Seed (process r samples with seed + r)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Training device ('auto': CUDA when available)."""
    # ---- [gpu] the GPU training path (each needs a CUDA device)
    sampler: Literal["cpu", "gpu"] = "cpu"
    """Where batches are gathered: 'cpu' (SegmentSampler, batches copied to the device) or 'gpu' (the dataset
    lives on the GPU and one kernel gathers each batch; the same batches, bit for bit)."""
    cuda_graph: bool = False
    """Replay the whole training step (sample, forward, backward, clip, warmup, AdamW) as one CUDA graph. Needs
    --sampler gpu, a single process, and no LM co-training or alignment loss (their inputs come from the host)."""


# Defaults of each recipe, from the official code (docs/RECIPES.md gives the file behind each value).
RECIPES: dict[str, dict[str, Any]] = {
    "dt": {
        "backbone": "random",
        "embedding": "linear",
        "action_head": "linear",
        "tanh_action": True,
        "positions": "none",
        "time_embedding": "before_ln",
        "timestep_from_lm": False,
        "dropout": 0.1,
        "weight_decay": 1e-4,
        "adam_eps": 1e-8,
        "warmup_steps": 10_000,
        "align_weight": 0.0,
        "lm_weight": 0.0,
        "lm_batch_size": 16,
        "lm_seq_len": 128,
        "lora": False,
    },
    "wiki": {
        "backbone": "gpt2",
        "embedding": "linear",
        "action_head": "tied",
        "tanh_action": True,
        "positions": "none",
        "time_embedding": "after_ln",
        "dropout": 0.2,
        "weight_decay": 1e-4,
        "adam_eps": 1e-6,
        "warmup_steps": 10_000,
        "align_weight": 0.1,
        "lm_weight": 0.0,
        "lm_batch_size": 16,
        "lm_seq_len": 128,
        "lora": False,
    },
    "lamo": {
        "backbone": "gpt2",
        "embedding": "mlp",
        "action_head": "mlp",
        "tanh_action": False,
        "positions": "none",
        "time_embedding": "after_ln",
        "timestep_from_lm": False,
        "weight_decay": 1e-5,
        "adam_eps": 1e-6,
        "warmup_steps": 2_500,
        "align_weight": 0.0,
        "lm_weight": 0.1,
        "lm_batch_size": 2,
        "lm_seq_len": 1024,
        "lora": True,
    },
}
"""Recipe defaults for the TrainConfig fields left at None. ``dropout`` and ``timestep_from_lm`` may stay None:
the checkpoint's own dropout, and a timestep table from the LM exactly when it has a learned one."""


def _check_metadata_env_id(env_id: str, dataset: str) -> None:
    """An evaluation environment named by the dataset's metadata exists (before training, not at the first
    evaluation); without the environment packages evaluation is skipped later with a warning."""
    try:
        from pyseqrl.envs import check_env_id

        check_env_id(env_id)
    except ImportError:
        return
    except ValueError as e:
        raise ValueError(
            f"{dataset}: its metadata names the evaluation environment {env_id!r}, which is not available ({e}); "
            "pass --env-id, or --eval-every 0 to train without evaluation"
        ) from None


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left at None from the recipe and check the combination (idempotent)."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {cfg.recipe!r}")
    filled = {k: v for k, v in RECIPES[cfg.recipe].items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    if not cfg.dataset:
        raise ValueError("--dataset is required (a file readable by pyseqrl.data.load)")
    if cfg.backbone == "random" and (cfg.lm_weight or cfg.align_weight or cfg.lora):
        raise ValueError(f"recipe {cfg.recipe!r} with lm_weight/align_weight/lora needs a pretrained --backbone")
    if cfg.backbone_weights not in BACKBONE_WEIGHTS:
        raise ValueError(f"backbone_weights must be 'pretrained' or 'untrained', got {cfg.backbone_weights!r}")
    if not 0.0 < cfg.data_ratio <= 1.0:
        raise ValueError(f"data_ratio must be in (0, 1], got {cfg.data_ratio}")
    if cfg.precision not in ("fp32", "bf16", "auto"):
        raise ValueError(f"precision must be 'fp32', 'bf16' or 'auto', got {cfg.precision!r}")
    if cfg.cuda_graph and cfg.sampler != "gpu":
        raise ValueError("cuda_graph needs --sampler gpu (the graph replays the GPU sampler's gather)")
    if cfg.cuda_graph and (cfg.lm_weight or cfg.align_weight):
        raise ValueError(
            f"cuda_graph trains the action loss only; got lm_weight={cfg.lm_weight}, align_weight={cfg.align_weight} "
            "(set both to 0, or drop --cuda-graph)"
        )
    for name in ("steps", "batch_size", "context_len", "max_ep_len", "eval_episodes", "eval_refresh_every"):
        checks.integer(name, getattr(cfg, name), 1)
    for name in ("lm_batch_size", "lm_seq_len", "kmeans_clusters", "lora_r", "lora_alpha"):
        checks.integer(name, getattr(cfg, name), 1)
    checks.integer("warmup_steps", cfg.warmup_steps, 0)
    checks.integer("align_anneal_steps", cfg.align_anneal_steps, 0)
    checks.optional(checks.integer, "lm_max_chars", cfg.lm_max_chars, 1)
    if cfg.backbone == "random":
        for name in ("hidden_size", "n_layer", "n_head"):
            checks.integer(name, getattr(cfg, name), 1)
        if cfg.hidden_size % cfg.n_head:
            raise ValueError(f"hidden_size must be divisible by n_head={cfg.n_head}, got {cfg.hidden_size}")
    checks.positive("lr", cfg.lr)
    checks.optional(checks.positive, "lm_lr", cfg.lm_lr)
    checks.optional(checks.positive, "timestep_init_std", cfg.timestep_init_std)
    checks.positive("adam_eps", cfg.adam_eps)
    checks.positive("grad_clip", cfg.grad_clip)
    for name in ("weight_decay", "lm_weight", "align_weight"):
        checks.number(name, getattr(cfg, name), low=0.0)
    checks.optional(checks.number, "dropout", cfg.dropout, low=0.0, high=1.0, high_open=True)
    checks.number("lora_dropout", cfg.lora_dropout, low=0.0, high=1.0, high_open=True)
    checks.number("return_scale", cfg.return_scale)
    if cfg.return_scale == 0:
        raise ValueError("return_scale must be a finite non-zero number, got 0")
    for target in cfg.target_returns:
        checks.number("target_returns", target)
    if cfg.env_id is not None:
        from pyseqrl.envs import check_env_id

        check_env_id(cfg.env_id)
    return cfg


def parse_args(argv: list[str]) -> TrainConfig:
    """The options of ``pyseqrl train <recipe>``: ``argv`` starts with ``--recipe <name>`` (set by the subcommand),
    then the run contract's parser (:func:`pyseqrl.utils.runs.parse_config`) over TrainConfig with the recipe's
    defaults, an optional YAML preset (``--config``) and explicit flags, in that order of precedence."""
    recipe, rest = (argv[1], argv[2:]) if argv[:1] == ["--recipe"] and len(argv) > 1 else ("dt", argv)
    if "--recipe" in rest:
        raise ValueError("--recipe is chosen by the command: use `pyseqrl train dt`, `train wiki` or `train lamo`")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    description = (
        f"Train a Decision Transformer with the {recipe!r} recipe (defaults: docs/RECIPES.md). "
        "YAML presets: --config configs/dt/*.yaml (a run's config.yaml is one too); explicit flags override it."
    )
    cfg = parse_config(
        TrainConfig, rest, description, default=TrainConfig(recipe=recipe), prog=f"pyseqrl train {recipe}"
    )
    if cfg.recipe != recipe:
        raise ValueError(f"the preset is for `pyseqrl train {cfg.recipe}`, not `pyseqrl train {recipe}`")
    return resolve(cfg)


class DTObjective(nn.Module):
    """All losses of one step in one forward (so DDP sees every parameter that gets a gradient).

    action MSE on real steps + [wiki] alignment(t) + [wiki/lamo] LM co-training.
    """

    def __init__(
        self,
        model: DecisionTransformer,
        centroids: torch.Tensor | None,
        lm_weight: float,
        align_loss: str = "official",
        padding: str = "left",
    ):
        super().__init__()
        self.model = model
        self.padding = padding
        self.register_buffer("centroids", centroids if centroids is not None else torch.zeros(0), persistent=False)
        self.lm_weight = lm_weight
        self.align_loss = align_loss

    def forward(
        self, batch: dict[str, torch.Tensor], align_weight: float, lm_ids: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]  # (B, K)
        preds, emb = self.model(
            batch["states"],
            batch["actions"],
            batch["returns_to_go"],
            batch["timesteps"],
            mask,
            return_embeddings=True,
            padding=self.padding,
        )  # (B, K, A), (B, 3K, H)
        out = {"action_loss": action_loss(preds, batch["actions"], mask)}
        loss = out["action_loss"]
        if align_weight > 0:  # [wiki] pull input embeddings toward LM token clusters
            out["align_loss"] = alignment_loss(
                emb, self.centroids, mask.repeat_interleave(3, dim=1), kind=self.align_loss
            )
            loss = loss + align_weight * out["align_loss"]
        if lm_ids is not None:  # [wiki]/[lamo] keep the language modelling ability
            out["lm_loss"] = self.model.lm_loss(lm_ids)
            loss = loss + self.lm_weight * out["lm_loss"]
        out["loss"] = loss
        return out


def param_groups(
    model: DecisionTransformer, lr: float, lm_lr: float | None, weight_decay: float
) -> list[dict[str, Any]]:
    """AdamW groups by rule: decay only >= 2-D weights; pretrained backbone weights get ``lm_lr`` (None = lr).

    A backbone weight is "pretrained" when the backbone was loaded (not random) and it is not a LoRA adapter.
    Frozen parameters are left out. Each group carries a ``name`` for logging and tests.
    """
    groups: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_lm = model.pretrained and name.startswith("lm.") and "lora_" not in name
        decay = p.dim() >= 2
        key = f"{'lm' if is_lm else 'rl'}_{'decay' if decay else 'no_decay'}"
        g = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "lr": (lm_lr or lr) if is_lm else lr,
                "weight_decay": weight_decay if decay else 0.0,
            },
        )
        g["params"].append(p)
    return list(groups.values())


def build_model(cfg: TrainConfig, state_dim: int, act_dim: int) -> DecisionTransformer:
    """The Decision Transformer of a resolved config, with [lamo] LoRA adapters when ``cfg.lora``."""
    model = DecisionTransformer(
        DTConfig(
            state_dim=state_dim,
            act_dim=act_dim,
            backbone=cfg.backbone or "random",
            backbone_weights=cfg.backbone_weights,
            hidden_size=cfg.hidden_size,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            context_len=cfg.context_len,
            max_ep_len=cfg.max_ep_len,
            dropout=cfg.dropout,
            embedding=cfg.embedding or "linear",
            action_head=cfg.action_head or "linear",
            tanh_action=bool(cfg.tanh_action),
            positions=cfg.positions or "none",
            time_embedding=cfg.time_embedding or "before_ln",
            timestep_from_lm=cfg.timestep_from_lm,
            timestep_init_std=cfg.timestep_init_std,
            attn_implementation=cfg.attn_implementation,
        )
    )
    if cfg.lora:
        apply_lora(model.lm, LoRAConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
    return model


def lm_token_blocks(cfg: TrainConfig, model: DecisionTransformer, seed: int) -> TokenBlocks:
    """[wiki]/[lamo] co-training text tokenized by the backbone's own tokenizer, as a sampler of token blocks."""
    tok = load_tokenizer(cfg.lm_tokenizer or str(cfg.backbone))
    eos = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
    if eos is None:
        raise ValueError(
            f"tokenizer of {cfg.lm_tokenizer or cfg.backbone!r} has no end-of-text token to separate "
            f"co-training documents"
        )
    tokens = encode_texts(read_texts(cfg.lm_text, cfg.lm_max_chars), tok.backend_tokenizer, int(eos))
    vocab = int(model.lm.config.vocab_size)
    if tokens.max() >= vocab:
        raise ValueError(
            f"tokenizer ids reach {tokens.max()} but the backbone vocabulary has {vocab} entries: wrong --lm-tokenizer?"
        )
    seq_len = min(int(cfg.lm_seq_len or 128), max_positions(model.lm))
    return TokenBlocks(tokens, seq_len, int(cfg.lm_batch_size or 16), seed=seed)


def lm_centroids(model: DecisionTransformer, clusters: int, metric: str, seed: int) -> torch.Tensor:
    """[wiki] k-means centroids of the backbone's input-embedding table, computed once per table and cached.

    The cache (``$PYSEQRL_CACHE/kmeans``, as the official code's ``--kmeans_cache``) is keyed by the table's
    contents, the number of clusters, the metric and the seed, so a different backbone never reuses them.
    """
    table = model.lm.get_input_embeddings().weight.detach().float().cpu()
    clusters = min(clusters, table.shape[0])
    digest = hashlib.sha256(table.numpy().tobytes()).hexdigest()[:16]
    path = cache_dir() / "kmeans" / f"{digest}-{clusters}-{metric}-{seed}.pt"
    if path.is_file():
        try:
            cached = load_torch(path)
            if tuple(cached.shape) == (clusters, table.shape[1]):
                return cached
        except (ValueError, OSError, RuntimeError) as e:
            log.warning("ignoring the unreadable k-means cache %s (%s)", path, e)
    t0 = time.perf_counter()
    centroids = kmeans(table, clusters, seed=seed, metric=metric)
    log.info(
        "k-means: %d %s centroids of a %d x %d table in %.0f s (cached in %s)",
        clusters,
        metric,
        table.shape[0],
        table.shape[1],
        time.perf_counter() - t0,
        path,
    )
    save_torch(centroids, path)
    return centroids


# fields a resume must agree on: the data, the architecture and what the exported model stores
RESUME_KEYS = (
    "recipe",
    "dataset",
    "data_ratio",
    "backbone",
    "hidden_size",
    "n_layer",
    "n_head",
    "context_len",
    "max_ep_len",
    "embedding",
    "action_head",
    "tanh_action",
    "positions",
    "time_embedding",
    "lora",
    "lora_r",
    "return_scale",
)


def train(cfg: TrainConfig) -> dict[str, float]:
    """Run training; returns the last logged metrics (and the final evaluation when there is one)."""
    cfg = resolve(cfg)

    # ---- processes (torchrun sets WORLD_SIZE/RANK/LOCAL_RANK)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    elif cfg.sampler == "gpu" or cfg.cuda_graph:
        raise ValueError(
            f"--sampler gpu and --cuda-graph need a CUDA device; training runs on the CPU here "
            f"(device={cfg.device!r}, torch.cuda.is_available()={torch.cuda.is_available()})"
        )
    if cfg.cuda_graph and world > 1:
        raise ValueError(f"cuda_graph runs in a single process; this run has {world} (WORLD_SIZE)")
    bf16 = autocast_bf16(cfg.precision, device)
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    np.random.seed(cfg.seed + rank)
    run_dir = Path(cfg.run_dir)
    ckpt_path = checkpoint_path(cfg)
    ck = open_run(cfg, check=lambda saved: check_resume(saved.get("config", {}), cfg, ckpt_path), primary=rank == 0)

    # ---- data ([lamo] a random fraction of the trajectories)
    ds = load(cfg.dataset)
    if cfg.data_ratio < 1.0:
        ds = ds.subset_episodes(cfg.data_ratio, seed=cfg.seed)
    mean, std = ds.state_stats()
    sampling = dict(
        context_len=cfg.context_len,
        batch_size=cfg.batch_size,
        seed=cfg.seed + rank,
        return_scale=cfg.return_scale,
        max_ep_len=cfg.max_ep_len,
        state_mean=mean,
        state_std=std,
        sample_by=cfg.sample_by,
        padding=cfg.padding,
    )
    # [gpu] the GPU sampler gathers on the device and yields the same batches as the CPU one
    sampler = (
        GPUSegmentSampler(ds, device=device, **sampling)
        if cfg.sampler == "gpu"
        else pyseqrl.SegmentSampler(ds, **sampling)
    )
    env_id = cfg.env_id or (ds.metadata or {}).get("env_id")
    if env_id and not cfg.env_id and cfg.eval_every:  # (--env-id was checked in resolve)
        _check_metadata_env_id(env_id, cfg.dataset)
    targets = list(cfg.target_returns) or [float(ds.episode_returns().max())]

    # ---- model (+ [lamo] LoRA)
    model = build_model(cfg, ds.observation_dim, ds.action_dim).to(device)

    # ---- [wiki] k-means centroids of the LM token table; [wiki]/[lamo] co-training text
    centroids = None
    if cfg.align_weight:
        if ck is not None and ck.get("centroids") is not None:
            centroids = ck["centroids"].to(device)
        else:
            centroids = lm_centroids(model, cfg.kmeans_clusters, cfg.kmeans_metric, cfg.seed).to(device)
    lm_blocks = lm_token_blocks(cfg, model, cfg.seed + 7919 * (rank + 1)) if cfg.lm_weight else None

    objective: nn.Module = DTObjective(model, centroids, float(cfg.lm_weight or 0.0), cfg.align_loss, cfg.padding).to(
        device
    )
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if cuda else None, find_unused_parameters=True
        )
    groups = param_groups(model, cfg.lr, cfg.lm_lr, float(cfg.weight_decay))
    base_lrs = [g["lr"] for g in groups]
    optimizer = torch.optim.AdamW(
        groups, betas=(0.9, 0.999), eps=float(cfg.adam_eps), foreach=True, capturable=cfg.cuda_graph
    )
    warmup = int(cfg.warmup_steps or 0)

    # ---- resume
    step = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        mine = ck["ranks"][rank]
        sampler.load_state_dict(mine["sampler"])
        if lm_blocks is not None:
            lm_blocks.load_state_dict(mine["lm_blocks"])
        set_rng_state(mine["rng"])
        step = int(ck["step"])
        log.info("resumed from %s at step %d", ckpt_path, step)

    def save_checkpoint() -> None:
        mine = {
            "sampler": sampler.state_dict(),
            "rng": rng_state(),
            "lm_blocks": lm_blocks.state_dict() if lm_blocks is not None else None,
        }
        ranks = [mine]
        if world > 1:
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, mine)
        if rank == 0:
            save_torch(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "ranks": ranks,
                    "step": step,
                    "config": asdict(cfg),
                    "centroids": None if centroids is None else centroids.cpu(),
                },
                ckpt_path,
                keep_previous=True,
            )

    logger = open_logger(cfg, step if ck is not None else None) if rank == 0 else None
    metrics: dict[str, float] = {}

    def run_eval() -> dict[str, float]:
        if not env_id:
            log.warning("no env_id (dataset metadata has none): skipping evaluation")
            return {}
        try:
            from pyseqrl.evaluation import evaluate
        except ImportError as e:
            log.warning("evaluation unavailable (%s): skipping", e)
            return {}
        policy = DTPolicy(
            model, targets[0], cfg.return_scale, mean, std, refresh_every=cfg.eval_refresh_every, padding=cfg.padding
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            res = evaluate(policy, env_id, episodes=cfg.eval_episodes, seed=cfg.seed + 10_000, target_returns=targets)
        model.train()
        out: dict[str, float] = {}
        for t, r in res.per_target.items():
            out[f"eval/return_{t:g}"] = r.mean_return
            if r.normalized_score is not None:
                out[f"eval/score_{t:g}"] = r.normalized_score
        return out

    # ---- [gpu] the whole step as one CUDA graph: tensor learning rates, so the warmup runs on the device
    graphed = None
    if cfg.cuda_graph:
        for g in optimizer.param_groups:
            g["lr"] = torch.tensor(float(g["lr"]), device=device)

        def action_only(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
                return objective(batch, 0.0, None)["loss"]

        params = list(model.parameters())
        graphed = TrainStep(action_only, params, optimizer, sampler, cfg.grad_clip, warmup, base_lrs, step)
    first_step = step

    # ---- train
    batches = iter(sampler) if cfg.sampler == "gpu" else torch_batches(sampler, device=device)
    model.train()
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        desc=f"train {cfg.recipe}",
        unit="step",
        dynamic_ncols=True,
        disable=not cfg.progress or rank != 0,
    )
    t_log, s_log = time.perf_counter(), step
    while step < cfg.steps:
        align_w = float(cfg.align_weight or 0.0) * anneal_weight(step, cfg.align_anneal_steps, cfg.align_anneal)
        if graphed is not None:  # [gpu] three eager steps, then one graph replay per step
            if graphed.graph is None and step - first_step == 3:
                graphed.capture(warmup_iters=0)
            loss = graphed()
            losses, grad_norm = {"loss": loss, "action_loss": loss}, graphed.grad_norm
        else:
            batch = next(batches)
            lm_ids = torch.as_tensor(lm_blocks.sample(), device=device) if lm_blocks is not None else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                losses = objective(batch, align_w, lm_ids)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            set_warmup_lr(optimizer, base_lrs, step, warmup)
            optimizer.step()
        step += 1
        bar.update(1)

        if due(step, cfg.log_every, cfg.steps):
            now = time.perf_counter()
            metrics = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
            metrics.update(
                {
                    "train/grad_norm": float(grad_norm),
                    "train/align_weight": align_w,
                    "train/steps_per_s": (step - s_log) / max(now - t_log, 1e-9),
                }
            )
            for g in optimizer.param_groups:
                metrics[f"lr/{g['name']}"] = float(g["lr"])
            t_log, s_log = now, step
            if logger is not None:
                logger.log(step, metrics)
            bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if rank == 0 and cfg.eval_every and due(step, cfg.eval_every, cfg.steps):
            ev = run_eval()
            metrics.update(ev)
            if logger is not None and ev:
                logger.log(step, ev)
        if due(step, cfg.checkpoint_every, cfg.steps):
            save_checkpoint()
    bar.close()

    # ---- export (LoRA merged into a copy, so the checkpoint keeps its adapters)
    if rank == 0 and cfg.export:
        final = copy.deepcopy(model).cpu()
        merge_lora(final)
        export_dt(
            final,
            run_dir / "export",
            {
                "state_mean": mean,
                "state_std": std,
                "return_scale": cfg.return_scale,
                "target_returns": targets,
                "env_id": env_id,
                "recipe": cfg.recipe,
            },
        )
    if logger is not None:
        logger.close()
    if world > 1:  # every rank waits for rank 0's evaluation and export before the group goes away
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"train {cfg.recipe}: {step} steps -> {run_dir}  ({summary})")
    return metrics


def check_resume(saved: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume a checkpoint whose data or architecture differ from ``cfg`` (ValueError naming them)."""
    now = asdict(cfg)
    diff = [
        f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
        for k in RESUME_KEYS
        if k in saved and saved.get(k) != now[k]
    ]
    if diff:
        raise ValueError(
            f"cannot resume {str(path)!r}: "
            + "; ".join(diff)
            + " (use another --run-dir, or --no-resume --overwrite to start over in this one)"
        )


def main(argv: list[str] | None = None) -> int:
    train(parse_args(list(argv or [])))
    return 0
