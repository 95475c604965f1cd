"""A short, bounded load test of the API route on 127.0.0.1 (the long one is benchmarks/bench_load.py)."""

from __future__ import annotations

import sys

import pytest

from fake_webui import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_load


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads memory from /proc")
def test_many_clients_every_request_answered_and_no_leak(small_weights_file):
    small, big = bench_load.test_payloads(large=2)
    app = bench_load.make_app(small_weights_file)
    with bench_load.serve(app) as url:
        bench_load.run_load(url, 2, 5, small, [])  # warm-up: models, detector, allocator
        first = bench_load.run_load(url, 8, 15, small, big)
        middle = bench_load.resident_mib()
        second = bench_load.run_load(url, 8, 15, small, [])
        after = bench_load.resident_mib()
    assert first["statuses"] == {200: 122} and second["statuses"] == {200: 120}
    # Another 120 requests do not grow the process: nothing is kept per request.
    assert after - middle < 40, f"resident memory grew from {middle:.0f} to {after:.0f} MiB"
