"""Atomic checkpoint writing: an interrupted save keeps the previous file, bad files fail clearly."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

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


def test_orphans_of_killed_saves_are_removed_by_the_next_save(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a process that has ended, as one killed during a save
    target = tmp_path / "checkpoint.pt"
    dead = tmp_path / f".checkpoint.pt.{proc.pid}.0123456789ab.tmp"
    alive = tmp_path / f".checkpoint.pt.{os.getppid()}.0123456789ab.tmp"  # a save still running elsewhere
    other = tmp_path / f".metrics.csv.{proc.pid}.0123456789ab.tmp"  # another file's
    for p in (dead, alive, other):
        p.write_bytes(b"half")
    atomic_write(target, lambda f: f.write(b"whole"))
    assert target.read_bytes() == b"whole"
    assert not dead.exists() and alive.exists() and other.exists()
    with pytest.raises(IsADirectoryError, match="is a directory, expected a file path"):
        atomic_write(tmp_path, lambda f: f.write(b"x"))


def test_keep_previous_keeps_the_checkpoint_each_save_replaces(tmp_path):
    from pyseqrl.utils.checkpoint import previous_path

    path = tmp_path / "checkpoint.pt"
    save_torch({"step": 1}, path, keep_previous=True)
    assert not previous_path(path).exists()  # nothing replaced yet
    for step in (2, 3):
        save_torch({"step": step}, path, keep_previous=True)
        assert load_torch(path) == {"step": step} and load_torch(previous_path(path)) == {"step": step - 1}
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "checkpoint.pt.prev"]  # no temporary file left
    path.write_bytes(path.read_bytes()[:20])  # the newest damaged after it was written
    with pytest.raises(ValueError, match=r"corrupt.*checkpoint\.pt\.prev.*rename it"):
        load_torch(path)
    assert load_torch(previous_path(path)) == {"step": 2}  # the fallback is intact
    save_torch({"step": 4}, tmp_path / "plain.pt")  # without keep_previous: no second file
    save_torch({"step": 5}, tmp_path / "plain.pt")
    assert not previous_path(tmp_path / "plain.pt").exists()
