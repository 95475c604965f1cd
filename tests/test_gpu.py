"""On an NVIDIA GPU (skipped elsewhere; ``benchmarks/gpu_check.py`` runs them where a GPU is lent): the CUDA path
restores as the CPU path does, its half precisions run, moving off the GPU releases its memory, and the batch size
follows the free memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib_codeformer import FaceRestorer
from lib_codeformer.restorer import default_batch_size

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (CUDA)")


def test_the_gpu_restores_what_the_cpu_restores(small_model, astronaut):
    on_cpu = FaceRestorer(small_model, detector="yunet", device="cpu").restore(astronaut)
    gpu = FaceRestorer(small_model, detector="yunet", device="cuda")
    on_gpu = gpu.restore(astronaut)
    gpu.to("cpu")  # the session's shared model goes back where the other tests expect it
    assert on_gpu.restored_count == on_cpu.restored_count == 1
    assert on_gpu.changed == on_cpu.changed
    unchanged = np.ones(astronaut.shape[:2], bool)
    for x0, y0, x1, y1 in on_gpu.changed:
        unchanged[y0:y1, x0:x1] = False
    assert np.array_equal(on_gpu.image[unchanged], astronaut[unchanged])  # outside the faces: exact
    assert np.abs(on_gpu.image.astype(int) - on_cpu.image.astype(int)).max() <= 3  # float rounding, in 8 bits


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precisions_run_on_the_gpu(small_model, astronaut, precision):
    restorer = FaceRestorer(small_model, detector="yunet", device="cuda", precision=precision)
    result = restorer.restore(astronaut)
    restorer.to("cpu")
    assert result.restored_count == 1 and result.image.dtype == np.uint8


def test_moving_to_the_cpu_releases_the_gpu_memory(small_model, astronaut):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    restorer = FaceRestorer(small_model, detector="yunet", device="cuda")
    restorer.restore(astronaut)
    held = torch.cuda.memory_allocated()
    restorer.to("cpu")
    torch.cuda.empty_cache()
    assert held > before + (1 << 20)  # the model was on the GPU
    assert torch.cuda.memory_allocated() <= before + (1 << 20)  # and nothing of it is left there


def test_the_batch_size_follows_the_free_memory():
    device = torch.device("cuda")
    free, _ = torch.cuda.mem_get_info(device)
    assert default_batch_size(device) == max(1, min(16, free // (1200 * 2**20)))
