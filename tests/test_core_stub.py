"""The hand-written stub pyseqrl/_core.pyi and the compiled module agree on every public name."""

from __future__ import annotations

import ast
from pathlib import Path

import pyseqrl
from pyseqrl._native import core

STUB = Path(pyseqrl.__file__).with_name("_core.pyi")


def stub_names() -> dict[str, set[str]]:
    """{"": module-level names, "Class": member names, "sub.": names in a submodule class-like block}."""
    tree = ast.parse(STUB.read_text())
    out: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[""].add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[""].add(node.target.id)
        if isinstance(node, ast.ClassDef):
            members = set()
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    members.add(item.name)
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(item.target.id)
            out[node.name] = members
    return out


def public(names):
    return {n for n in names if not n.startswith("_") or n in ("__init__", "__len__")}


def test_stub_matches_module():
    names = stub_names()
    module_names = {n for n in dir(core) if not n.startswith("_")}
    if not core.with_cuda:
        names[""].discard("cuda")
    assert public(names[""]) == module_names
    for cls in ("SegmentSampler", "ReplayBuffer"):
        obj = getattr(core, cls)
        actual = {n for n in vars(obj) if not n.startswith("_") or n in ("__init__", "__len__")}
        assert public(names[cls]) == actual, cls


def test_missing_compiled_core_says_how_to_rebuild(monkeypatch):
    import importlib
    import sys

    import pytest

    import pyseqrl._native as native

    monkeypatch.setitem(sys.modules, "pyseqrl._core", None)  # what a missing or stale build looks like
    monkeypatch.delattr(pyseqrl, "_core")
    with pytest.raises(ImportError, match=r"could not be imported.*\n.*Build and install it.*\n.*pip install \.") as e:
        importlib.reload(native)
    # the editable install's package directory is the source tree: the message says so
    source_tree = (Path(native.__file__).resolve().parents[2] / "pyproject.toml").is_file()
    assert ("this is the source tree" in str(e.value)) == source_tree
    monkeypatch.undo()
    importlib.reload(native)


def test_one_version_number():
    import tomllib

    from pyseqrl import _core

    declared = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert pyseqrl.__version__ == _core.__version__ == declared
