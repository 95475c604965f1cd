"""The Winograd kernel on PyTorch's own OpenMP team: which runtime is chosen, and the same results on any team."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import pytest
import torch

from lib_codeformer.acceleration import host_threads, winograd

pytestmark = pytest.mark.skipif(not winograd.available(), reason="the Winograd kernel is not available here")

TORCH_LIB = Path("/venv/lib/python3.11/site-packages/torch/lib")
TORCH_LIBS = Path("/venv/lib/python3.11/site-packages/torch.libs")


@pytest.mark.parametrize(
    ("mapped", "chosen"),
    [
        # A wheel's own copy wins over the system's.
        ([TORCH_LIB / "libgomp.so.1", Path("/usr/lib/x86_64-linux-gnu/libgomp.so.1")], TORCH_LIB / "libgomp.so.1"),
        ([Path("/usr/lib/libgomp.so.1"), TORCH_LIBS / "libgomp-a34b3233.so.1"], TORCH_LIBS / "libgomp-a34b3233.so.1"),
        # conda: one runtime, outside the wheel's folders.
        ([Path("/opt/conda/lib/libiomp5.so"), Path("/opt/conda/lib/libmkl_core.so")], Path("/opt/conda/lib/libiomp5.so")),
        ([TORCH_LIB / "libomp.dylib"], TORCH_LIB / "libomp.dylib"),
        # Two runtimes and neither PyTorch's: which one its operations use cannot be told.
        ([Path("/usr/lib/libgomp.so.1"), Path("/opt/lib/libiomp5.so")], None),
        # Not OpenMP runtimes.
        ([TORCH_LIB / "libomptarget.so", Path("/usr/lib/libgompish.so"), TORCH_LIB / "libtorch_cpu.so"], None),
        ([], None),
    ],
)
def test_the_runtime_is_pytorchs_own_or_the_only_one(mapped, chosen):
    assert host_threads.choose_runtime(mapped, [TORCH_LIB, TORCH_LIBS]) == chosen


def test_mapped_libraries_are_read_from_the_maps_file(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f10 r-xp 00000000 08:01 123 /venv/torch/lib/libgomp.so.1\n"
        "7f10-7f20 r--p 00010000 08:01 123 /venv/torch/lib/libgomp.so.1\n"
        "7f20-7f30 rw-p 00000000 00:00 0 \n"
        "7ffd-7ffe rw-p 00000000 00:00 0 [stack]\n"
        "7f30-7f40 r-xp 00000000 08:01 456 /opt/my lib/libc.so.6\n"
    )
    assert host_threads.mapped_libraries(maps) == [Path("/opt/my lib/libc.so.6"), Path("/venv/torch/lib/libgomp.so.1")]
    assert host_threads.mapped_libraries(tmp_path / "absent") == []


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and host_threads.torch_uses_openmp()), reason="PyTorch here does not run on OpenMP"
)
def test_the_kernel_joins_pytorchs_team_here():
    assert winograd.kernel().joins_host_team


# GOMP_parallel(fn, data, num_threads, flags), played by Python: a "team" that runs fn this many times in turn.
TEAM_FUNCTION = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)
WORK_FUNCTION = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@pytest.fixture
def kernel():
    """The loaded kernel, its team restored afterwards."""
    loaded = winograd.kernel()
    yield loaded
    loaded.use_team(host_threads.team_entry())


@pytest.mark.parametrize("members", [1, 2, 5])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shared", [False, True], ids=["per-thread-blocks", "shared-schedule"])
def test_every_team_computes_what_threads_of_its_own_do(kernel, monkeypatch, members, threads, shared):
    """A team smaller or larger than the shares it is given (a runtime may grant fewer threads, one inside
    another parallel region) still does each share once: the same output, bit for bit, and the same statistics."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    generator = torch.Generator().manual_seed(members * 10 + threads)
    x = torch.randn(2, 32, 30, 27, generator=generator)
    weight = torch.randn(kernel.out_channel_multiple, 32, 3, 3, generator=generator) / 17
    bias = torch.randn(kernel.out_channel_multiple, generator=generator)

    def convolve() -> tuple[torch.Tensor, torch.Tensor]:
        moments = winograd.new_moments(2, kernel.out_channel_multiple)
        with torch.inference_mode():
            out = winograd.conv3x3(x, weight, bias, tile=4, shared=shared, output_moments=moments)
        return out, moments

    kernel.use_team(None)
    assert not kernel.joins_host_team
    expected = convolve()
    asked = []

    def team(work: int, data: int, num_threads: int, flags: int) -> None:
        asked.append(num_threads)
        for _ in range(members):
            WORK_FUNCTION(work)(data)

    team_function = TEAM_FUNCTION(team)
    kernel.use_team(ctypes.cast(team_function, ctypes.c_void_p).value)
    assert kernel.joins_host_team
    got = convolve()
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert asked if threads > 1 else not asked  # one thread runs on the caller, with no team
    assert all(2 <= size <= threads for size in asked)  # fewer where there are fewer blocks than threads
