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

The peak itself is measured too (``measured_fma_per_second``): independent
float32 fused multiply-adds at the widest vectors the compiler targets for
this CPU (as the kernel's -march=native build), every core at once. Cores
differ in how many FMA pipes they have, and a clock times a guessed lane
count was off by 2x on a Xeon with two 512-bit pipes (32 lanes per cycle
where 16 had been assumed); wide vectors may also run at a lower clock than
the integer chains see.
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


# ACCUMULATORS independent vectors, each updated by one FMA per iteration: more than the pipes' latency x count
# (4 cycles x 2 pipes on current cores) keeps every pipe busy, and 10 + 2 constants fit AVX2's 16 registers.
ACCUMULATORS = 10
_NAMES = [f"a{k}" for k in range(ACCUMULATORS)]  # separate variables, so that the compiler keeps them in registers
FMA_SOURCE = (
    "#include <stdint.h>\n"
    "#if defined(__AVX512F__)\n#define VEC 16\n#elif defined(__AVX__)\n#define VEC 8\n#else\n#define VEC 4\n#endif\n"
    "typedef float vec __attribute__((vector_size(VEC * sizeof(float))));\n"
    "int fma_lanes(void) { return VEC; }\n"
    "float independent_fmas(uint64_t iterations, float factor) {\n"
    "    const vec b = (vec){0} + factor, c = (vec){0} + 1e-7f;\n"
    + "".join(f"    vec {name} = (vec){{0}} + {k}.0f;\n" for k, name in enumerate(_NAMES))
    + "    for (uint64_t i = 0; i < iterations; i++) {\n"
    + "".join(f"        {name} = {name} * b + c;\n" for name in _NAMES)
    + "    }\n"
    + f"    const vec sum = {' + '.join(_NAMES)};\n"
    + "    float total = 0;\n"
    "    for (int lane = 0; lane < VEC; lane++) total += sum[lane];\n"
    "    return total;\n"
    "}\n"
)
# The kernel's own flags, -march=native first; contraction makes each ``a * b + c`` one FMA instruction.
FMA_FLAG_SETS = (["-O2", "-march=native", "-ffp-contract=fast"], ["-O2", "-ffp-contract=fast"])


def _compile(folder: Path, source_text: str, flag_sets: tuple[list[str], ...]) -> ctypes.CDLL | None:
    """``source_text`` built into a loaded library with the first flags the compiler accepts; None without one."""
    source, library = folder / "probe.c", folder / "probe.so"
    source.write_text(source_text)
    for flags in flag_sets:
        try:
            command = [*compiler_command(), *flags, "-shared", "-fPIC", str(source), "-o", str(library)]
            subprocess.run(command, check=True, capture_output=True)
        except (OSError, RuntimeError, subprocess.CalledProcessError):
            continue
        return ctypes.CDLL(str(library))
    return None


def _load_probe(folder: Path) -> ctypes.CDLL | None:
    probe = _compile(folder, SOURCE, (["-O2"],))
    for name in CHAINS if probe else ():
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
        return min(
            best_rate(getattr(probe, name), 3, threads, seconds, slowest=True) * INSTRUCTIONS_PER_ITERATION * cycles / 1e9
            for name, (_, cycles) in CHAINS.items()
        )


def measured_fma_per_second(threads: int, seconds: float = 0.3) -> float | None:
    """float32 FMA lanes per second of ``threads`` cores together, all running the FMA probe at once; None
    where it cannot be built (no C compiler)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = _compile(Path(folder), FMA_SOURCE, FMA_FLAG_SETS)
        if probe is None:
            return None
        probe.independent_fmas.argtypes = [ctypes.c_uint64, ctypes.c_float]
        probe.independent_fmas.restype = ctypes.c_float
        lanes = probe.fma_lanes()
        # A factor just below 1 keeps the values finite however long it runs.
        return best_rate(probe.independent_fmas, 0.999999, threads, seconds) * ACCUMULATORS * lanes


TRIALS = 5


def best_rate(
    function: Callable[[int, object], object],
    argument: object,
    threads: int,
    seconds: float,
    *,
    slowest: bool = False,
    trials: int = TRIALS,
) -> float:
    """The best of ``trials`` runs of ``function`` on ``threads`` threads at once: the threads' summed rate, or
    with ``slowest`` the slowest thread's. Another process or the hypervisor can only take cycles from a run,
    never add any, so the best run is the machine's: one run on the development VM read 54 G FMA/s where the
    runs before and after read 102 G (half the cores' time had gone elsewhere)."""
    combine = min if slowest else sum
    return max(combine(_rates_all_busy(function, argument, threads, seconds)) for _ in range(trials))


def _rates_all_busy(function: Callable[[int, object], object], argument: object, threads: int, seconds: float) -> list[float]:
    """Iterations per second of ``function(iterations, argument)`` on each of ``threads`` threads run at once,
    each for about ``seconds`` (ctypes frees the GIL)."""
    iterations = 1 << 16
    while True:  # from a calibration run
        started = time.perf_counter()
        function(iterations, argument)
        if time.perf_counter() - started > seconds / 10:
            break
        iterations *= 2
    iterations *= 10
    rates: list[float] = []

    def measure() -> None:
        started = time.perf_counter()
        function(iterations, argument)
        rates.append(iterations / (time.perf_counter() - started))

    workers = [threading.Thread(target=measure) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return rates


def listed_clock_ghz() -> float | None:
    """The highest clock /proc/cpuinfo lists (the boost clock where it is listed), in GHz; None without one."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    speeds = [float(line.split(":")[1]) for line in cpuinfo.read_text().splitlines() if line.startswith("cpu MHz")]
    return max(speeds) / 1000 if speeds else None


def report(measured: float | None, listed: float | None, fma_per_second: float | None = None, threads: int = 1) -> str:
    """One line with both clocks and the measured peak, so that a reader (and the test) sees how far the listed
    clock is off and how many FMA lanes a core completes per cycle of the measured clock."""
    first = (
        "the clock cannot be measured here (x86-64 with a C compiler only)"
        if measured is None
        else f"measured {measured:.2f} GHz"
    )
    second = "no clock listed in /proc/cpuinfo" if listed is None else f"/proc/cpuinfo lists {listed:.2f} GHz"
    if fma_per_second is None:
        return f"{first}; {second}; the peak cannot be measured here (no C compiler)"
    peak = f"peak {fma_per_second / 1e9:.0f} G FMA/s measured with {threads} cores busy"
    clock = measured or listed
    if clock:
        peak += f" ({fma_per_second / (clock * 1e9 * threads):.1f} lanes per core and cycle)"
    return f"{first}; {second}; {peak}"


if __name__ == "__main__":
    import torch

    cores = torch.get_num_threads()
    print(report(measured_clock_ghz(cores), listed_clock_ghz(), measured_fma_per_second(cores), cores))
