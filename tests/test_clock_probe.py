"""The benchmarks' clock probe measures a clock near the one the CPU lists, with every core busy."""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
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
    found = re.fullmatch(r"measured (\d+\.\d+) GHz; (?:/proc/cpuinfo lists (\d+\.\d+) GHz|no clock listed.*)\n", result.stdout)
    assert found, result.stdout
    measured, listed = float(found.group(1)), found.group(2) and float(found.group(2))
    if listed is None:
        assert 0.5 < measured < 8
    else:  # boost clocks run above the listed one, power saving below; not a factor of 2 either way
        assert listed / 2 < measured < listed * 2
