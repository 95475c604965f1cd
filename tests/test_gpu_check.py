"""The GPU check is ready for a machine with a GPU: on one without, it says so, checks its own plumbing, exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the check measures; this is its CPU self-check")
def test_without_cuda_it_says_so_and_checks_its_plumbing():
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--repeats", "1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "No CUDA device here" in out and "no GPU figure was measured" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    assert len(rows) == 4  # every step the CPU can run, each a row of the table
    assert not any("| FAIL |" in row for row in rows), out
    assert "1 face restored, pixels outside it exact: True" in out
