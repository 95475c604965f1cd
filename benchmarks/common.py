"""What every benchmark shares: the line that says which machine ran it, and the median of repeated runs."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

import torch

from lib_codeformer.testing.machine import cpu_family


def machine_line() -> str:
    """The CPU (its vector family), threads and torch: printed above every table."""
    machine = f"{platform.processor() or platform.machine()} ({cpu_family()})"
    return f"CPU: {machine}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def median_time(run: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``repeats`` runs of ``run``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
