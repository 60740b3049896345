"""The ``pyseqrl`` command line: a thin dispatcher to each feature's ``main(argv)``.

Each subcommand lives next to the code it drives; this file only maps names to entry points, imported lazily so
``pyseqrl --help`` is instant and a missing optional dependency only affects the command that needs it. Bad
input (a missing file, an invalid argument) ends with a one-line error and exit code 1; set PYSEQRL_DEBUG=1 for
the traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# command -> (module, function, leading argv); "train X" is looked up as "train X".
COMMANDS: dict[str, tuple[str, str, list[str], str]] = {
    "quickstart": ("pyseqrl.quickstart", "main", [], "run the whole pipeline at small scale"),
    "data": ("pyseqrl.data.cli", "main", [], "inspect, convert and subset offline datasets"),
    "collect": ("pyseqrl.collect", "main", [], "roll a policy out with EnvPool and write a dataset"),
    "evaluate": ("pyseqrl.evaluation", "main", [], "evaluate a policy or checkpoint in parallel environments"),
    "pretrain-lm": ("pyseqrl.lm.pretrain", "main", [], "pretrain a GPT-2-architecture LM (ChibiT) on text"),
    "train dt": ("pyseqrl.algos.dt", "main", ["--recipe", "dt"], "Decision Transformer from random init"),
    "train wiki": ("pyseqrl.algos.dt", "main", ["--recipe", "wiki"], "Wiki-RL: LM-initialised DT"),
    "train lamo": ("pyseqrl.algos.dt", "main", ["--recipe", "lamo"], "LaMo: LoRA DT with LM co-training"),
    "train sac": ("pyseqrl.algos.sac", "main", [], "online SAC from scratch"),
    "train calql": ("pyseqrl.algos.calql", "main", [], "offline Cal-QL / CQL pretraining"),
    "train wsrl": ("pyseqrl.algos.wsrl", "main", [], "WSRL online fine-tuning from an offline checkpoint"),
    "reproduce": ("pyseqrl.reproduce", "main", [], "paper reproduction suites"),
}


def _usage() -> str:
    lines = ["usage: pyseqrl <command> [options]   (pyseqrl <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<14} {help_}" for name, (_, _, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from pyseqrl import __version__

        print(__version__)
        return 0
    key, rest = argv[0], argv[1:]
    if key == "train":
        if not rest or rest[0] in ("-h", "--help"):
            print("usage: pyseqrl train {dt,wiki,lamo,sac,calql,wsrl} [options]")
            return 0 if rest else 2
        key, rest = f"train {rest[0]}", rest[1:]
    if key not in COMMANDS:
        print(f"pyseqrl: unknown command {key!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, lead, _ = COMMANDS[key]
    entry = getattr(importlib.import_module(module), func)
    try:
        result = entry(lead + rest)
    except (FileNotFoundError, ValueError) as e:
        if os.environ.get("PYSEQRL_DEBUG"):
            raise
        print(f"pyseqrl {key}: error: {e}", file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
