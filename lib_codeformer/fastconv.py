"""Winograd 3x3 convolutions on the CPU, compiled from ``csrc/winograd.c`` on first use.

Why: almost all of CodeFormer's time on a CPU is 3x3 convolutions, and
PyTorch's (oneDNN) already run them close to the processor's peak; the only
way to be markedly faster is to do fewer multiplications. Winograd's
F(4x4, 3x3) needs 4x fewer; done block by block in cache (see the C file),
a 128-channel 256 x 256 convolution takes about half the time.

The kernel is a small C file built with the system's C compiler (``cc``,
``gcc`` or ``clang``; ``$CC`` wins) into the cache folder, once per source,
compiler and CPU, and loaded with ctypes; it needs no PyTorch headers and
builds in well under a second. Where no compiler is found, the build fails,
or the built kernel does not match PyTorch's convolution on a self-test,
everything stays on PyTorch's convolutions, with one log line saying why:
same results within float rounding, just slower. ``CODEFORMER_FAST_CONV=0`` (or
``set_enabled(False)``) turns it off.

Results differ from a direct convolution by float32 rounding only (about
1e-5 over the whole network; the tests hold it to the official network's
outputs like the direct path).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "winograd.c"
ENV_SWITCH = "CODEFORMER_FAST_CONV"
# Below this many output pixels per image a layer's transformed weights (4x the
# weights, read from memory on every call) outweigh its pixels: on the development
# machine, also using it from 32 x 32 up was no faster over the whole network
# (1.64-1.71 s either way) but kept 407 MiB of transformed weights instead of 87 MiB.
MIN_PIXELS = 128 * 128
# The kernel's vector width (floats) from which it is used: AVX-512 (16) and AVX2 (8)
# builds were measured faster than PyTorch's convolutions over the whole network
# (1.6 s and 2.2 s against 2.4 s, on an AVX-512 CPU whose PyTorch uses AVX-512);
# the 4-float build (SSE, NEON) took 3.8 s there, so elsewhere PyTorch's are kept.
MIN_VECTOR_FLOATS = 8
# Winograd F(4x4, 3x3) filter transform G (6 x 3).
_G = (
    (1 / 4, 0.0, 0.0),
    (-1 / 6, -1 / 6, -1 / 6),
    (-1 / 6, 1 / 6, -1 / 6),
    (1 / 24, 1 / 12, 1 / 6),
    (1 / 24, -1 / 12, 1 / 6),
    (0.0, 0.0, 1.0),
)

_lock = threading.Lock()
_state: dict[str, object] = {"enabled": True}


class _Kernel:
    """The loaded library's two entry points and the output-channel multiple it requires."""

    def __init__(self, library: ctypes.CDLL) -> None:
        pointer, integer, int64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64
        self.conv = library.winograd_conv3x3
        self.conv.argtypes = [pointer, integer, integer, integer, integer, integer, pointer, pointer, pointer, integer]
        self.conv.argtypes += [pointer, pointer, pointer, integer]
        self.conv.restype = integer
        self.moments = library.channel_moments
        self.moments.argtypes = [pointer, integer, int64, integer, pointer, integer]
        self.moments.restype = integer
        self.out_channel_multiple = int(library.winograd_co_block())
        self.vector_floats = int(library.winograd_vector_floats())


def set_enabled(enabled: bool) -> None:
    """Turn the fast path on or off for this process (the WebUI setting, ``--no-fast-conv``, benchmarks, tests).

    ``CODEFORMER_FAST_CONV=0`` in the environment keeps it off whatever this says.
    """
    _state["enabled"] = enabled


def is_enabled() -> bool:
    return bool(_state["enabled"]) and os.environ.get(ENV_SWITCH, "1") != "0"


def available() -> bool:
    """Whether the fast path is on and its kernel built, loaded and passed its self-test."""
    return is_enabled() and _kernel() is not None


def supports(x: Tensor, weight: Tensor, *, upsample: bool = False) -> bool:
    """Whether ``conv2d(x, weight, padding=1)`` may run here: CPU float32, no autocast or autograd, sizes that pay."""
    if not is_enabled() or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):  # a bf16 run stays bf16 throughout, as PyTorch's convolutions make it
        return False
    pixels = x.shape[-2] * x.shape[-1] * (4 if upsample else 1)
    if x.dim() != 4 or weight.shape[2:] != (3, 3) or pixels < MIN_PIXELS:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    kernel = _kernel()
    return kernel is not None and x.shape[1] % 16 == 0 and weight.shape[0] % kernel.out_channel_multiple == 0


def transform_weight(weight: Tensor, block: int | None = None) -> Tensor:
    """G g G^T for every filter, computed in float64, laid out for the kernel.

    Returns float32 (36, out_channels / block, in_channels, block): each
    point's weights in blocks of ``block`` output channels (the kernel's
    ``out_channel_multiple``, the default), contiguous as its micro-kernel
    reads them.
    """
    if block is None:
        kernel = _kernel()
        assert kernel is not None, "transform_weight called without the kernel"
        block = kernel.out_channel_multiple
    out_channels, in_channels = weight.shape[:2]
    g = torch.tensor(_G, dtype=torch.float64)
    transformed = torch.einsum("ij,ocjk,lk->ilco", g, weight.detach().to("cpu", torch.float64), g)
    blocked = transformed.reshape(36, in_channels, out_channels // block, block).permute(0, 2, 1, 3)
    return blocked.to(torch.float32).contiguous()


def conv3x3(
    x: Tensor,
    transformed: Tensor,
    bias: Tensor | None,
    residual: Tensor | None = None,
    *,
    norm: nn.GroupNorm | None = None,
    upsample: bool = False,
) -> Tensor:
    """``conv2d(produce(x), weight, bias, padding=1) (+ residual)`` from ``transform_weight(weight)``.

    ``produce`` is, in this order, ``silu(norm(x))`` when ``norm`` is given
    and 2x nearest-neighbour upsampling when ``upsample``; both are computed
    on the fly inside the convolution. The result is channels-last, like
    PyTorch's convolution of a channels-last input. Call only where
    ``supports`` said yes.
    """
    kernel = _kernel()
    assert kernel is not None, "conv3x3 called without checking supports()"
    return _run(kernel, x, transformed, bias, residual, norm, upsample)


def _run(
    kernel: _Kernel,
    x: Tensor,
    transformed: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    norm: nn.GroupNorm | None,
    upsample: bool,
) -> Tensor:
    batch, in_channels, height, width = x.shape
    if upsample:
        height, width = 2 * height, 2 * width
    block = kernel.out_channel_multiple
    out_channels = transformed.shape[1] * block if transformed.dim() == 4 else 0
    # The C code trusts its pointers: every size it will read is checked here.
    expected = (36, out_channels // block, in_channels, block)
    if transformed.shape != expected or transformed.dtype != torch.float32 or not transformed.is_contiguous():
        raise ValueError(f"transformed weights {tuple(transformed.shape)} are not laid out for this kernel: {expected}")
    if bias is not None and bias.shape != (out_channels,):
        raise ValueError(f"bias {tuple(bias.shape)} does not fit {out_channels} output channels")
    if residual is not None and (residual.shape != (batch, out_channels, height, width) or residual.dtype != torch.float32):
        raise ValueError(f"residual {tuple(residual.shape)} does not match the output {(batch, out_channels, height, width)}")
    if norm is not None and norm.num_channels != in_channels:
        raise ValueError(f"GroupNorm over {norm.num_channels} channels given an input of {in_channels}")
    x = x.contiguous(memory_format=torch.channels_last)
    scale, shift = _norm_affine(kernel, x, norm) if norm is not None else (None, None)
    bias = None if bias is None else bias.detach().float().contiguous()
    if residual is not None:
        residual = residual.contiguous(memory_format=torch.channels_last)
    out = torch.empty((batch, height, width, out_channels), dtype=torch.float32)
    status = kernel.conv(
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
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("the Winograd convolution could not allocate its working buffers")
    return out.permute(0, 3, 1, 2)


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _norm_affine(kernel: _Kernel, x: Tensor, norm: nn.GroupNorm) -> tuple[Tensor, Tensor]:
    """GroupNorm as a per-image, per-channel ``x * scale + shift`` (float32, (B, C) each).

    Statistics as ``nn.GroupNorm`` takes them (biased variance over each
    group's channels and pixels), accumulated in float64.
    """
    batch, channels, height, width = x.shape
    moments = torch.empty((3, batch, channels), dtype=torch.float64)
    if kernel.moments(x.data_ptr(), batch, height * width, channels, moments.data_ptr(), torch.get_num_threads()):
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
    weight = norm.weight.detach().double() if norm.affine else 1.0
    bias = norm.bias.detach().double() if norm.affine else 0.0
    scale = inverse_std * weight
    return scale.float().contiguous(), (bias - mean * scale).float().contiguous()


def _kernel() -> _Kernel | None:
    if "kernel" not in _state:
        with _lock:
            if "kernel" not in _state:
                _state["kernel"] = _build_and_check()
    return _state["kernel"]  # type: ignore[return-value]


def _build_and_check() -> _Kernel | None:
    try:
        kernel = _load(_build())
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        logger.info("Fast (Winograd) convolutions unavailable, using PyTorch's: %s", error)
        return None
    problem = _self_test(kernel)
    if problem:
        logger.warning("Fast (Winograd) convolutions disabled: %s. Using PyTorch's convolutions.", problem)
        return None
    if kernel.vector_floats < MIN_VECTOR_FLOATS:
        logger.info("Fast (Winograd) convolutions not used: this CPU has no AVX2 or AVX-512, where they were measured faster.")
        return None
    return kernel


def _load(library: Path) -> _Kernel:
    """Load a built library whose bytes are still those written by the build.

    A damaged file must not reach the loader (a truncated shared library
    crashes the process with SIGBUS rather than failing to load): it is
    removed and built afresh.
    """
    if _digest_file(library).exists() and _digest_file(library).read_text() == _sha256(library):
        return _Kernel(ctypes.CDLL(str(library)))
    logger.info("Rebuilding %s: it is not the file the build wrote", library)
    library.unlink(missing_ok=True)
    return _Kernel(ctypes.CDLL(str(_build())))


def _digest_file(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise RuntimeError("no C compiler found (set $CC, or install gcc or clang)")


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


# Tuned for the CPU it runs on first; plain optimisation where the compiler has no -march=native.
_FLAG_SETS = (["-O3", "-march=native"], ["-O3"])
_COMMON_FLAGS = ["-shared", "-fPIC", "-pthread"]


def compile_command(compiler: str, flags: list[str], output: Path) -> list[str]:
    """The command that builds the kernel's shared library with these optimisation flags."""
    return [compiler, *flags, *_COMMON_FLAGS, str(SOURCE), "-o", str(output)]


def _build() -> Path:
    from .download import default_cache_dir  # here: download imports weights, which imports the network

    compiler = _compiler()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    source = SOURCE.read_bytes()
    recipe = [source, repr((_FLAG_SETS, _COMMON_FLAGS)).encode(), version.encode(), _cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join(recipe)).hexdigest()[:16]
    suffix = ".dll" if sys.platform == "win32" else ".so"
    folder = default_cache_dir() / "kernels"
    target = folder / f"winograd-{key}{suffix}"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / target.name
        for flags in _FLAG_SETS:
            result = subprocess.run(compile_command(compiler, flags, built), capture_output=True, text=True, timeout=300)
            if result.returncode == 0:
                digest = Path(scratch) / _digest_file(target).name
                digest.write_text(_sha256(built))
                os.replace(digest, _digest_file(target))
                os.replace(built, target)
                logger.info("Built the fast convolution kernel: %s", target)
                return target
            errors.append(result.stderr.strip()[-500:])
    raise RuntimeError(f"{compiler} could not build {SOURCE.name}: {errors[-1]}")


def _self_test(kernel: _Kernel) -> str:
    """Compare with PyTorch on awkward sizes (partial tiles, batch 2, every fused step); '' when it agrees."""
    generator = torch.Generator().manual_seed(0)
    channels, out_channels = 32, kernel.out_channel_multiple
    x = torch.randn(2, channels, 17, 18, generator=generator) * 3 + 1
    weight = torch.randn(out_channels, channels, 3, 3, generator=generator) / 12
    bias = torch.randn(out_channels, generator=generator)
    residual = torch.randn(2, out_channels, 34, 36, generator=generator)
    norm = nn.GroupNorm(8, channels, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-0.5, 0.5, generator=generator)
    try:
        with torch.inference_mode():
            got = _run(kernel, x, transform_weight(weight, kernel.out_channel_multiple), bias, residual, norm, True)
            produced = F.interpolate(F.silu(norm(x.double())), scale_factor=2.0, mode="nearest")
            expected = F.conv2d(produced, weight.double(), bias.double(), padding=1) + residual.double()
    except MemoryError as error:
        return str(error)
    difference = float((got.double() - expected).abs().max())
    return "" if difference < 1e-4 else f"its self-test differs from PyTorch's convolution by {difference:.2e}"
