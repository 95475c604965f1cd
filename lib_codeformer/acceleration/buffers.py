"""Large CPU output buffers, recycled between layers and between faces instead of fresh from the system.

Why: a fresh large allocation is not free on the CPU. The C allocator hands
blocks of more than 32 MiB (a 512 x 512 x 64 float32 feature map is 64 MiB)
straight from the operating system and returns them on free, so every write
to a new one page-faults and the kernel zeroes it first. Over one CodeFormer
pass that is about 400 000 page faults and a seventh of the wall time on the
development machine (AVX2, 2 cores). Reusing the same memory, as PyTorch's
CUDA allocator does on GPUs, takes that away.

``pool.empty(shape)`` returns a float32 tensor whose memory comes back to the
pool once nothing uses it any more (the tensor, its views and any tensor
sharing its storage all gone). Free buffers are kept for reuse while the
network is in use and given back to the system after ``idle_seconds``
without a request (or at once by ``release()``), so an idle WebUI does not
keep them. Only buffers of ``min_bytes`` and more are pooled; the C allocator
reuses smaller ones itself.

The free buffers kept are capped at ``max_free_bytes`` (default
``DEFAULT_MAX_FREE_MIB``, or ``CODEFORMER_MAX_POOL_MIB`` from the
environment; 0 turns recycling off): past it the smallest are given back
first, since the largest are the ones the system hands out page by page.
``benchmarks/bench_pool.py`` measures the speed each cap gives.

Every pooled buffer starts on a cache line (``ALIGNMENT`` bytes). NumPy's
allocator gives 16-byte alignment: a 512 x 512 x 64 feature map started 16
bytes into a line, so each 64-byte AVX-512 load and store of the Winograd
kernel straddled two lines, and the kernel could not write its large outputs
with streaming stores, which need whole aligned lines.

Where the system offers it (Linux), a new buffer is mapped with its pages
already in place (``MAP_POPULATE``): the system zeroes and maps them all in
the one call, instead of page faults in the middle of a layer on first write
(NumPy's large arrays fault in 2 MiB huge pages where the system allows
them, else 4 KiB ones). The first face after an idle spell, when every
buffer is new, took 0.90x the time (AMD Zen 4, 2 cores, alternating in one
process: 1733 against 1915 ms for one face, 1764 against 1957 a face in a
batch of 4), and varied less; faces on recycled buffers are unchanged.
Elsewhere (Windows, macOS) buffers come from NumPy's allocator as before.
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# A free buffer serves a request of at least this share of its size (no more than 2x waste).
_BEST_FIT = 0.5
# Free memory kept for reuse by default, MiB. CodeFormer's largest working set is about 580 MiB for one face,
# 1.1 GiB for 2 (the CPU default batch) and 2.2 GiB for 4; the measurements behind the figure are in
# docs/speed.md ("Recycled working memory").
DEFAULT_MAX_FREE_MIB = 1024
ENV_MAX_FREE = "CODEFORMER_MAX_POOL_MIB"
# Where every pooled buffer starts: a multiple of the cache line (64 bytes on x86-64 and most ARM cores).
ALIGNMENT = 64


def max_free_bytes_from_environment() -> int:
    """``CODEFORMER_MAX_POOL_MIB`` in bytes where set to a whole number >= 0, else the default (a bad value is said)."""
    value = os.environ.get(ENV_MAX_FREE, "").strip()
    if value:
        try:
            mib = int(value)
        except ValueError:
            mib = -1
        if mib >= 0:
            return mib << 20
        logger.warning("%s=%r is not a whole number of MiB >= 0; %d MiB is kept", ENV_MAX_FREE, value, DEFAULT_MAX_FREE_MIB)
    return DEFAULT_MAX_FREE_MIB << 20


class BufferPool:
    """Recycles large float32 CPU buffers; thread-safe."""

    def __init__(self, *, idle_seconds: float = 15.0, min_bytes: int = 1 << 20, max_free_bytes: int | None = None) -> None:
        self.idle_seconds = idle_seconds
        self.min_bytes = min_bytes
        self.max_free_bytes = max_free_bytes_from_environment() if max_free_bytes is None else max_free_bytes
        self._lock = threading.Lock()
        self._free: list[np.ndarray] = []  # whole buffers nothing uses, smallest first
        # Buffers that came back, not yet sorted into _free: appended without the lock, since a buffer
        # comes back whenever its last user dies, on any thread, possibly inside the garbage collector.
        self._returned: deque[tuple[np.ndarray, int]] = deque()
        self._timer: threading.Timer | None = None  # pending idle check, if any
        self._last_request = 0.0
        self._generation = 0  # bumped by release(): buffers handed out before it are not kept when they come back
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)

    def empty(self, shape: Sequence[int]) -> Tensor:
        """An uninitialised float32 CPU tensor of ``shape`` (contiguous), from a free buffer where one fits."""
        count = math.prod(int(size) for size in shape)  # 0.8 us a call; NumPy's reduction took 4.4
        if count * 4 < self.min_bytes:
            return torch.empty(tuple(shape), dtype=torch.float32)
        with self._lock:
            buffer = self._take(count)
            generation = self._generation
            self._last_request = time.monotonic()
            if self._timer is None:
                self._start_timer(self.idle_seconds)
        if buffer is None:
            buffer = aligned_empty(count)
        lease = buffer[:count]  # a view: its death (with the last tensor on it) returns the buffer
        weakref.finalize(lease, self._give_back, buffer, generation).atexit = False
        return torch.from_numpy(lease).view(tuple(shape))

    def channels_last(self, batch: int, channels: int, height: int, width: int) -> Tensor:
        """An uninitialised (batch, channels, height, width) float32 tensor in channels-last memory order."""
        return self.empty((batch, height, width, channels)).permute(0, 3, 1, 2)

    def release(self) -> None:
        """Give every free buffer back to the system now; buffers in use are given back when they are freed."""
        with self._lock:
            self._free.clear()
            self._returned.clear()
            self._generation += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def free_bytes(self) -> int:
        """Bytes held in free buffers, waiting for reuse."""
        with self._lock:
            self._sort_in_returned()
            return sum(buffer.nbytes for buffer in self._free)

    def _take(self, count: int) -> np.ndarray | None:
        self._sort_in_returned()
        for index, buffer in enumerate(self._free):
            if buffer.size >= count:
                return self._free.pop(index) if count >= buffer.size * _BEST_FIT else None
        return None

    def _give_back(self, buffer: np.ndarray, generation: int) -> None:
        self._returned.append((buffer, generation))
        # Sorted in now where the lock is free, so that the cap holds between passes too (the last outputs of a
        # pass come back after its last request); never waited for, since this may run inside the garbage
        # collector on a thread that holds the lock already.
        if self._lock.acquire(blocking=False):
            try:
                self._sort_in_returned()
            finally:
                self._lock.release()

    def _sort_in_returned(self) -> None:
        """Move the buffers that came back since the last release into _free, within ``max_free_bytes`` (the
        largest kept first); called with the lock held."""
        if not self._returned:
            return  # the free buffers are within the cap already: no sort (a few hundred requests a face)
        while self._returned:
            buffer, generation = self._returned.popleft()
            if generation == self._generation:
                self._free.append(buffer)
        kept, held = [], 0
        for buffer in sorted(self._free, key=lambda free: free.nbytes, reverse=True):
            if held + buffer.nbytes <= self.max_free_bytes:
                kept.append(buffer)
                held += buffer.nbytes
        self._free = kept[::-1]  # smallest first, for best fit

    def _start_timer(self, seconds: float) -> None:
        """One daemon timer at a time, started with the lock held."""
        self._timer = threading.Timer(seconds, self._release_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _after_fork(self) -> None:
        """In a forked child only the forking thread lives: a lock another thread held, or a timer, would never move."""
        self._lock = threading.Lock()
        self._timer = None

    def _release_if_idle(self) -> None:
        with self._lock:
            self._timer = None
            waited = time.monotonic() - self._last_request
            if waited < self.idle_seconds:
                self._start_timer(self.idle_seconds - waited)
                return
        self.release()


def aligned_empty(count: int) -> np.ndarray:
    """``count`` uninitialised float32 values starting on an ``ALIGNMENT``-byte boundary: mapped with their pages in
    place where the system can (``populated_empty``), else a view of a slightly larger NumPy array."""
    populated = populated_empty(count)
    if populated is not None:
        return populated
    raw = np.empty(count + ALIGNMENT // 4, dtype=np.float32)
    skip = (-raw.ctypes.data % ALIGNMENT) // 4  # NumPy's memory starts on 4-byte (in fact 16-byte) boundaries
    return raw[skip : skip + count]


def populated_empty(count: int) -> np.ndarray | None:
    """``count`` float32 values (zeros) in a fresh private mapping whose pages are already in place; on a page
    boundary, so on a cache line. None where the system has no ``MAP_POPULATE`` or will not map the memory (the
    caller then allocates it the usual way, and a real shortage shows there)."""
    populate = getattr(mmap, "MAP_POPULATE", None)
    anonymous = getattr(mmap, "MAP_ANONYMOUS", None)
    if populate is None or anonymous is None or count <= 0:
        return None
    try:
        mapping = mmap.mmap(-1, count * 4, flags=mmap.MAP_PRIVATE | anonymous | populate)
    except (OSError, ValueError, OverflowError):
        return None
    return np.frombuffer(mapping, dtype=np.float32, count=count)  # the array keeps the mapping alive


def poolable(x: Tensor) -> bool:
    """Whether a result computed from ``x`` may go into a pooled buffer: CPU float32, no autograd graph to record."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not (torch.is_grad_enabled() and x.requires_grad)


pool = BufferPool()
