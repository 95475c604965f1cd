"""The benchmarks' clock probe measures a clock near the one the CPU lists, and a peak FMA rate a core can have."""

from __future__ import annotations

import platform
import re
import runpy
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the probe is x86-64 assembly")
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="the probe needs a C compiler")
def test_the_probe_measures_a_clock_near_the_listed_one():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "clock_probe.py")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    found = re.fullmatch(
        r"measured (\d+\.\d+) GHz; (?:/proc/cpuinfo lists (\d+\.\d+) GHz|no clock listed[^;]*); "
        r"peak \d+ G FMA/s measured with \d+ cores busy \((\d+\.\d) lanes per core and cycle\)\n",
        result.stdout,
    )
    assert found, result.stdout
    measured, listed, lanes = float(found.group(1)), found.group(2) and float(found.group(2)), float(found.group(3))
    if listed is None:
        assert 0.5 < measured < 8
    else:  # boost clocks run above the listed one, power saving below; not a factor of 2 either way
        assert listed / 2 < measured < listed * 2
    # From one 128-bit pipe (4 lanes) to two 512-bit ones (32), a little less where wide vectors clock lower.
    assert 3 < lanes < 34


@pytest.mark.parametrize("slowest", [False, True])
def test_a_run_that_loses_cycles_to_others_does_not_lower_the_rate(slowest: bool):
    """The first run goes at half speed (as when the hypervisor gives half the cores' time elsewhere); the
    rate is that of the runs after it: 10 M iterations a second per thread."""
    best_rate = runpy.run_path(str(ROOT / "benchmarks" / "clock_probe.py"))["best_rate"]  # a script, not a package
    started = time.perf_counter()  # after the script's loading, which must not use up the slow spell

    def iterations_in_sleep(iterations: int, _argument: object) -> None:
        seconds_per_iteration = 2e-7 if time.perf_counter() - started < 0.1 else 1e-7
        time.sleep(iterations * seconds_per_iteration)

    rate = best_rate(iterations_in_sleep, None, 2, 0.05, slowest=slowest)
    expected = 1e7 if slowest else 2e7
    assert 0.8 * expected < rate <= 1.01 * expected
