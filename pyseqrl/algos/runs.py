"""What ``pyseqrl train sac|calql|wsrl`` share as runs: the run options, opening a run directory, the CLI parser.

Every run writes ``<run_dir>/config.json``, ``metrics.csv`` (and TensorBoard events) and ``checkpoint.pt``; with
``--resume`` it continues from that checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class RunOptions:
    """Where a run writes and how often it logs, evaluates and checkpoints (each algorithm's config derives from
    this and sets its own ``run_dir`` and ``eval_every`` defaults)."""

    run_dir: str = "runs/run"
    """where metrics, config and checkpoint.pt go"""
    resume: bool = False
    """continue from <run_dir>/checkpoint.pt if it exists"""
    log_every: int = 1000
    """log training metrics every this many steps"""
    eval_every: int = 10_000
    """evaluate the deterministic policy every this many steps (0: never)"""
    eval_episodes: int = 10
    """episodes per evaluation"""
    checkpoint_every: int = 50_000
    """checkpoint every this many steps (also at the end); online runs cut their running episodes there"""
    tensorboard: bool = True
    """also write TensorBoard event files"""
    progress: bool = True
    """show a progress bar"""
    threads: int = 0
    """torch CPU threads (0: leave torch's default)"""

    def open_run(self) -> tuple[Path, Path, dict[str, Any] | None]:
        """Apply ``threads``, create ``run_dir`` and write its config.json.

        Returns:
            the run directory, its checkpoint path, and the checkpoint to resume from (None unless ``resume`` is
            set and a checkpoint exists).
        """
        import torch

        from pyseqrl.utils.checkpoint import load_torch

        if self.threads:
            torch.set_num_threads(self.threads)
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = run_dir / "checkpoint.pt"
        state = load_torch(ckpt_path) if self.resume and ckpt_path.exists() else None
        (run_dir / "config.json").write_text(json.dumps(asdict(self), indent=2))
        return run_dir, ckpt_path, state


def parse_config(cls: type, argv: list[str] | None, description: str) -> Any:
    """tyro over the dataclass ``cls`` with an optional YAML preset: ``--config configs/wsrl/x.yaml``.

    Precedence: dataclass defaults < YAML (nested keys for nested configs, e.g. ``agent: {num_critics: 2}``) <
    explicit flags.
    """
    import argparse
    import dataclasses

    import tyro
    import yaml

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(list(argv) if argv is not None else None)
    default = None
    if known.config is not None:
        data = yaml.safe_load(Path(known.config).read_text()) or {}

        def build(klass: type, values: dict[str, Any]) -> Any:
            fields = {f.name: f for f in dataclasses.fields(klass)}
            unknown = sorted(set(values) - set(fields))
            if unknown:
                raise ValueError(
                    f"{known.config}: unknown {klass.__name__} keys {unknown}; known: {sorted(fields)}"
                )
            kwargs = {}
            for k, v in values.items():
                sub = getattr(klass(), k) if dataclasses.is_dataclass(getattr(klass(), k)) else None
                if sub is not None and isinstance(v, dict):
                    v = build(type(sub), v)
                elif isinstance(v, list):
                    v = tuple(v) if isinstance(getattr(klass(), k), tuple) else v
                kwargs[k] = v
            return klass(**kwargs)

        default = build(cls, data)
    return tyro.cli(cls, args=rest, default=default, description=description)
