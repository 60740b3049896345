"""``pyseqrl data``: inspect, convert and subset offline datasets.

pyseqrl data info PATH                          sizes, returns, normalised scores
pyseqrl data convert IN OUT [--env-id ID]       any supported format -> pyseqrl HDF5
pyseqrl data subset IN OUT --mode top|episodes|steps --fraction F [--seed S]
"""

from __future__ import annotations

import argparse
import json

from pyseqrl.data.loaders import load
from pyseqrl.utils import checks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyseqrl data", description="Inspect, convert and subset offline datasets.")
    sub = p.add_subparsers(dest="cmd", required=True)
    info = sub.add_parser("info", help="print sizes and return statistics")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    conv = sub.add_parser("convert", help="write any supported dataset as a pyseqrl HDF5 file")
    conv.add_argument("src")
    conv.add_argument("dst")
    conv.add_argument("--env-id", help="set metadata env_id (used for D4RL-normalised scores)")
    subset = sub.add_parser("subset", help="keep part of a dataset (DT's pct_traj, LaMo's data ratios)")
    subset.add_argument("src")
    subset.add_argument("dst")
    subset.add_argument(
        "--mode",
        choices=["top", "episodes", "steps"],
        default="steps",
        help="top: best episodes by return; episodes/steps: a random fraction of episodes/steps",
    )
    subset.add_argument("--fraction", type=float, required=True, help="fraction in (0, 1]")
    subset.add_argument("--seed", type=int, default=0, help="seed of the random subsets")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "info":
        ds = load(args.path)
        summary = {"path": args.path, **ds.summary(), "metadata": ds.metadata}
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            for k, v in summary.items():
                if k != "metadata":
                    print(f"{k:>22}: {v:.4g}" if isinstance(v, float) else f"{k:>22}: {v}")
            print(f"{'metadata':>22}: {json.dumps(ds.metadata, default=str)[:200]}")
        return 0
    checks.output_file("dst", args.dst)  # before reading the source
    ds = load(args.src)
    if args.cmd == "convert":
        if args.env_id:
            ds.metadata["env_id"] = args.env_id
    else:
        ds = (
            ds.top_episodes(args.fraction)
            if args.mode == "top"
            else (
                ds.subset_episodes(args.fraction, args.seed)
                if args.mode == "episodes"
                else ds.subset_steps(args.fraction, args.seed)
            )
        )
    ds.save(args.dst)
    print(f"wrote {args.dst}: {ds.num_episodes} episodes, {len(ds)} steps")
    return 0
