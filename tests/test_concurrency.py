"""Concurrent use of one runtime: API requests and an Extras batch at once, models loaded once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lib_codeformer import restorer as pipeline
from lib_codeformer.frontends.webui import runtime as codeformer_webui


@pytest.fixture
def runtime(small_weights_file, monkeypatch):
    loads = []
    real_load = pipeline.load_codeformer

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_codeformer", counting_load)
    services = codeformer_webui.HostServices(
        settings=lambda: {"weights": str(small_weights_file), "detector": "yunet"}, device=lambda: "cpu"
    )
    runtime = codeformer_webui.ExtensionRuntime(services)
    runtime.loads = loads
    return runtime


def test_requests_and_a_batch_at_once_equal_one_by_one(runtime, astronaut):
    flipped = np.ascontiguousarray(astronaut[:, ::-1])
    jobs = [("api", astronaut, {"fidelity": 0.2}), ("api", flipped, {"fidelity": 0.9}), ("extras", [astronaut, flipped], {})]
    results: dict[int, list[np.ndarray]] = {}
    barrier = threading.Barrier(len(jobs))

    def work(index, images, values):
        barrier.wait()
        batch = images if isinstance(images, list) else [images]
        results[index] = [runtime.restore(image, values).image for image in batch]

    threads = [threading.Thread(target=work, args=(i, images, values)) for i, (_, images, values) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(runtime.loads) == 1  # one model, loaded once, for everyone
    for index, (_, images, values) in enumerate(jobs):
        batch = images if isinstance(images, list) else [images]
        alone = [runtime.restore(image, values).image for image in batch]
        for concurrent, sequential in zip(results[index], alone, strict=True):
            np.testing.assert_array_equal(concurrent, sequential)
    assert not np.array_equal(results[0][0], results[2][0])  # different fidelity, different result
