"""The cores' clock while all of them are busy, measured: what the "fraction of peak" figures divide by.

Why not /proc/cpuinfo: in a virtual machine it lists the nominal clock (2.45
GHz on the development machine's AMD EPYC), while the cores run at their
boost clock; oneDNN's stride-2 convolutions then reached 1.09 "of peak",
which cannot be. Here each core runs a chain of dependent integer additions
(one cycle each on every x86 core since the Pentium Pro), all cores at once
as in a pass of the network, and the clock is the additions per second of
the slowest. x86-64 with a C compiler only; elsewhere ``None`` (the callers
fall back to /proc/cpuinfo).
"""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_codeformer.acceleration.kernel_build import compiler_command

ADDS_PER_ITERATION = 16
SOURCE = (
    "#include <stdint.h>\n"
    "uint64_t dependent_adds(uint64_t iterations) {\n"
    "    uint64_t x = 0;\n"
    "    for (uint64_t i = 0; i < iterations; i++)\n"
    '        __asm__ volatile(".rept ' + str(ADDS_PER_ITERATION) + '\\n\\tadd $1, %0\\n\\t.endr" : "+r"(x));\n'
    "    return x;\n"
    "}\n"
)


def _load_probe(folder: Path) -> ctypes.CDLL | None:
    source, library = folder / "probe.c", folder / "probe.so"
    source.write_text(SOURCE)
    try:
        command = [*compiler_command(), "-O2", "-shared", "-fPIC", str(source), "-o", str(library)]
        subprocess.run(command, check=True, capture_output=True)
    except (OSError, RuntimeError, subprocess.CalledProcessError):
        return None
    probe = ctypes.CDLL(str(library))
    probe.dependent_adds.argtypes = [ctypes.c_uint64]
    probe.dependent_adds.restype = ctypes.c_uint64
    return probe


def measured_clock_ghz(threads: int, seconds: float = 0.3) -> float | None:
    """The slowest of ``threads`` cores' clock with all of them running the probe at once (ctypes frees the GIL)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        probe = _load_probe(Path(folder))
        if probe is None:
            return None
        iterations = 1 << 16
        while True:  # about ``seconds`` per run, from a calibration run
            started = time.perf_counter()
            probe.dependent_adds(iterations)
            if time.perf_counter() - started > seconds / 10:
                break
            iterations *= 2
        iterations *= 10
        rates: list[float] = []

        def measure() -> None:
            started = time.perf_counter()
            probe.dependent_adds(iterations)
            rates.append(iterations * ADDS_PER_ITERATION / (time.perf_counter() - started))

        workers = [threading.Thread(target=measure) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return min(rates) / 1e9


def listed_clock_ghz() -> float | None:
    """The highest clock /proc/cpuinfo lists (the boost clock where it is listed), in GHz; None without one."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    speeds = [float(line.split(":")[1]) for line in cpuinfo.read_text().splitlines() if line.startswith("cpu MHz")]
    return max(speeds) / 1000 if speeds else None


def report(measured: float | None, listed: float | None) -> str:
    """One line with both clocks, so that a reader (and the test) sees how far the listed one is off."""
    first = (
        "the clock cannot be measured here (x86-64 with a C compiler only)"
        if measured is None
        else f"measured {measured:.2f} GHz"
    )
    second = "no clock listed in /proc/cpuinfo" if listed is None else f"/proc/cpuinfo lists {listed:.2f} GHz"
    return f"{first}; {second}"


if __name__ == "__main__":
    import torch

    print(report(measured_clock_ghz(torch.get_num_threads()), listed_clock_ghz()))
