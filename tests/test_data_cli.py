"""``pyseqrl data`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import random_dataset

from pyseqrl.cli import main
from pyseqrl.data import load


def test_info_convert_subset(tmp_path, capsys):
    ds = random_dataset([10, 20, 30, 40], metadata={"env_id": "Hopper-v4"})
    src = ds.save(tmp_path / "src.hdf5")
    assert main(["data", "info", str(src), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 4 and info["steps"] == 100 and "normalized_score_mean" in info
    assert main(["data", "convert", str(src), str(tmp_path / "c.hdf5"), "--env-id", "Walker2d-v4"]) == 0
    assert load(tmp_path / "c.hdf5").metadata["env_id"] == "Walker2d-v4"
    assert main(["data", "subset", str(src), str(tmp_path / "s.hdf5"), "--mode", "top", "--fraction", "0.4"]) == 0
    sub = load(tmp_path / "s.hdf5")
    assert len(sub) <= 40 and sub.episode_returns().max() == ds.episode_returns().max()


def test_console_script_help_and_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pyseqrl.cli", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "quickstart" in out.stdout and "train dt" in out.stdout
    out = subprocess.run([sys.executable, "-m", "pyseqrl.cli", "nosuch"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "unknown command 'nosuch'" in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "pyseqrl.cli", "data", "info", str(tmp_path / "missing.h5")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode != 0 and "does not exist" in out.stderr
