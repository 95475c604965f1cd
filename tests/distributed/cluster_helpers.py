"""Starting and stopping what the Ray tests run against: the cluster, moto's S3 server, the command line.

Every process started here is stopped here, by its process id, whatever the test's outcome.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
# Every CLI run on the cluster must finish within this (seconds); a hang fails the test instead of CI.
RUN_TIMEOUT = 150
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 300 * 2**20, "node_ip_address": "127.0.0.1"}
# A dead raylet is noticed after about 1.5 s instead of Ray's default 30 s.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_timeout_ms": 500}


@dataclass
class LocalCluster:
    address: str
    worker: object  # ray._private.node.Node

    def kill_worker_raylet(self) -> int:
        """SIGKILL the worker node's raylet (its actors die with it, as on a machine that goes away); its pid."""
        from ray._private import ray_constants

        pid = self.worker.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        os.kill(pid, signal.SIGKILL)
        return pid


@contextmanager
def local_cluster() -> Iterator[LocalCluster]:
    """Two nodes on 127.0.0.1, stopped (every process it started, by pid) when the block ends, however it ends."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    head_args = {**NODE_ARGS, "include_dashboard": False, "_system_config": FAST_FAILURE_DETECTION}
    cluster = Cluster(initialize_head=True, head_node_args=head_args)
    try:
        worker = cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes(timeout=60)
        yield LocalCluster(cluster.address, worker)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m lib_codeformer restore ...`` in its own process (the real command), bounded in time."""
    command = [sys.executable, "-m", "lib_codeformer", "restore", *args, "--detector", "yunet", "--quiet"]
    environment = {**os.environ, **(env or {})}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=environment, check=False)


def bounded(work: Callable[[], T], timeout: float = RUN_TIMEOUT) -> T:
    """``work()``'s result, or AssertionError once ``timeout`` seconds have passed (the cluster's teardown then
    ends whatever it was waiting for)."""
    results: list = []
    thread = threading.Thread(target=lambda: results.append(_outcome(work)), daemon=True)
    thread.start()
    thread.join(timeout)
    if not results:
        raise AssertionError(f"not finished within {timeout} s")
    value, error = results[0]
    if error is not None:
        raise error
    return value


def _outcome(work: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    try:
        return work(), None
    except BaseException as error:
        return None, error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (its own process, stopped by pid); its endpoint URL."""
    pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
