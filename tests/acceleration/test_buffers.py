"""The buffer pool: memory comes back only when nothing uses it, is reused, and is given back to the system when idle."""

from __future__ import annotations

import gc
import math
import mmap
import os
import signal
import threading
import time

import pytest
import torch
from support import require_winograd

from lib_codeformer.acceleration import buffers, winograd
from lib_codeformer.acceleration.buffers import ALIGNMENT, BufferPool
from lib_codeformer.acceleration.layers import FastConv3x3

MIB = 1 << 20
SHAPE = (1, 64, 64, 64)  # 1 MiB of float32


@pytest.fixture
def pool():
    made = BufferPool(idle_seconds=60, min_bytes=MIB)
    yield made
    made.release()


def test_a_freed_buffer_is_reused(pool):
    first = pool.empty(SHAPE)
    address = first.data_ptr()
    del first
    assert pool.free_bytes() == MIB
    again = pool.empty(SHAPE)
    assert again.data_ptr() == address
    assert pool.free_bytes() == 0


def test_every_buffer_starts_on_a_cache_line(pool):
    # The kernel's 64-byte vector loads and stores straddle two lines on anything less, and its streaming
    # stores need whole aligned lines. Sizes whose allocations land at different offsets: mmap'd (large) and
    # heap (just above the pool's minimum) blocks, fresh and reused, and a smaller request on a larger buffer.
    held = [pool.empty((count,)) for count in (MIB // 4, MIB // 4 + 3, 5 * MIB // 4 + 1, 40 * MIB // 4)]
    addresses = [tensor.data_ptr() for tensor in held]
    del held
    again = [pool.empty((count,)) for count in (MIB // 4, 3 * MIB // 4, 40 * MIB // 4 - 5)]
    assert [address % ALIGNMENT for address in addresses + [tensor.data_ptr() for tensor in again]] == [0] * 7


def test_a_buffer_is_not_reused_while_a_view_of_it_lives(pool):
    first = pool.empty(SHAPE)
    first.fill_(1.0)
    view = first.permute(0, 3, 1, 2)[:, :3]
    del first
    assert pool.free_bytes() == 0
    second = pool.empty(SHAPE)
    second.fill_(2.0)
    assert second.data_ptr() != view.data_ptr()
    assert bool((view == 1.0).all())
    del view
    assert pool.free_bytes() == MIB


def test_small_requests_are_left_to_the_c_allocator(pool):
    small = pool.empty((16, 16))
    assert small.shape == (16, 16) and small.dtype == torch.float32
    del small
    assert pool.free_bytes() == 0


def test_a_buffer_serves_smaller_requests_down_to_half_its_size(pool):
    del_me = pool.empty((2, *SHAPE[1:]))
    address = del_me.data_ptr()
    del del_me
    half = pool.empty(SHAPE)
    assert half.data_ptr() == address and half.shape == SHAPE
    del half
    quarter = pool.empty((1, 32, 64, 64))  # would waste 3/4 of it: a new buffer instead
    assert quarter.data_ptr() != address
    assert pool.free_bytes() == 2 * MIB


def test_idle_buffers_are_given_back_to_the_system():
    pool = BufferPool(idle_seconds=0.2, min_bytes=MIB)
    buffer = pool.empty(SHAPE)
    del buffer
    assert pool.free_bytes() == MIB
    deadline = time.monotonic() + 10
    while pool.free_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.free_bytes() == 0


def test_requests_keep_the_buffers_from_being_given_back():
    pool = BufferPool(idle_seconds=0.5, min_bytes=MIB)
    for _ in range(8):  # 0.8 s of steady use, longer than the idle time
        buffer = pool.empty(SHAPE)
        del buffer
        time.sleep(0.1)
        assert pool.free_bytes() == MIB
    pool.release()


def test_buffers_in_use_at_release_are_not_kept_afterwards(pool):
    in_use = pool.empty(SHAPE)
    pool.release()
    del in_use
    assert pool.free_bytes() == 0


def test_a_buffer_freed_by_the_garbage_collector_comes_back(pool):
    """Freed inside the collector, on whatever thread runs it: giving it back must not take a lock."""
    cycle = {"tensor": pool.empty(SHAPE)}
    cycle["self"] = cycle
    del cycle
    assert pool.free_bytes() == 0
    gc.collect()
    assert pool.free_bytes() == MIB


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_the_lock_was_held_can_still_use_the_pool(pool):
    """A worker process forked while another thread held the pool's lock would wait for it forever."""
    with pool._lock:
        child = os.fork()
        if child == 0:
            try:
                buffer = pool.empty(SHAPE)
                del buffer
                os._exit(0 if pool.free_bytes() == MIB else 1)
            finally:
                os._exit(2)
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(child, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            pytest.fail("the forked child hung on the pool's lock")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(waited[1]) == 0


def test_threads_never_share_a_buffer(pool):
    problems = []

    def work(value: float) -> None:
        for _ in range(50):
            buffer = pool.empty(SHAPE)
            buffer.fill_(value)
            time.sleep(0)
            if not bool((buffer == value).all()):
                problems.append(value)

    threads = [threading.Thread(target=work, args=(float(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []


def test_layers_in_a_chain_compute_the_same_on_recycled_memory():
    """Outputs written into recycled buffers: a chain of kernel convolutions equals the same chain on fresh memory."""
    require_winograd()
    torch.manual_seed(3)
    # Channels in whole output blocks of the kernel (16 on AVX2, 64 on AVX-512) and enough of them that each
    # output (2 x 64 x 64 per channel) is large enough to be pooled on either.
    block, per_channel = winograd.kernel().out_channel_multiple, 2 * 64 * 64 * 4
    channels = block * max(1, math.ceil(winograd.pool.min_bytes / (per_channel * block)))
    assert channels * per_channel >= winograd.pool.min_bytes
    layers = [FastConv3x3(channels, channels) for _ in range(4)]
    with torch.inference_mode():
        assert all(winograd.applies(torch.zeros(2, channels, 64, 64), layer.weight) for layer in layers)
    x = torch.randn(2, channels, 64, 64)

    def chain() -> torch.Tensor:
        with torch.inference_mode():
            out = x
            for layer in layers:
                out = layer(out, out)  # the residual is the input: read while the output is written elsewhere
            return out.clone()

    winograd.pool.release()
    fresh = chain()
    assert winograd.pool.free_bytes() > 0  # the intermediate outputs came back
    assert torch.equal(chain(), fresh)
    assert torch.equal(chain(), fresh)


def test_free_buffers_are_kept_within_the_cap_largest_first():
    pool = BufferPool(idle_seconds=60, min_bytes=MIB, max_free_bytes=3 * MIB)
    held = [pool.empty((size, *SHAPE[1:])) for size in (1, 2, 1)]
    addresses = [buffer.data_ptr() for buffer in held]
    del held
    assert pool.free_bytes() == 3 * MIB  # the 2 MiB buffer and one of 1 MiB: 4 MiB came back
    assert pool.empty((2, *SHAPE[1:])).data_ptr() == addresses[1]  # the largest was kept
    capped_off = BufferPool(idle_seconds=60, min_bytes=MIB, max_free_bytes=0)
    buffer = capped_off.empty(SHAPE)
    del buffer
    assert capped_off.free_bytes() == 0  # 0: nothing kept, every request fresh


def test_the_cap_comes_from_the_environment(monkeypatch, caplog):
    monkeypatch.setenv("CODEFORMER_MAX_POOL_MIB", "256")
    assert BufferPool().max_free_bytes == 256 * MIB
    monkeypatch.setenv("CODEFORMER_MAX_POOL_MIB", "lots")
    assert BufferPool().max_free_bytes == buffers.DEFAULT_MAX_FREE_MIB * MIB
    assert "CODEFORMER_MAX_POOL_MIB='lots' is not a whole number" in caplog.text
    monkeypatch.delenv("CODEFORMER_MAX_POOL_MIB")
    assert BufferPool().max_free_bytes == buffers.DEFAULT_MAX_FREE_MIB * MIB


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or not hasattr(mmap, "MAP_POPULATE"), reason="Linux only")
def test_a_new_buffer_arrives_with_its_pages_in_place(pool):
    # Resident before anything is written to it: the system mapped its pages in one call, instead of one page
    # fault per page (or per huge page) on first write, in the middle of a layer.
    def resident_bytes() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = resident_bytes()
    buffer = pool.empty((8 * MIB,))  # 32 MiB
    assert resident_bytes() - before >= 31 * MIB
    assert buffer.data_ptr() % ALIGNMENT == 0
    buffer.fill_(1.0)
    assert float(buffer.sum()) == 8 * MIB


def test_buffers_come_from_numpy_where_the_system_cannot_populate(pool, monkeypatch):
    monkeypatch.delattr(mmap, "MAP_POPULATE", raising=False)
    assert buffers.populated_empty(MIB) is None
    held = [pool.empty((count,)) for count in (MIB // 4 + 3, 10 * MIB // 4)]
    assert [tensor.data_ptr() % ALIGNMENT for tensor in held] == [0, 0]
    for tensor in held:
        tensor.fill_(2.0)
        assert float(tensor.sum()) == 2.0 * tensor.numel()
