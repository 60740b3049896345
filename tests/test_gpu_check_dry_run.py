"""bench/gpu_check.sh --dry-run: the one-shot GPU check rehearsed on the CPU, with stand-ins for the GPU tools.

The quick test runs three stages (env, build, gpu_dt) and the summary; the slow one runs every stage. Both check
the exit status, the summary in $OUT and the limits on what $OUT holds (at most 8 files, no folders).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"
HELPERS = ["gpu_check_steps.py", "gpu_check_summary.py", "gpu_check_tiny.py"]
STAGES = ["env", "build", "tests", "sanitizer", "attention", "gpu_dt", "steps"]
ALLOWED_OUT = {"summary.md", "build.log", "tests.log", "sanitizer.log", "bench.log", "steps.log", "steps.json"}

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and coreutils timeout"
)


def dry_run(tmp_path: Path, timeout: float, only: str | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    env.update(OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    if only:
        env["GPU_CHECK_ONLY"] = only
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc, out


def stage_rows(summary: str) -> dict[str, str]:
    rows = {}
    for line in summary.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0] in STAGES:
            rows[cells[0]] = cells[1]
    return rows


def check_out(proc: subprocess.CompletedProcess, out: Path) -> str:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary
    assert "Overall: PASS" in summary
    assert summary.strip() in proc.stdout  # printed last, whole
    files = {p.name for p in out.iterdir()}
    assert files <= ALLOWED_OUT and len(files) <= 8, files
    assert all(p.is_file() for p in out.iterdir())
    return summary


def test_script_and_helpers_parse():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    for name in HELPERS:
        path = ROOT / "bench" / name
        compile(path.read_text(), str(path), "exec")  # SyntaxError on a slip
    help_text = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--dry-run" in help_text and "GPU_CHECK_SECONDS" in help_text
    bad = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2


def test_dry_run_quick(tmp_path):
    proc, out = dry_run(tmp_path, timeout=60, only="build,gpu_dt")
    summary = check_out(proc, out)
    rows = stage_rows(summary)
    assert rows["env"] == rows["build"] == rows["gpu_dt"] == "PASS", rows
    assert all(rows[s] == "SKIP" for s in ("tests", "sanitizer", "attention", "steps")), rows
    assert "needs a CUDA GPU" in (out / "bench.log").read_text()
    assert "would run PYSEQRL_CUDA=ON" in (out / "build.log").read_text()


@pytest.mark.slow
def test_dry_run_all_stages(tmp_path):
    proc, out = dry_run(tmp_path, timeout=400)
    summary = check_out(proc, out)
    rows = stage_rows(summary)
    assert rows == dict.fromkeys(STAGES, "PASS"), rows
    assert "memcheck 0 errors" in summary
    steps = (out / "steps.json").read_text()
    assert '"status": "ok"' in steps and '"model": "smollm2"' in steps
    assert "0 failed check(s)" in (out / "sanitizer.log").read_text()
