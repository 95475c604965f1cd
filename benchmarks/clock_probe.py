"""The cores' clock while all of them are busy, measured: what the "fraction of peak" figures divide by.

Why not /proc/cpuinfo: in a virtual machine it lists the nominal clock (2.45
GHz on the development machine's AMD EPYC), while the cores run at their
boost clock; oneDNN's stride-2 convolutions then reached 1.09 "of peak",
which cannot be. Here each core runs chains of dependent instructions whose
latency is known, all cores at once as in a pass of the network, and the
clock is the slowest core's cycles per second. Two chains, and the lower
clock of the two is kept: register-to-register additions (1 cycle each) and
multiplications (3 cycles each, on every x86-64 core of the last 20 years).
An immediate operand would not do: Intel's cores since Golden Cove (Sapphire
Rapids and later Xeons) fold chains of ``add $1`` in the register renamer,
and such a chain read 21.7 GHz on a 4.2 GHz Xeon. A core that shortens one
kind of chain makes it look faster, never slower, so the lower figure of two
unrelated kinds is the clock. x86-64 with a C compiler only; elsewhere
``None`` (the callers fall back to /proc/cpuinfo).
"""

from __future__ import annotations

import ctypes
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_codeformer.acceleration.kernel_build import compiler_command

INSTRUCTIONS_PER_ITERATION = 16
# Each chain: its function's name in the C source, its instruction and the cycles one of them takes.
CHAINS = {"dependent_adds": ("add", 1), "dependent_multiplications": ("imul", 3)}
SOURCE = "#include <stdint.h>\n" + "".join(
    f"uint64_t {name}(uint64_t iterations, uint64_t operand) {{\n"
    "    uint64_t x = 1;\n"
    "    for (uint64_t i = 0; i < iterations; i++)\n"
    f'        __asm__ volatile(".rept {INSTRUCTIONS_PER_ITERATION}\\n\\t{instruction} %1, %0\\n\\t.endr"'
    ' : "+r"(x) : "r"(operand));\n'
    "    return x;\n"
    "}\n"
    for name, (instruction, _) in CHAINS.items()
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
    for name in CHAINS:
        getattr(probe, name).argtypes = [ctypes.c_uint64, ctypes.c_uint64]
        getattr(probe, name).restype = ctypes.c_uint64
    return probe


def measured_clock_ghz(threads: int, seconds: float = 0.3) -> float | None:
    """The slowest of ``threads`` cores' clock with all of them running each chain at once (ctypes frees the
    GIL), the lower of the two chains' figures; ``seconds``: about how long each chain runs."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    with tempfile.TemporaryDirectory() as folder:
        probe = _load_probe(Path(folder))
        if probe is None:
            return None
        return min(_chain_clock_ghz(getattr(probe, name), cycles, threads, seconds) for name, (_, cycles) in CHAINS.items())


def _chain_clock_ghz(chain: Callable[[int, int], int], cycles: int, threads: int, seconds: float) -> float:
    iterations = 1 << 16
    while True:  # about ``seconds`` per run, from a calibration run
        started = time.perf_counter()
        chain(iterations, 3)
        if time.perf_counter() - started > seconds / 10:
            break
        iterations *= 2
    iterations *= 10
    rates: list[float] = []

    def measure() -> None:
        started = time.perf_counter()
        chain(iterations, 3)
        rates.append(iterations * INSTRUCTIONS_PER_ITERATION * cycles / (time.perf_counter() - started))

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
