"""Export a trained Decision Transformer to a self-contained directory and load it back as a model or policy.

Layout of an export directory::

    dt_config.json       DTConfig fields, the backbone's transformers config (any family) and evaluation metadata
                         (state_mean, state_std, return_scale, target_returns, env_id)
    model.safetensors    the full state dict (LoRA already merged; tied weights stored once)

Both files are written atomically: an interrupted export never leaves a half-written file under either name.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from pyseqrl.models.decision_transformer import DecisionTransformer, DTConfig
from pyseqrl.models.lora import has_lora
from pyseqrl.models.policy import DTPolicy
from pyseqrl.utils.checkpoint import atomic_write

FORMAT = 2
"""Export format: 2 = any transformers causal LM (``backbone_config``)."""


def export_dt(model: DecisionTransformer, out_dir: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (which must have no unmerged LoRA adapters) and ``meta`` to ``out_dir``."""
    from safetensors.torch import save

    if has_lora(model):
        raise ValueError("merge the LoRA adapters first (pyseqrl.models.merge_lora) before exporting")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"export: {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in (meta or {}).items()}
    cfg = model.lm.config.to_dict()
    cfg.pop("quantization_config", None)  # GGUF-loaded weights are stored dequantised
    doc = {"format": FORMAT, "dt_config": asdict(model.cfg), "backbone_config": cfg, "meta": meta}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not _tied(model, k)}
    blob = save(state)
    atomic_write(out / "model.safetensors", lambda f: f.write(blob))
    atomic_write(out / "dt_config.json", lambda f: f.write(json.dumps(doc, indent=2)), mode="w")
    return out


def load_dt(path: str | os.PathLike, device: str = "cpu") -> tuple[DecisionTransformer, dict[str, Any]]:
    """Load an export directory: returns the model (eval mode) and its metadata dict."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    p = Path(path)
    if not (p / "dt_config.json").is_file() or not (p / "model.safetensors").is_file():
        raise FileNotFoundError(f"{str(p)!r} is not a pyseqrl DT export: expected dt_config.json + model.safetensors")
    try:
        doc = json.loads((p / "dt_config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(p / 'dt_config.json')!r} is not valid JSON ({e})") from e
    if doc.get("format") != FORMAT:
        raise ValueError(
            f"{str(p)!r} was exported in format {doc.get('format', 1)}, this pyseqrl reads format "
            f"{FORMAT}: export it again (pyseqrl train ... --resume re-exports from its checkpoint)"
        )
    known = {f.name for f in fields(DTConfig)}
    dt_cfg = DTConfig(**{k: v for k, v in doc["dt_config"].items() if k in known})
    bcfg = dict(doc["backbone_config"])
    bcfg_obj = AutoConfig.for_model(bcfg.pop("model_type"), **bcfg)
    model = DecisionTransformer(dt_cfg, backbone_config=bcfg_obj)
    missing, unexpected = model.load_state_dict(load_file(str(p / "model.safetensors")), strict=False)
    if unexpected or [k for k in missing if not _tied(model, k)]:
        raise ValueError(
            f"{str(p)!r}: weights do not match the exported architecture (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), doc["meta"]


def _tied(model: DecisionTransformer, key: str) -> bool:
    """True for a parameter stored once under another name (a tied LM head)."""
    out = model.lm.get_output_embeddings()
    return out is not None and key.endswith("lm_head.weight") and out.weight is model.lm.get_input_embeddings().weight


def load_dt_policy(
    path: str | os.PathLike, target_return: float | None = None, device: str = "cpu", **policy_kwargs: Any
) -> DTPolicy:
    """A :class:`DTPolicy` from an export directory (target defaults to the first exported target return)."""
    model, meta = load_dt(path, device)
    if target_return is None:
        targets = meta.get("target_returns") or []
        if not targets:
            raise ValueError(f"no target_return given and the export {str(path)!r} stores none")
        target_return = float(targets[0])
    return DTPolicy(
        model,
        target_return,
        meta.get("return_scale", 1000.0),
        meta.get("state_mean"),
        meta.get("state_std"),
        **policy_kwargs,
    )


def load_policy(argument: str, env: Any = None, target_return: float | None = None, **kwargs: Any) -> DTPolicy:
    """The ``dt:<dir>`` policy scheme of :func:`pyseqrl.policies.load_policy`: a :class:`DTPolicy` from an export
    directory or from a run directory (its ``export/``). ``target_return`` defaults to the exported target."""
    path = Path(os.path.expanduser(argument))
    if (path / "export" / "dt_config.json").is_file():
        path = path / "export"
    kwargs.pop("seed", None)
    return load_dt_policy(path, target_return=target_return, **kwargs)
