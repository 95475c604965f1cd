"""A worker node dies in the middle of a run: every image is still written once, whole, and counted once."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from cluster_helpers import ROOT, RUN_TIMEOUT, local_cluster, outputs

pytest.importorskip("ray")


def test_killing_a_worker_node_mid_run_loses_nothing_and_writes_each_image_once(
    archive, local_reference, small_weights_file, tmp_path
):
    local_out, _ = local_reference
    out = tmp_path / "out"
    command = [sys.executable, "-m", "lib_codeformer", "restore", str(archive), "-r", "--output", str(out)]
    command += ["--weights", str(small_weights_file), "--detector", "yunet", "--quiet"]
    with local_cluster() as cluster:
        driver = subprocess.Popen(
            [*command, "--ray", cluster.address], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            written_before = _wait_for_outputs(out, at_least=3, driver=driver)
            cluster.kill_worker_raylet()
            stdout, stderr = driver.communicate(timeout=RUN_TIMEOUT)
        finally:
            driver.kill()
            driver.wait()
    assert written_before < len(outputs(local_out))  # the node died with work left to do
    assert driver.returncode == 1, stderr  # the corrupt file only
    assert "28 images written, 4 faces restored, 0 skipped, 1 failed" in stdout  # each image counted once
    assert outputs(out) == outputs(local_out)  # all there, whole, the same bytes
    assert not [path for path in out.rglob("*") if path.name.endswith(".part")]


def _wait_for_outputs(folder, *, at_least: int, driver: subprocess.Popen) -> int:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and driver.poll() is None:
        written = [path for path in folder.rglob("*") if path.is_file() and not path.name.endswith(".part")]
        if len(written) >= at_least:
            return len(written)
        time.sleep(0.05)
    raise AssertionError(f"the run wrote fewer than {at_least} results before it ended or timed out: {driver.communicate()}")
