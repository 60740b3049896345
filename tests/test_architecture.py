"""The package's layers import downward only (docs/ARCHITECTURE.md), including function-local imports; the lazy
``"module:function"`` loaders of the policy registry may name a model module (``dt:`` policies are models) but
never a trainer or anything above."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyseqrl

PKG = Path(pyseqrl.__file__).resolve().parent

# lower numbers sit lower; a module may import its own layer and the layers below it
LAYERS = {
    "_core": 0,
    "_native": 0,
    "utils": 0,
    "scores": 1,
    "data": 1,
    "envs": 2,
    "policies": 2,
    "rollout": 3,
    "evaluation": 3,
    "models": 3,
    "lm": 3,
    "ops": 3,
    "algos": 4,
    "collect": 5,
    "experiments": 5,
    "quickstart": 5,
    "reproduce": 5,
    "sweep": 5,
    "cli": 6,
}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "pyseqrl":
        return None
    if len(parts) == 1:
        return -1  # the package itself re-exports the core only
    if parts[-1] == "cli":  # every command-line module is a top-layer entry point
        return LAYERS["cli"]
    return LAYERS.get(parts[1])


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, named by a string) for every import of pyseqrl code, wherever it appears."""
    text = path.read_text()
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno, False))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno, False) for a in node.names]
    for m in re.finditer(r'"(pyseqrl(?:\.\w+)+):\w+"', text):  # lazy loaders named by string
        found.append((m.group(1), text[: m.start()].count("\n") + 1, True))
    return [f for f in found if f[0].startswith("pyseqrl")]


def test_every_module_has_a_layer():
    unknown = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        module = ".".join(("pyseqrl", *rel.parts)).removesuffix(".__init__")
        if module != "pyseqrl" and layer(module) is None:
            unknown.append(module)
    assert not unknown, f"modules without a layer in LAYERS: {unknown}"


def test_imports_only_go_down():
    upward = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).with_suffix("")
        module = ".".join(("pyseqrl", *rel.parts)).removesuffix(".__init__")
        if module == "pyseqrl":
            continue
        mine = layer(module)
        for target, line, by_name in imports_of(path):
            theirs = layer(target)
            if theirs is None or mine is None or theirs <= mine:
                continue
            if not by_name or theirs >= LAYERS["algos"]:
                upward.append(f"{module}:{line} imports {target} (layer {mine} -> {theirs})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_help_imports_no_language_model_library():
    """``--help`` of every command answers without importing transformers (or any environment library)."""
    import subprocess
    import sys

    from pyseqrl.cli import COMMANDS

    script = (
        "import sys\n"
        "from pyseqrl.cli import main\n"
        "for command in sys.argv[1:]:\n"
        "    try:\n"
        "        main([*command.split(), '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('transformers', 'envpool', 'gymnasium', 'd3rlpy') if m in sys.modules)\n"
        "sys.exit(f'--help imported {heavy}' if heavy else 0)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script, *COMMANDS], capture_output=True, text=True, timeout=300, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
