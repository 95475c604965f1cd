"""The OpenMP runtime PyTorch runs its CPU operations on, whose thread team the Winograd kernel joins.

Between two of its operations PyTorch's OpenMP threads spin for a while
(libgomp's default: 300,000 spins, a few milliseconds) before they sleep.
Threads the kernel started of its own in that time shared the cores with
them: inside RetinaFace, whose kernel layers sit between PyTorch's, a layer
took up to twice as long as alone and the kernel gained nothing over the
whole network; with ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) it gained a
fifth. Running the kernel's shares on PyTorch's own team instead uses the
threads that are awake already and leaves none spinning beside it.

The runtime is found among the libraries the process has mapped (Linux), or
in PyTorch's own library folders (macOS), and its GNU entry point
``GOMP_parallel`` is taken: libgomp's, which LLVM's libomp and Intel's
libiomp5 also provide. Where PyTorch is built without OpenMP, or the
runtime cannot be told apart, the kernel starts threads of its own.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterable
from pathlib import Path

import torch

# libgomp.so.1, libgomp-a34b3233.so.1 (a wheel's renamed copy), libiomp5.so, libomp.so, libomp.dylib.
_RUNTIME_NAME = re.compile(r"^lib(gomp|iomp5|omp)([-.][^/]*)?\.(so|dylib)(\.[0-9]+)*$")


def torch_uses_openmp() -> bool:
    """Whether ATen's parallel backend is OpenMP (the alternative, its native thread pool, has no team to join)."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def torch_library_folders() -> list[Path]:
    """Where a PyTorch wheel keeps the libraries it ships: ``torch/lib`` and auditwheel's ``torch.libs``."""
    package = Path(torch.__file__).resolve().parent
    return [package / "lib", package.parent / "torch.libs"]


def mapped_libraries(maps: Path = Path("/proc/self/maps")) -> list[Path]:
    """The files this process has mapped (Linux); empty where there is no such list."""
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    fields = (line.split(maxsplit=5) for line in lines)
    paths = {entry[5] for entry in fields if len(entry) == 6 and entry[5].startswith("/")}
    return [Path(path) for path in sorted(paths)]


def choose_runtime(candidates: Iterable[Path], torch_folders: Iterable[Path]) -> Path | None:
    """The OpenMP runtime among ``candidates``: the one in PyTorch's folders, else the only one; None if unclear."""
    runtimes = sorted({path for path in candidates if _RUNTIME_NAME.match(path.name)})
    folders = [folder.resolve() for folder in torch_folders]
    own = [path for path in runtimes if any(path.resolve().is_relative_to(folder) for folder in folders)]
    if len(own) == 1:
        return own[0]
    return runtimes[0] if len(runtimes) == 1 else None


def team_entry() -> int | None:
    """The address of ``GOMP_parallel`` in the runtime PyTorch's operations run on, or None."""
    if not torch_uses_openmp():
        return None
    candidates = mapped_libraries()
    if not candidates:  # no /proc (macOS): the wheel's own copy, which PyTorch has loaded already
        candidates = [path for folder in torch_library_folders() if folder.is_dir() for path in folder.iterdir()]
    runtime = choose_runtime(candidates, torch_library_folders())
    if runtime is None:
        return None
    try:
        library = ctypes.CDLL(str(runtime))  # the same copy: the loader knows the file is loaded
        return ctypes.cast(library.GOMP_parallel, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return None
