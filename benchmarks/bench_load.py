"""Load on the API route, on 127.0.0.1: throughput, errors and memory, bounded and self-ending.

A uvicorn server runs the extension's routes (with a synthetic-weights
runtime) in this process; N client threads send small images (no faces:
detection only) and a few large ones (2048 x 2048). Reports requests/s, status counts,
the process's peak memory and its resident memory before and after.

    python benchmarks/bench_load.py [--clients 8] [--requests 100] [--large 4]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib_codeformer.frontends.http_api import encode_png  # noqa: E402


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_payloads(large: int) -> tuple[list[dict], list[dict]]:
    generator = np.random.default_rng(0)
    small = [
        {"image": encode_png(generator.integers(0, 256, (96, 128, 3), dtype=np.uint8)), "detector": "yunet"} for _ in range(8)
    ]
    big = [{"image": encode_png(np.full((2048, 2048, 3), 90 + i, np.uint8)), "detector": "yunet"} for i in range(large)]
    return small, big


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def run_load(url: str, clients: int, requests_per_client: int, small: list[dict], big: list[dict]) -> dict:
    """Every client sends its share, then the large images are spread over the clients. Ends by itself."""
    import httpx

    statuses: Counter = Counter()
    lock = threading.Lock()

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as session:
            bodies = [small[(index + i) % len(small)] for i in range(requests_per_client)]
            bodies += big[index::clients]
            for body in bodies:
                try:
                    status = session.post("/codeformer/v1/restore", json=body).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    statuses[status] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    return {"requests": total, "seconds": elapsed, "per_second": total / elapsed, "statuses": dict(statuses)}


def make_app(weights_path: Path):
    """The extension's routes over a runtime with the given weights and the built-in detector."""
    from fastapi import FastAPI

    from lib_codeformer.frontends import http_api as api
    from lib_codeformer.frontends.webui import runtime as codeformer_webui

    settings = {"detector": "yunet", "weights_path": str(weights_path)}
    runtime = codeformer_webui.ExtensionRuntime(codeformer_webui.HostServices(settings=lambda: settings, device=lambda: "cpu"))
    app = FastAPI()
    api.add_routes(app, runtime.restore, lock=threading.Lock())
    return app


def write_weights(folder: Path) -> Path:
    from safetensors.torch import save_file

    from lib_codeformer.network.synthetic import synthetic_state_dict

    path = folder / "synthetic.safetensors"
    save_file(dict(synthetic_state_dict(1234)), str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="small requests per client")
    parser.add_argument("--large", type=int, default=4, help="2048 x 2048 images in all")
    args = parser.parse_args()
    small, big = test_payloads(args.large)
    import tempfile

    folder = tempfile.TemporaryDirectory()
    app = make_app(write_weights(Path(folder.name)))
    with serve(app) as url:
        run_load(url, 2, 5, small, [])  # warm-up
        before = resident_mib()
        Path("/proc/self/clear_refs").write_text("5")
        results = []
        resident = [before]
        for _ in range(2):  # the same load twice: a leak would show as growth between the passes
            results.append(run_load(url, args.clients, args.requests, small, big))
            resident.append(resident_mib())
        peak = peak_mib()
    for number, result in enumerate(results, 1):
        print(
            f"pass {number}: {result['requests']} requests from {args.clients} clients in {result['seconds']:.1f} s: "
            f"{result['per_second']:.1f} requests/s; statuses {result['statuses']}"
        )
    print(
        f"resident memory: {resident[0]:.0f} MiB before, {resident[1]:.0f} after pass 1, "
        f"{resident[2]:.0f} after pass 2; peak {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
