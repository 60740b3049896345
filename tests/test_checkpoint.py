"""Atomic checkpoint writing: an interrupted save keeps the previous file, bad files fail clearly."""

from __future__ import annotations

import os
import stat

import pytest

from pyseqrl.utils.checkpoint import atomic_write, load_torch, save_torch


def test_interrupted_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_torch({"step": 1}, path)

    def crash(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert load_torch(path) == {"step": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind


def test_written_file_has_the_permissions_open_would_give(tmp_path):
    old = os.umask(0o027)
    try:
        with open(tmp_path / "plain", "w"):
            pass
        save_torch({"a": 1}, tmp_path / "new.pt")
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert stat.S_IMODE(os.stat(tmp_path / "new.pt").st_mode) == mode == 0o640
    os.chmod(tmp_path / "new.pt", 0o600)  # a replaced file keeps its own permissions
    save_torch({"a": 2}, tmp_path / "new.pt")
    assert stat.S_IMODE(os.stat(tmp_path / "new.pt").st_mode) == 0o600


def test_missing_and_corrupt_checkpoints_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_torch(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad.pt.*corrupt"):
        load_torch(tmp_path / "bad.pt")
