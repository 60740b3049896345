"""Timing helpers shared by the benchmarks: warm-up, repeats, medians, and a machine/version header."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable


def time_call(fn: Callable[[], object], repeat: int = 20, warmup: int = 3, number: int = 1) -> float:
    """Median seconds per call of fn over `repeat` timings of `number` calls each, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def time_interleaved(
    fns: list[Callable[[], object]], numbers: list[int], repeat: int = 20, warmup: int = 3
) -> list[float]:
    """Median seconds per call of each fn, timed in alternation: each round times ``numbers[i]`` calls of every fn
    in turn, so that a change of the machine's load during the run weighs on every fn alike and their ratios stay
    fair on a shared machine."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, number, out in zip(fns, numbers, times):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - t0) / number)
    return [statistics.median(t) for t in times]


def machine_header() -> str:
    import numpy as np

    lines = [
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{platform.processor() or '?'}",
        f"python {platform.python_version()}, numpy {np.__version__}",
    ]
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
        if model:
            lines[0] += f" ({model})"
    except OSError:
        pass
    try:
        import torch

        lines[1] += f", torch {torch.__version__} (threads {torch.get_num_threads()})"
    except ImportError:
        pass
    load = os.getloadavg()
    lines.append(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return "\n".join(lines)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table(headers: list[str], rows: list[list[object]]) -> str:
    from pyseqrl.experiments import markdown_table

    return markdown_table(headers, rows)
