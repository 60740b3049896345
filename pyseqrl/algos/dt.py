"""Train Decision Transformers: ``pyseqrl train dt | wiki | lamo`` (one trainer, three recipes).

* ``dt``   -- Chen et al. 2021: random GPT-2 (128 x 3 layers x 1 head), linear embeddings.
* ``wiki`` -- Reid et al. 2022 (Wiki-RL): LM-initialised backbone (GPT-2 or ChibiT), similarity alignment loss
              to k-means centroids of the LM token embeddings (weight annealed to 0), LM co-training.
* ``lamo`` -- Shi et al. 2024 (LaMo): LM-initialised, frozen backbone with LoRA on the attention QKV projection,
              residual-MLP embeddings, LM co-training with weight 0.1.

The loop is straight-line: sample, loss, step, log, evaluate, checkpoint. Recipe-specific parts are marked
``# [wiki]`` / ``# [lamo]``. Presets: configs/dt/*.yaml (``--config``); precedence defaults < recipe < YAML < flags.

    pyseqrl train dt --dataset hopper-medium.h5 --run-dir runs/dt-hopper
    torchrun --nproc-per-node 2 -m pyseqrl.cli train lamo --dataset ... --backbone gpt2
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from pyseqrl.models.alignment import alignment_loss, kmeans
from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
from pyseqrl.models.lora import LoRAConfig, apply_lora, merge_lora

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Options of ``pyseqrl train dt|wiki|lamo`` (recipe defaults are applied to fields left at None)."""

    recipe: str = "dt"
    """dt | wiki | lamo (set by the subcommand)."""
    dataset: str = ""
    """Offline dataset (any format pyseqrl.data.load reads)."""
    run_dir: str = "runs/dt"
    """Output directory: config.yaml, metrics.csv, tb/, checkpoint.pt, export/."""
    config: str | None = None
    """YAML preset (configs/dt/*.yaml); explicit flags override it."""
    # ---- model
    backbone: str | None = None
    """'random', a hub name ('gpt2') or a directory (ChibiT from pretrain-lm). Recipe default: dt random, else gpt2."""
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
    dropout: float = 0.1
    """Dropout (random backbone and embeddings)."""
    embedding: str | None = None
    """'linear' or 'mlp'. Recipe default: mlp for lamo, linear otherwise."""
    tanh_action: bool = True
    """tanh on the action head."""
    timestep_from_lm: bool = False
    """[wiki] initialise the timestep embedding from the LM's position table."""
    # ---- optimisation
    steps: int = 100_000
    """Gradient steps."""
    batch_size: int = 64
    """Segments per step (per process under torchrun)."""
    lr: float = 1e-4
    """Learning rate of everything that is not a pretrained LM weight (embeddings, heads, LoRA, random backbone)."""
    lm_lr: float | None = None
    """Learning rate of pretrained backbone weights. Recipe default: 1e-5 for wiki (= lr otherwise)."""
    weight_decay: float = 1e-4
    """AdamW weight decay, applied to weights with >= 2 dimensions only."""
    warmup_steps: int = 10_000
    """Linear learning-rate warmup."""
    grad_clip: float = 0.25
    """Gradient-norm clip."""
    return_scale: float = 1000.0
    """Returns-to-go are divided by this."""
    sample_by: str = "length"
    """SegmentSampler episode weighting: 'length' (as DT) or 'uniform'."""
    # ---- [wiki] alignment, [wiki]/[lamo] LM co-training, [lamo] LoRA
    align_weight: float | None = None
    """Weight of the similarity alignment loss at step 0. Recipe default: 0.1 for wiki, 0 otherwise."""
    align_anneal_steps: int = 5000
    """The alignment weight decays linearly to 0 over this many steps."""
    kmeans_clusters: int = 1000
    """k-means centroids of the LM token table (capped at the vocabulary size)."""
    lm_weight: float | None = None
    """Weight of the LM co-training loss. Recipe default: wiki 0.2, lamo 0.1, dt 0."""
    lm_text: list[str] = field(default_factory=lambda: ["ovos-wiki"])
    """Text for LM co-training (see pyseqrl.lm.read_texts)."""
    lm_tokenizer: str | None = None
    """Tokenizer of the backbone (default: the backbone directory, or the hub name)."""
    lm_batch_size: int = 16
    """LM blocks per step."""
    lm_seq_len: int = 128
    """LM block length."""
    lm_max_chars: int | None = 5_000_000
    """Read at most this much co-training text."""
    lora: bool | None = None
    """Freeze the backbone and train LoRA adapters. Recipe default: True for lamo."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.1
    """LoRA dropout."""
    # ---- evaluation, logging, checkpoints
    env_id: str | None = None
    """Environment for evaluation (default: the dataset's metadata env_id)."""
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
    resume: bool = True
    """Resume from run_dir/checkpoint.pt when it exists."""
    export: bool = True
    """Write run_dir/export (merged weights + metadata, loadable by pyseqrl.models.load_dt) at the end."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""
    progress: bool = True
    """Show a progress bar."""
    seed: int = 0
    """Seed (process r samples with seed + r)."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""


RECIPES: dict[str, dict[str, Any]] = {
    "dt": {"backbone": "random", "embedding": "linear", "lm_lr": None, "align_weight": 0.0, "lm_weight": 0.0,
           "lora": False},
    "wiki": {"backbone": "gpt2", "embedding": "linear", "lm_lr": 1e-5, "align_weight": 0.1, "lm_weight": 0.2,
             "lora": False},
    "lamo": {"backbone": "gpt2", "embedding": "mlp", "lm_lr": None, "align_weight": 0.0, "lm_weight": 0.1,
             "lora": True},
}


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill the fields left at None from the recipe and check the combination."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {cfg.recipe!r}")
    filled = {k: v for k, v in RECIPES[cfg.recipe].items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.lm_lr is None:
        cfg = dataclasses.replace(cfg, lm_lr=cfg.lr)
    if not cfg.dataset:
        raise ValueError("--dataset is required (a file readable by pyseqrl.data.load)")
    if cfg.backbone == "random" and (cfg.lm_weight or cfg.align_weight or cfg.lora):
        raise ValueError(f"recipe {cfg.recipe!r} with lm_weight/align_weight/lora needs a pretrained --backbone")
    return cfg


def parse_args(argv: list[str]) -> TrainConfig:
    """tyro over TrainConfig with recipe and YAML defaults (``--config`` is read first)."""
    import argparse

    import tyro

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default="dt")
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    default = TrainConfig(recipe=known.recipe)
    if known.config:
        data = yaml.safe_load(Path(known.config).read_text()) or {}
        unknown = set(data) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ValueError(f"{known.config}: unknown keys {sorted(unknown)}")
        default = dataclasses.replace(default, **data)
    return resolve(tyro.cli(TrainConfig, default=default, args=argv))


class DTObjective(nn.Module):
    """All losses of one step in one forward (so DDP sees every parameter that gets a gradient).

    action MSE on real steps + [wiki] alignment(t) + [wiki/lamo] LM co-training.
    """

    def __init__(self, model: DecisionTransformer, centroids: torch.Tensor | None, lm_weight: float):
        super().__init__()
        self.model = model
        self.register_buffer("centroids", centroids if centroids is not None else torch.zeros(0), persistent=False)
        self.lm_weight = lm_weight

    def forward(self, batch: dict[str, torch.Tensor], align_weight: float,
                lm_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
        mask = batch["attention_mask"]  # (B, K)
        preds, emb = self.model(batch["states"], batch["actions"], batch["returns_to_go"], batch["timesteps"], mask,
                                return_embeddings=True)  # (B, K, A), (B, 3K, H)
        err = ((preds.float() - batch["actions"]) ** 2).mean(-1)  # (B, K)
        out = {"action_loss": (err * mask).sum() / mask.sum().clamp(min=1.0)}
        loss = out["action_loss"]
        if align_weight > 0:  # [wiki] pull input embeddings toward LM token clusters
            out["align_loss"] = alignment_loss(emb, self.centroids, mask.repeat_interleave(3, dim=1))
            loss = loss + align_weight * out["align_loss"]
        if lm_ids is not None:  # [wiki]/[lamo] keep the language modelling ability
            out["lm_loss"] = self.model.lm_loss(lm_ids)
            loss = loss + self.lm_weight * out["lm_loss"]
        out["loss"] = loss
        return out


def param_groups(model: DecisionTransformer, lr: float, lm_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups by rule: decay only >= 2-D weights; pretrained backbone weights get ``lm_lr``.

    A backbone weight is "pretrained" when the backbone was loaded (not random) and it is not a LoRA adapter.
    Frozen parameters are left out. Each group carries a ``name`` for logging and tests.
    """
    pretrained = model.cfg.backbone != "random"
    groups: dict[str, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_lm = pretrained and name.startswith("transformer.") and "lora_" not in name
        decay = p.dim() >= 2
        key = f"{'lm' if is_lm else 'rl'}_{'decay' if decay else 'no_decay'}"
        g = groups.setdefault(key, {"name": key, "params": [], "lr": lm_lr if is_lm else lr,
                                    "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
    return list(groups.values())


def _unwrap(m: nn.Module) -> DTObjective:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m  # type: ignore[return-value]


def train(cfg: TrainConfig) -> dict[str, float]:
    """Run training; returns the last logged metrics (and the final evaluation when there is one)."""
    import pyseqrl
    from pyseqrl.data import load, torch_batches
    from pyseqrl.utils.checkpoint import load_torch, rng_state, save_torch, set_rng_state
    from pyseqrl.utils.logger import RunLogger

    # ---- processes (torchrun sets WORLD_SIZE/RANK/LOCAL_RANK)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    if world > 1:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    torch.manual_seed(cfg.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    np.random.seed(cfg.seed + rank)
    run_dir = Path(cfg.run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))

    # ---- data
    ds = load(cfg.dataset)
    mean, std = ds.state_stats()
    sampler = pyseqrl.SegmentSampler(ds, context_len=cfg.context_len, batch_size=cfg.batch_size, seed=cfg.seed + rank,
                                     return_scale=cfg.return_scale, max_ep_len=cfg.max_ep_len, state_mean=mean,
                                     state_std=std, sample_by=cfg.sample_by)
    env_id = cfg.env_id or (ds.metadata or {}).get("env_id")
    targets = list(cfg.target_returns) or [float(ds.episode_returns().max())]

    # ---- model (+ [lamo] LoRA)
    model = DecisionTransformer(DTConfig(
        state_dim=ds.observation_dim, act_dim=ds.action_dim, backbone=cfg.backbone or "random",
        hidden_size=cfg.hidden_size, n_layer=cfg.n_layer, n_head=cfg.n_head, context_len=cfg.context_len,
        max_ep_len=cfg.max_ep_len, dropout=cfg.dropout, embedding=cfg.embedding or "linear",
        tanh_action=cfg.tanh_action, timestep_from_lm=cfg.timestep_from_lm))
    if cfg.lora:
        apply_lora(model, LoRAConfig(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout))
    model.to(device)

    # ---- [wiki] k-means centroids of the LM token table; [wiki]/[lamo] co-training text
    centroids = None
    if cfg.align_weight:
        wte = model.transformer.wte.weight
        centroids = kmeans(wte, min(cfg.kmeans_clusters, wte.shape[0]), seed=cfg.seed).to(device)
    lm_blocks = None
    if cfg.lm_weight:
        from pyseqrl.lm.corpus import TokenBlocks, encode_texts, read_texts
        from pyseqrl.lm.tokenizer import eos_id

        tok = _backbone_tokenizer(cfg.lm_tokenizer or str(cfg.backbone))
        tokens = encode_texts(read_texts(cfg.lm_text, cfg.lm_max_chars), tok, eos_id(tok))
        if tokens.max() >= model.transformer.config.vocab_size:
            raise ValueError(f"tokenizer ids reach {tokens.max()} but the backbone vocabulary has "
                             f"{model.transformer.config.vocab_size} entries: wrong --lm-tokenizer?")
        lm_blocks = TokenBlocks(tokens, cfg.lm_seq_len, cfg.lm_batch_size, seed=cfg.seed + 7919 * (rank + 1))

    objective: nn.Module = DTObjective(model, centroids, float(cfg.lm_weight or 0.0)).to(device)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if cuda else None,
                                                        find_unused_parameters=True)
    groups = param_groups(model, cfg.lr, float(cfg.lm_lr), cfg.weight_decay)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))

    # ---- resume
    step = 0
    ckpt_path = run_dir / "checkpoint.pt"
    if cfg.resume and ckpt_path.exists():
        ck = load_torch(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        mine = ck["ranks"][rank]
        sampler.load_state_dict(mine["sampler"])
        if lm_blocks is not None:
            lm_blocks.load_state_dict(mine["lm_blocks"])
        set_rng_state(mine["rng"])
        step = int(ck["step"])
        log.info("resumed from %s at step %d", ckpt_path, step)

    def save_checkpoint() -> None:
        mine = {"sampler": sampler.state_dict(), "rng": rng_state(),
                "lm_blocks": lm_blocks.state_dict() if lm_blocks is not None else None}
        ranks = [mine]
        if world > 1:
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, mine)
        if rank == 0:
            save_torch({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "ranks": ranks, "step": step, "config": asdict(cfg)},
                       ckpt_path)

    # rows up to the checkpoint step are kept on resume
    logger = RunLogger(run_dir, cfg.tensorboard, resume_step=step + 1 if step else None) if rank == 0 else None
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
        from pyseqrl.models.policy import DTPolicy

        policy = DTPolicy(model, targets[0], cfg.return_scale, mean, std, refresh_every=cfg.eval_refresh_every)
        res = evaluate(policy, env_id, episodes=cfg.eval_episodes, seed=cfg.seed + 10_000, target_returns=targets)
        model.train()
        out: dict[str, float] = {}
        for t, r in res.per_target.items():
            out[f"eval/return_{t:g}"] = r.mean_return
            if r.normalized_score is not None:
                out[f"eval/score_{t:g}"] = r.normalized_score
        return out

    # ---- train
    from tqdm import tqdm

    batches = torch_batches(sampler, device=device)
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.recipe}", unit="step", dynamic_ncols=True,
               disable=not cfg.progress or rank != 0)
    t_log, s_log = time.perf_counter(), step
    while step < cfg.steps:
        batch = next(batches)
        lm_ids = torch.as_tensor(lm_blocks.sample(), device=device) if lm_blocks is not None else None
        align_w = float(cfg.align_weight or 0.0) * max(0.0, 1.0 - step / max(1, cfg.align_anneal_steps))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            losses = objective(batch, align_w, lm_ids)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            metrics = {f"train/{k}": float(v.detach()) for k, v in losses.items()}
            metrics.update({"train/grad_norm": float(grad_norm), "train/align_weight": align_w,
                            "train/steps_per_s": (step - s_log) / max(now - t_log, 1e-9)})
            for g in optimizer.param_groups:
                metrics[f"lr/{g['name']}"] = g["lr"]
            t_log, s_log = now, step
            if logger is not None:
                logger.log(step, metrics)
            bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
        if rank == 0 and cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            ev = run_eval()
            metrics.update(ev)
            if logger is not None and ev:
                logger.log(step, ev)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint()
    bar.close()

    # ---- export (LoRA merged into a copy, so the checkpoint keeps its adapters)
    if rank == 0 and cfg.export:
        import copy

        from pyseqrl.models.export import export_dt

        final = merge_lora(copy.deepcopy(model).cpu())
        export_dt(final, run_dir / "export", {"state_mean": mean, "state_std": std, "return_scale": cfg.return_scale,
                                              "target_returns": targets, "env_id": env_id, "recipe": cfg.recipe})
    if logger is not None:
        logger.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    if rank == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
        print(f"train {cfg.recipe}: {step} steps -> {run_dir}  ({summary})")
    return metrics


def _backbone_tokenizer(name: str) -> Any:
    """The backbone's tokenizer: a directory (tokenizer.json or vocab.json + merges.txt) or a hub name."""
    from pyseqrl.lm.tokenizer import load_tokenizer

    if Path(os.path.expanduser(name)).exists():
        return load_tokenizer(name)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name).backend_tokenizer


def load_policy(argument: str, env: Any = None, target_return: float | None = None, **kwargs: Any) -> Any:
    """The ``dt:<dir>`` policy scheme of :func:`pyseqrl.policies.load_policy`: a :class:`DTPolicy` from an export
    directory or from a run directory (its ``export/``). ``target_return`` defaults to the exported target."""
    from pyseqrl.models import load_dt_policy

    path = Path(os.path.expanduser(argument))
    if (path / "export" / "dt_config.json").is_file():
        path = path / "export"
    kwargs.pop("seed", None)
    return load_dt_policy(path, target_return=target_return, **kwargs)


def main(argv: list[str] | None = None) -> int:
    train(parse_args(list(argv or [])))
    return 0
