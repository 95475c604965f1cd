"""What the benchmarks say about the machine they ran on, next to every figure."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_family(flags: set[str] | None = None) -> str:
    """The CPU's vector family as the benchmarks report it: "AVX-512", "AVX2", else the machine's name (e.g. arm64).

    ``flags``: the CPU's feature flags; by default this CPU's, from ``/proc/cpuinfo`` (none elsewhere).
    """
    if flags is None:
        cpuinfo = Path("/proc/cpuinfo")
        flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
