"""Export a trained Decision Transformer to a self-contained directory and load it back as a model or policy.

Layout of an export directory::

    dt_config.json       DTConfig fields, the backbone's GPT2Config and evaluation metadata
                         (state_mean, state_std, return_scale, target_returns, env_id)
    model.safetensors    the full state dict (LoRA already merged: no peft needed to load)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
from pyseqrl.models.lora import has_lora
from pyseqrl.models.policy import DTPolicy


def export_dt(model: DecisionTransformer, out_dir: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (which must have no unmerged LoRA adapters) and ``meta`` to ``out_dir``."""
    from safetensors.torch import save_file

    if has_lora(model):
        raise ValueError("merge the LoRA adapters first (pyseqrl.models.merge_lora) before exporting")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in (meta or {}).items()}
    doc = {"dt_config": asdict(model.cfg), "gpt2_config": model.transformer.config.to_dict(), "meta": meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    (out / "dt_config.json").write_text(json.dumps(doc, indent=2))
    return out


def load_dt(path: str | os.PathLike, device: str = "cpu") -> tuple[DecisionTransformer, dict[str, Any]]:
    """Load an export directory: returns the model (eval mode) and its metadata dict."""
    from safetensors.torch import load_file
    from transformers import GPT2Config

    p = Path(path)
    if not (p / "dt_config.json").is_file() or not (p / "model.safetensors").is_file():
        raise FileNotFoundError(f"{str(p)!r} is not a pyseqrl DT export: expected dt_config.json + model.safetensors")
    doc = json.loads((p / "dt_config.json").read_text())
    gcfg = GPT2Config.from_dict(doc["gpt2_config"])
    model = DecisionTransformer(DTConfig(**doc["dt_config"]), gpt2_config=gcfg)
    model.load_state_dict(load_file(str(p / "model.safetensors")))
    return model.to(device).eval(), doc["meta"]


def load_dt_policy(path: str | os.PathLike, target_return: float | None = None, device: str = "cpu",
                   **policy_kwargs: Any) -> DTPolicy:
    """A :class:`DTPolicy` from an export directory (target defaults to the first exported target return)."""
    model, meta = load_dt(path, device)
    if target_return is None:
        targets = meta.get("target_returns") or []
        if not targets:
            raise ValueError(f"no target_return given and the export {str(path)!r} stores none")
        target_return = float(targets[0])
    return DTPolicy(model, target_return, meta.get("return_scale", 1000.0), meta.get("state_mean"),
                    meta.get("state_std"), **policy_kwargs)
