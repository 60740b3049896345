"""Helpers of bench/gpu_check.sh: the environment report and the one-screen summary.

    python bench/gpu_check_summary.py env                             # versions and device (imports torch)
    python bench/gpu_check_summary.py summary --work DIR --out DIR    # summary.md from the logs (no torch)

``summary`` reads ``DIR/env.txt`` and ``DIR/stages.tsv`` (name, status, seconds, note per line) written by
gpu_check.sh, and the logs in the output folder: tests.log, sanitizer.log, bench.log, steps.json. It writes
``summary.md`` there and prints it.
"""

from __future__ import annotations

import argparse
import ast
import json
import platform
import re
import statistics
import sys
from pathlib import Path


def env() -> int:
    print(f"python: {platform.python_version()} ({sys.executable})")
    try:
        import numpy

        print(f"numpy: {numpy.__version__}")
    except ImportError as e:
        print(f"numpy: missing ({e})")
    try:
        import torch
    except ImportError as e:
        print(f"torch: missing ({e})")
        return 0
    print(f"torch: {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print(
            f"device: {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
            f"{p.total_memory / 2**30:.0f} GiB ({torch.cuda.device_count()} visible)"
        )
    else:
        print("device: torch sees no CUDA device")
    try:
        import transformers

        print(f"transformers: {transformers.__version__}")
    except ImportError as e:
        print(f"transformers: missing ({e})")
    return 0


# ------------------------------------------------------------------------------------------------ summary


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tests_result(out: Path) -> str:
    lines = [ln.strip("= \n") for ln in read(out / "tests.log").splitlines()]
    hits = [ln for ln in lines if re.search(r"\d+ (passed|failed|skipped|error|errors|deselected)\b", ln)]
    failed = [ln.split(" - ")[0] for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    text = hits[-1] if hits else "no pytest result line"
    return text + (f"; first failure: {failed[0]}" if failed else "")


def sanitizer_result(out: Path) -> list[str]:
    res, tool = [], None
    for ln in read(out / "sanitizer.log").splitlines():
        m = re.match(r"### (\w+)", ln)
        if m:
            tool = m.group(1)
        m = re.search(r"ERROR SUMMARY: (\d+) error", ln)
        if m and tool:
            res.append(f"{tool} {m.group(1)} errors")
    return res


def attention_result(out: Path) -> list[str]:
    ratios: dict[str, list[float]] = {}
    for ln in read(out / "bench.log").splitlines():
        parts = ln.split()
        if len(parts) > 6 and parts[0] in ("float32", "bfloat16", "float16") and parts[-2].endswith("x"):
            try:
                ratios.setdefault(parts[0], []).append(float(parts[-2][:-1]))
            except ValueError:
                pass
    lines = []
    for dtype, r in ratios.items():
        lines.append(
            f"attention {dtype}: best SDPA / pyseqrl over {len(r)} shapes: min {min(r):.2f}x, "
            f"median {statistics.median(r):.2f}x, max {max(r):.2f}x (target >= 1.3x)"
        )
    return lines


def gpu_dt_result(out: Path) -> list[str]:
    lines = []
    for ln in read(out / "bench.log").splitlines():
        if ln.startswith("['"):
            try:
                name, ms, speedup = ast.literal_eval(ln)
            except (ValueError, SyntaxError):
                continue
            if "CUDA graph" in name or "baseline" in name:
                unit = " ms" if not ms.startswith("failed") else ""
                lines.append(f"tiny DT step, {name}: {ms}{unit} {speedup}".rstrip())
        elif "graphed steps (pyseqrl attention)" in ln:
            lines.append("tiny DT " + ln.strip())
    return lines


def steps_result(out: Path) -> list[str]:
    try:
        data = json.loads(read(out / "steps.json"))
    except json.JSONDecodeError:
        return []
    by: dict[tuple[str, str], list[str]] = {}
    problems = []
    for r in data.get("rows", []):
        if r.get("status") == "ok":
            key = (r["model"], r["precision"])
            by.setdefault(key, []).append(f"{r['attn']} {r['mode']} {r['ms_per_step']:.2f}")
        elif r.get("status") == "failed":
            problems.append(
                f"{r['model']} {r.get('attn', '')} {r.get('precision', '')} {r.get('mode', '')}: "
                f"{r.get('error', '')[:60]}"
            )
    meta = data.get("meta", {})
    head = f"DT steps (ms/step, B={meta.get('batch_size')}, K={meta.get('context_len')}, {meta.get('batching')})"
    lines = [head] + [f"  {m} {p}: " + ", ".join(v) for (m, p), v in by.items()]
    if problems:
        lines.append(f"  {len(problems)} failed: " + problems[0] + (" ..." if len(problems) > 1 else ""))
    return lines


def summary(work: Path, out: Path, dry_run: bool) -> int:
    stages = [ln.split("\t") for ln in read(work / "stages.tsv").splitlines() if ln.count("\t") >= 3]
    title = "# pyseqrl GPU check" + (" (DRY RUN on the CPU: stand-ins for the GPU tools)" if dry_run else "")
    md = [
        title,
        "",
        "```",
        read(work / "env.txt").strip(),
        "```",
        "",
        "| stage | status | seconds | note |",
        "|---|---|---|---|",
    ]
    md += [f"| {s[0]} | {s[1]} | {s[2]} | {s[3]} |" for s in stages]
    key = [f"tests: {tests_result(out)}"]
    san = sanitizer_result(out)
    if san:
        key.append("sanitizer: " + ", ".join(san))
    key += attention_result(out) + gpu_dt_result(out) + steps_result(out)
    md += ["", "Key numbers:", "", *[f"- {k}" if not k.startswith("  ") else f"  - {k.strip()}" for k in key]]
    bad = [s[0] for s in stages if s[1] not in ("PASS", "SKIP", "WARN")]
    md += ["", f"Overall: {'FAIL (' + ', '.join(bad) + ')' if bad else 'PASS'}; logs in {out}"]
    text = "\n".join(md) + "\n"
    (out / "summary.md").write_text(text)
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env")
    s = sub.add_parser("summary")
    s.add_argument("--work", type=Path, required=True, help="gpu_check.sh's work folder (env.txt, stages.tsv)")
    s.add_argument("--out", type=Path, required=True, help="the output folder (logs; summary.md goes here)")
    s.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "env":
        return env()
    return summary(args.work, args.out, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
