"""Winograd 3x3 convolutions on the CPU, compiled from ``csrc/winograd.c`` on first use.

Why: almost all of CodeFormer's time on a CPU is 3x3 convolutions, and
PyTorch's (oneDNN) already run them close to the processor's peak; the only
way to be markedly faster is to do fewer multiplications. Winograd's
F(4x4, 3x3) needs 4x fewer, F(6x6, 3x3) 5.1x; done block by block in cache
(see the C file), a 128-channel 256 x 256 convolution takes about a third of
PyTorch's time (37 ms against 112 ms on the AVX2 development machine).

The kernel is a small C file built with the system's C compiler (``$CC``,
else ``cc``, ``gcc`` or ``clang``) into the cache folder, once per source,
flags, compiler and CPU, and loaded with ctypes; it needs no PyTorch headers
and builds in well under a second.

A miscompiled or crashing library must never take the host process (a
WebUI) down with it, so each build is self-tested once in a child process
before it is published, and its verdict is kept next to it: only a library
whose bytes are still those the build wrote and whose verdict is good is
ever loaded; a library that crashed or computed wrong results is never
loaded again (the log says why). Where no compiler is found or the build
fails, everything stays on PyTorch's convolutions: same results within float
rounding, just slower. ``CODEFORMER_FAST_CONV=0`` turns the kernel off.

Results differ from a direct convolution by float32 rounding only (about
1e-5 over the whole network; the tests hold it to the official network's
outputs like the direct path).
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
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from ..compat import autocast_enabled
from ..storage.atomic import process_alive
from ..storage.model_files import default_cache_dir
from .buffers import pool

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "winograd.c"
ENV_SWITCH = "CODEFORMER_FAST_CONV"
# Developer override of the optimisation flags (the AddressSanitizer build in CI uses it).
ENV_FLAGS = "CODEFORMER_KERNEL_FLAGS"
# Below this many output pixels per image the weight transform (made on every call)
# outweighs the savings: on the development machine (AVX2) the kernel, transform
# included, took 4.6 ms against PyTorch's 6.7 ms for 256 channels at 32 x 32, but
# 11.7 ms against 8.0 ms for 512 channels at 16 x 16.
MIN_PIXELS = 32 * 32
# Tiles of 6 x 6 outputs (F(6x6, 3x3): 1.78 products per pixel instead of 2.25) from this many
# output pixels per image and up to LARGE_TILE_CHANNELS input channels; elsewhere 4 x 4. On the
# development machine (AVX2) the larger tile took 47 ms against 52 ms for 64 channels at 512 x 512
# and 37 ms against 45 ms for 128 channels at 256 x 256, but 51 ms against 42 ms for 256 channels
# at 128 x 128 and 21 ms against 12 ms at 64 x 64: partial tiles, and 64/36 more transformed
# weights to make and to read once per block of tiles, which many channels make the larger cost.
LARGE_TILE_PIXELS = 128 * 128
LARGE_TILE_CHANNELS = 128
TILES = (4, 6)
# The kernel's vector width (floats) from which it is used: AVX-512 (16) and AVX2 (8)
# builds were measured faster than PyTorch's convolutions over the whole network
# (1.6 s and 2.2 s against 2.4 s, on an AVX-512 CPU whose PyTorch uses AVX-512);
# the 4-float build (SSE, NEON) took 3.8 s there, so elsewhere PyTorch's are kept.
MIN_VECTOR_FLOATS = 8
# Input channels must be a multiple of this: the kernel reads channels a vector (<= 16 floats) at a time.
CHANNEL_MULTIPLE = 16
# The C code takes sizes as int: keep every size and product it forms far from 2^31.
_MAX_SIDE = 1 << 15
# A build older than this that is still in its temporary folder was killed (builds take seconds).
_STALE_BUILD_SECONDS = 3600

_lock = threading.Lock()
_loaded: dict[str, Kernel | None] = {}


class Kernel:
    """The loaded library's entry points and the output-channel multiple it requires."""

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, integer, int64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        self.conv = library.winograd_conv3x3
        self.conv.argtypes = [pointer, integer, integer, integer, integer, integer, pointer, pointer, pointer, integer]
        self.conv.argtypes += [pointer, pointer, pointer, integer, integer]
        self.conv.restype = integer
        self.moments = library.channel_moments
        self.moments.argtypes = [pointer, integer, int64, integer, pointer, integer]
        self.moments.restype = integer
        self.transform = library.winograd_transform_weights
        self.transform.argtypes = [pointer, integer, integer, int64, int64, int64, int64, pointer, integer, integer]
        self.transform.restype = integer
        self.out_channel_multiple = int(library.winograd_co_block())
        self.vector_floats = int(library.winograd_vector_floats())


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


def applies(x: Tensor, weight: Tensor, *, upsample: bool = False) -> bool:
    """Whether ``conv2d(x, weight, padding=1)`` may run on the kernel: CPU float32 with sizes that pay, no autograd."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32 or weight.device.type != "cpu":
        return False
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[2:] != (3, 3) or weight.shape[1] != x.shape[1]:
        return False
    if autocast_enabled("cpu"):  # a bf16 run stays bf16 throughout, as PyTorch's convolutions make it
        return False
    if x.shape[-2] * x.shape[-1] * (4 if upsample else 1) < MIN_PIXELS:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    loaded = kernel() if enabled_by_environment() else None
    return loaded is not None and x.shape[1] % CHANNEL_MULTIPLE == 0 and weight.shape[0] % loaded.out_channel_multiple == 0


def transform_weight(weight: Tensor, loaded: Kernel | None = None, tile: int = 4) -> Tensor:
    """G g G^T for every filter (float32), for tiles of ``tile`` x ``tile`` outputs (4 or 6), laid out for
    ``loaded`` (default: this CPU's kernel).

    Returns float32 ((tile + 2)^2, out_channels / block, in_channels, block):
    each point's weights in blocks of ``block`` output channels (the kernel's
    ``out_channel_multiple``), contiguous as its micro-kernel reads them.
    ``conv3x3`` makes it on every call (about 1 % of the convolution's time)
    instead of keeping it: it is 4x (tile 4) or 7.1x (tile 6) the size of
    the weights.
    """
    if tile not in TILES:
        raise ValueError(f"tile must be one of {TILES} (got {tile!r})")
    loaded = loaded or kernel()
    if loaded is None:
        raise RuntimeError("the Winograd kernel is not available here; check winograd.available() first")
    block = loaded.out_channel_multiple
    if not isinstance(weight, Tensor) or weight.dim() != 4 or weight.shape[2:] != (3, 3) or weight.shape[0] % block:
        raise ValueError(f"weights {_shape(weight)} are not 3x3 filters in blocks of {block} output channels")
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(f"weights must be float32 on the CPU (got {weight.dtype}, {weight.device})")
    out_channels, in_channels = (int(size) for size in weight.shape[:2])
    if out_channels > _MAX_SIDE or in_channels > _MAX_SIDE:
        raise ValueError(f"weights {tuple(weight.shape)} are larger than the kernel handles")
    weight = weight.detach()
    transformed = pool.empty(((tile + 2) ** 2, out_channels // block, in_channels, block))
    # Any strides: PyTorch's default layout and channels-last weights are both read in place.
    status = loaded.transform(
        weight.data_ptr(),
        out_channels,
        in_channels,
        *weight.stride(),
        transformed.data_ptr(),
        tile,
        max(1, torch.get_num_threads()),
    )
    if status != 0:
        raise MemoryError("the Winograd weight transform could not start its threads")
    return transformed


def conv3x3(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    *,
    norm: nn.GroupNorm | None = None,
    upsample: bool = False,
    tile: int | None = None,
) -> Tensor:
    """``conv2d(produce(x), weight, bias, padding=1) (+ residual)`` for 3x3 float32 ``weight``.

    ``produce`` is, in this order, ``silu(norm(x))`` when ``norm`` is given
    and 2x nearest-neighbour upsampling when ``upsample``; both are computed
    on the fly inside the convolution. The result is channels-last, like
    PyTorch's convolution of a channels-last input. ``tile``: the output
    tile's side, 4 or 6; by default 6 where it is faster (from
    ``LARGE_TILE_PIXELS`` output pixels, up to ``LARGE_TILE_CHANNELS`` input
    channels). Every argument is checked before a
    pointer reaches the C code (ValueError), which trusts them; RuntimeError
    where the kernel is not available.
    """
    loaded = kernel()
    if loaded is None:
        raise RuntimeError("the Winograd kernel is not available here; check winograd.available() first")
    return run(loaded, x, weight, bias, residual, norm, upsample, tile)


def run(
    loaded: Kernel,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    norm: nn.GroupNorm | None,
    upsample: bool,
    tile: int | None = None,
) -> Tensor:
    """``conv3x3`` on a given kernel (the self-test and the per-CPU-family tests use other builds)."""
    batch, in_channels, height, width = _checked_input(x)
    if upsample:
        height, width = 2 * height, 2 * width
    if not (isinstance(weight, Tensor) and weight.dim() == 4 and weight.shape[0] > 0 and weight.shape[1] == in_channels):
        raise ValueError(f"weights {_shape(weight)} are not (out_channels, {in_channels}, 3, 3) filters for this input")
    out_channels = int(weight.shape[0])
    bias = _checked_vector(bias, out_channels, "bias")
    if residual is not None:
        if not isinstance(residual, Tensor) or tuple(residual.shape) != (batch, out_channels, height, width):
            raise ValueError(f"residual {_shape(residual)} does not match the output {(batch, out_channels, height, width)}")
        if residual.dtype != torch.float32 or residual.device.type != "cpu":
            raise ValueError(f"residual must be float32 on the CPU (got {residual.dtype}, {residual.device})")
        residual = residual.contiguous(memory_format=torch.channels_last)
    if norm is not None and (
        not isinstance(norm, nn.GroupNorm) or norm.num_channels != in_channels or in_channels % norm.num_groups
    ):
        raise ValueError(f"the GroupNorm ({norm}) does not fit an input of {in_channels} channels")
    x = x.contiguous(memory_format=torch.channels_last)
    if tile is None:
        tile = 6 if height * width >= LARGE_TILE_PIXELS and in_channels <= LARGE_TILE_CHANNELS else 4
    transformed = transform_weight(weight, loaded, tile)
    scale, shift = _norm_affine(loaded, x, norm) if norm is not None else (None, None)
    out = pool.empty((batch, height, width, out_channels))
    status = loaded.conv(
        x.data_ptr(),
        batch,
        height,
        width,
        in_channels,
        int(upsample),
        _pointer(scale),
        _pointer(shift),
        transformed.data_ptr(),
        out_channels,
        _pointer(bias),
        _pointer(residual),
        out.data_ptr(),
        tile,
        max(1, torch.get_num_threads()),
    )
    if status != 0:
        raise MemoryError("the Winograd convolution could not allocate its working buffers")
    return out.permute(0, 3, 1, 2)


def _shape(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__


def _checked_input(x: Tensor) -> tuple[int, int, int, int]:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"the input must be a 4-D (batch, channels, height, width) tensor (got {_shape(x)})")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"the input must be float32 on the CPU (got {x.dtype}, {x.device})")
    batch, channels, height, width = (int(size) for size in x.shape)
    if min(batch, channels, height, width) < 1:
        raise ValueError(f"the input {tuple(x.shape)} is empty")
    if channels % CHANNEL_MULTIPLE:
        raise ValueError(f"the input has {channels} channels; the kernel needs a multiple of {CHANNEL_MULTIPLE}")
    if max(height, width) > _MAX_SIDE or batch > _MAX_SIDE or channels > _MAX_SIDE:
        raise ValueError(f"the input {tuple(x.shape)} is larger than the kernel handles")
    return batch, channels, height, width


def _checked_vector(vector: Tensor | None, length: int, name: str) -> Tensor | None:
    if vector is None:
        return None
    if not isinstance(vector, Tensor) or tuple(vector.shape) != (length,) or vector.device.type != "cpu":
        raise ValueError(f"{name} {_shape(vector)} does not fit {length} output channels on the CPU")
    return vector.detach().float().contiguous()


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _norm_affine(loaded: Kernel, x: Tensor, norm: nn.GroupNorm) -> tuple[Tensor, Tensor]:
    """GroupNorm as a per-image, per-channel ``x * scale + shift`` (float32, (B, C) each).

    Statistics as ``nn.GroupNorm`` takes them (biased variance over each
    group's channels and pixels), accumulated in float64. ``x`` is a
    checked, channels-last input.
    """
    batch, channels, height, width = x.shape
    moments = torch.empty((3, batch, channels), dtype=torch.float64)
    if loaded.moments(x.data_ptr(), batch, height * width, channels, moments.data_ptr(), max(1, torch.get_num_threads())):
        raise MemoryError("the GroupNorm statistics could not allocate their working buffers")
    shifted_sum, shifted_squares, shift = moments
    pixels = height * width
    # Per channel: mean, and squared deviations about it; then per group by Chan's combination.
    channel_mean = shift + shifted_sum / pixels
    channel_deviations = (shifted_squares - shifted_sum.square() / pixels).clamp_min(0.0)
    per_group = (batch, norm.num_groups, channels // norm.num_groups)
    group_mean = channel_mean.view(per_group).mean(-1, keepdim=True)
    spread = pixels * (channel_mean.view(per_group) - group_mean).square()
    variance = (channel_deviations.view(per_group) + spread).sum(-1, keepdim=True) / (pixels * per_group[2])
    inverse_std = variance.add(norm.eps).rsqrt().expand(per_group).reshape(batch, channels)
    mean = group_mean.expand(per_group).reshape(batch, channels)
    weight = norm.weight.detach().double().cpu() if norm.affine else 1.0
    bias = norm.bias.detach().double().cpu() if norm.affine else 0.0
    scale = inverse_std * weight
    return scale.float().contiguous(), (bias - mean * scale).float().contiguous()


# Building, vetting and loading.

# Tuned for the CPU it runs on first; plain optimisation where the compiler has no -march=native.
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])
_COMMON_FLAGS = ["-shared", "-fPIC", "-pthread"]
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
    return [*prefix, *flags, *_COMMON_FLAGS, str(SOURCE), "-o", str(output)]


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


def cpu_family(flags: set[str] | None = None) -> str:
    """The CPU's vector family as the benchmarks report it: "AVX-512", "AVX2", else the machine's name (e.g. arm64).

    ``flags``: the CPU's feature flags; by default this CPU's, from ``/proc/cpuinfo`` (none elsewhere).
    """
    if flags is None:
        cpuinfo = Path("/proc/cpuinfo")
        flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_folder() -> Path:
    """Where this source, built by this compiler with these flags for this CPU, lives in the cache."""
    compiler = compiler_command()
    version = subprocess.run([*compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    recipe = [SOURCE.read_bytes(), repr((flag_sets(), _COMMON_FLAGS)).encode(), version.encode(), _cpu_signature().encode()]
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
    _remove_stale_builds(folder.parent)
    scratch = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=folder.parent))
    try:
        library = scratch / _LIBRARY
        _compile(library)
        verdict = {"sha256": _sha256(library), "verdict": vet_in_child(library)}
        (scratch / _VERDICT).write_text(json.dumps(verdict))
        try:
            os.rename(scratch, folder)
            logger.info("Built the fast convolution kernel: %s (self-test: %s)", library.name, verdict["verdict"])
        except OSError:
            if not (folder / _VERDICT).exists():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _compile(library: Path) -> None:
    compiler = compiler_command()
    errors = []
    for flags in flag_sets():
        result = subprocess.run(compile_command(compiler, flags, library), capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            return
        errors.append(result.stderr.strip()[-500:])
    raise RuntimeError(f"{' '.join(compiler)} could not build {SOURCE.name}: {errors[-1]}")


def _remove_stale_builds(kernels: Path) -> None:
    for leftover in kernels.glob(".build-*"):
        try:
            pid = int(leftover.name.split("-")[1])
            alive = pid != os.getpid() and process_alive(pid)
            if not alive or time.time() - leftover.stat().st_mtime > _STALE_BUILD_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except (ValueError, IndexError, OSError):
            continue


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


def child_self_test(library: str) -> int:
    """Entry point of the child process: 0 when the library agrees with PyTorch, else prints why and returns 1."""
    problem = self_test(Kernel(ctypes.CDLL(library)))
    if problem:
        print(problem)
        return 1
    return 0


def self_test(loaded: Kernel) -> str:
    """Compare with PyTorch on awkward sizes (partial tiles of both sizes, batch 2, every fused step); '' when it agrees."""
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    channels, out_channels = 32, loaded.out_channel_multiple
    x = torch.randn(2, channels, 17, 18, generator=generator) * 3 + 1
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator) / 12
    bias = torch.randn(out_channels, generator=generator)
    residual = torch.randn(2, out_channels, 34, 36, generator=generator)
    norm = nn.GroupNorm(8, channels, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-0.5, 0.5, generator=generator)
    try:
        with torch.inference_mode():
            produced = F.interpolate(F.silu(norm.double()(x.double())), scale_factor=2.0, mode="nearest")
            expected = F.conv2d(produced, weight.double(), bias.double(), padding=1) + residual.double()
            results = [run(loaded, x, weight, bias, residual, norm, True, tile) for tile in TILES]
    except MemoryError as error:
        return str(error)
    difference = max(float((got.double() - expected).abs().max()) for got in results)
    return "" if difference < 1e-4 else f"its self-test differs from PyTorch's convolution by {difference:.2e}"
