"""The Winograd kernel's shared library: compiled from ``csrc/winograd.c`` on first use, cached, vetted, loaded.

The kernel is a small C file built with the system's C compiler (``$CC``,
else ``cc``, ``gcc`` or ``clang``) into the cache folder, once per source,
flags, compiler and CPU, and loaded with ctypes; it needs no PyTorch headers
and builds in well under a second.

A miscompiled or crashing library must never take the host process (a
WebUI) down with it, so each build is self-tested once in a child process
(``winograd.child_self_test``) before it is published, and its verdict is
kept next to it: only a library whose bytes are still those the build wrote
and whose verdict is good is ever loaded; a library that crashed or computed
wrong results is never loaded again (the log says why). Where no compiler is
found or the build fails, ``kernel()`` is None. ``CODEFORMER_FAST_CONV=0``
turns the kernel off.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from ..storage.atomic import atomic_output, remove_stale
from ..storage.model_files import default_cache_dir
from . import host_threads

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "winograd.c"
ENV_SWITCH = "CODEFORMER_FAST_CONV"
# Developer override of the optimisation flags (the AddressSanitizer build in CI uses it).
ENV_FLAGS = "CODEFORMER_KERNEL_FLAGS"
# The kernel's vector width (floats) from which it is used: AVX-512 (16) and AVX2 (8)
# builds were measured faster than PyTorch's convolutions over the whole network
# (1.6 s and 2.2 s against 2.4 s, on an AVX-512 CPU whose PyTorch uses AVX-512);
# the 4-float build (SSE, NEON) took 3.8 s there, so elsewhere PyTorch's are kept.
MIN_VECTOR_FLOATS = 8


class Kernel:
    """The loaded library's entry points and the output-channel multiple it requires."""

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, integer, int64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        self.conv = library.winograd_conv3x3
        self.conv.argtypes = [pointer, integer, integer, integer, integer, integer, integer, pointer, pointer, pointer, integer]
        self.conv.argtypes += [pointer, pointer, pointer, integer, integer, integer, pointer, integer, pointer]
        self.conv.restype = integer
        self.workspace_floats = library.winograd_workspace_floats
        self.workspace_floats.argtypes = [integer] * 8
        self.workspace_floats.restype = int64
        self.moments = library.channel_moments
        self.moments.argtypes = [pointer, integer, int64, integer, pointer, integer]
        self.moments.restype = integer
        self.transform = library.winograd_transform_weights
        self.transform.argtypes = [pointer, integer, integer, int64, int64, int64, int64, pointer, integer, integer]
        self.transform.restype = integer
        self.norm_affine = library.group_norm_affine
        self.norm_affine.argtypes = [pointer, integer, integer, integer, int64, ctypes.c_double] + [pointer] * 4
        self.norm_affine.restype = None
        self.direct = library.direct_conv3x3
        self.direct.argtypes = [pointer, integer, integer, integer, integer, pointer, integer, pointer, pointer, integer, integer]
        self.direct.restype = integer
        self.few_outputs = int(library.direct_few_outputs())
        self.pointwise = library.pointwise_conv
        self.pointwise.argtypes = [pointer, int64, integer, pointer, integer, pointer, pointer, pointer, integer]
        self.pointwise.restype = integer
        self.out_channel_multiple = int(library.winograd_co_block())
        self.vector_floats = int(library.winograd_vector_floats())
        self._use_team = library.winograd_use_team
        self._use_team.argtypes = [pointer]
        self._uses_team = library.winograd_uses_team
        self.use_team(host_threads.team_entry())

    def use_team(self, gomp_parallel: int | None) -> None:
        """Run the kernel's threads on the OpenMP team behind ``gomp_parallel`` (the address of a function
        with GOMP_parallel's signature; see host_threads), or on threads of its own (None)."""
        self._use_team(gomp_parallel)

    @property
    def joins_host_team(self) -> bool:
        return bool(self._uses_team())


def enabled_by_environment() -> bool:
    """``CODEFORMER_FAST_CONV=0`` keeps the kernel off whatever a setting or argument says."""
    return os.environ.get(ENV_SWITCH, "1") != "0"


def kernel() -> Kernel | None:
    """The kernel for this CPU, built and vetted on first use; None where it cannot be had or does not pay."""
    if "kernel" not in _loaded:
        with _lock:
            if "kernel" not in _loaded:
                _loaded["kernel"] = _build_and_load() if enabled_by_environment() else None
    return _loaded["kernel"]


def available() -> bool:
    """Whether the kernel is allowed by the environment, built, vetted and loaded."""
    return enabled_by_environment() and kernel() is not None


def kernel_for(x: object, weight: object, size: int) -> Kernel | None:
    """The kernel where ``conv2d(x, weight)`` with ``size`` x ``size`` filters may run on it as far as the tensors
    go: 4-d float32 CPU tensors whose channels match, no autocast, no autograd to record; None where not.

    Shared by the 3x3 and 1x1 layers' ``applies``; each adds the sizes that pay for its own form.
    """
    import torch

    from ..compat import autocast_enabled

    if not (isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)) or x.dim() != 4 or weight.dim() != 4:
        return None
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return None
    if weight.shape[2:] != (size, size) or weight.shape[1] != x.shape[1]:
        return None
    if autocast_enabled("cpu"):  # a bf16 run stays bf16 throughout, as PyTorch's convolutions make it
        return None
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return None
    return kernel() if enabled_by_environment() else None


_lock = threading.Lock()
_loaded: dict[str, Kernel | None] = {}
# Building, vetting and loading.

# Tuned for the CPU it runs on first; plain optimisation where the compiler has no -march=native.
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])
_COMMON_FLAGS = ["-shared", "-fPIC", "-pthread"]
# After the source, so that linkers that drop libraries nothing needed yet (--as-needed) keep them: the C math
# library, for GroupNorm's square root (group_norm_affine).
_LIBRARIES = ["-lm"]
_LIBRARY = "winograd.dll" if sys.platform == "win32" else "winograd.so"
_VERDICT = "verdict.json"


def compiler_command() -> list[str]:
    """The C compiler as a command: ``$CC`` split as a shell would (``ccache gcc``), else cc, gcc or clang."""
    given = os.environ.get("CC")
    if given:
        command = shlex.split(given)
        if command and shutil.which(command[0]):
            return command
        raise RuntimeError(f"no C compiler found: $CC is {given!r}, which is not a program on PATH")
    for candidate in ("cc", "gcc", "clang"):
        found = shutil.which(candidate)
        if found:
            return [candidate]
    raise RuntimeError("no C compiler found (set $CC, or install gcc or clang)")


def flag_sets() -> list[list[str]]:
    """The optimisation flags to try in order (``CODEFORMER_KERNEL_FLAGS`` replaces them all)."""
    override = os.environ.get(ENV_FLAGS)
    return [shlex.split(override)] if override else [list(flags) for flags in _FLAG_SETS]


def compile_command(compiler: list[str] | str, flags: list[str], output: Path) -> list[str]:
    """The command that builds the kernel's shared library with these optimisation flags."""
    prefix = shlex.split(compiler) if isinstance(compiler, str) else list(compiler)
    return [*prefix, *flags, *_COMMON_FLAGS, str(SOURCE), "-o", str(output), *_LIBRARIES]


def _cpu_signature() -> str:
    """What -march=native depends on, so a cache shared between machines never loads foreign code."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text().splitlines()
        return "|".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    if sys.platform == "darwin":
        brand = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=30)
        return brand.stdout.strip() or platform.machine()
    return f"{platform.processor()}|{platform.machine()}|{os.environ.get('PROCESSOR_IDENTIFIER', '')}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_folder() -> Path:
    """Where this source, built by this compiler with these flags for this CPU, lives in the cache."""
    compiler = compiler_command()
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    recipe = [SOURCE.read_bytes(), repr((flag_sets(), _COMMON_FLAGS, _LIBRARIES)).encode(), version.encode()]
    recipe.append(_cpu_signature().encode())
    key = hashlib.sha256(b"\0".join(recipe)).hexdigest()[:16]
    return default_cache_dir() / "kernels" / f"winograd-{key}"


def _build_and_load() -> Kernel | None:
    try:
        folder = build_folder()
        if not folder.exists():
            _publish_build(folder)
        return _load_vetted(folder)
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as error:
        logger.info("Fast (Winograd) convolutions unavailable, using PyTorch's: %s", error)
        return None


def _load_vetted(folder: Path) -> Kernel | None:
    """Load the folder's library if its verdict is good and its bytes are those the build wrote.

    A damaged file must not reach the loader (a truncated shared library
    crashes the process with SIGBUS rather than failing to load): its folder
    is removed and built afresh, once.
    """
    library, verdict_file = folder / _LIBRARY, folder / _VERDICT
    try:
        verdict = json.loads(verdict_file.read_text())
        intact = verdict.get("sha256") == _sha256(library)
    except (OSError, ValueError, AttributeError):
        intact = False
    if not intact:
        logger.info("Rebuilding %s: it is not the file the build wrote", library)
        shutil.rmtree(folder, ignore_errors=True)
        _publish_build(folder)
        verdict = json.loads(verdict_file.read_text())
        if verdict.get("sha256") != _sha256(library):
            raise RuntimeError(f"{library} changed while it was being loaded")
    if verdict.get("verdict") != "good":
        logger.warning(
            "Fast (Winograd) convolutions disabled: the kernel %s failed its self-test (%s); it will not be loaded. "
            "Using PyTorch's convolutions.",
            library,
            verdict.get("verdict"),
        )
        return None
    loaded = Kernel(ctypes.CDLL(str(library)))
    if loaded.vector_floats < MIN_VECTOR_FLOATS:
        logger.info("Fast (Winograd) convolutions not used: this CPU has no AVX2 or AVX-512, where they were measured faster.")
        return None
    return loaded


def _publish_build(folder: Path) -> None:
    """Build, vet in a child process, and publish the folder with one atomic rename.

    Two processes building at once each publish a complete folder or find the
    other's: whichever rename comes second is discarded. Temporary folders of
    builds that were killed are removed here.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(folder.parent, recursive=False)
    try:
        with atomic_output(folder, folder=True) as scratch:
            library = scratch / _LIBRARY
            _compile(library)
            verdict = {"sha256": _sha256(library), "verdict": vet_in_child(library)}
            (scratch / _VERDICT).write_text(json.dumps(verdict))
        logger.info("Built the fast convolution kernel: %s (self-test: %s)", library.name, verdict["verdict"])
    except OSError:
        if not (folder / _VERDICT).exists():  # else another process published the same build first
            raise


def _compile(library: Path) -> None:
    compiler = compiler_command()
    errors = []
    for flags in flag_sets():
        result = subprocess.run(compile_command(compiler, flags, library), capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            return
        errors.append(result.stderr.strip()[-500:])
    raise RuntimeError(f"{' '.join(compiler)} could not build {SOURCE.name}: {errors[-1]}")


_CHILD_TEST = "import sys; from lib_codeformer.acceleration import winograd; sys.exit(winograd.child_self_test(sys.argv[1]))"


def vet_in_child(library: Path) -> str:
    """Self-test a built library in a child process: "good", or what went wrong (a crash included)."""
    package_root = Path(__file__).resolve().parents[2]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
    try:
        result = subprocess.run(
            [sys.executable, "-c", _CHILD_TEST, str(library)],
            capture_output=True,
            text=True,
            timeout=300,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        return "the self-test did not finish within 300 s"
    if result.returncode == 0:
        return "good"
    if result.returncode < 0:
        return f"the self-test crashed the process (signal {-result.returncode})"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[-1] if lines else f"the self-test exited with status {result.returncode}"
