"""Winograd 3x3 convolutions on the CPU: the tensor operations over the compiled kernel (``kernel_build``).

Why: almost all of CodeFormer's time on a CPU is 3x3 convolutions, and
PyTorch's (oneDNN) already run them close to the processor's peak; the only
way to be markedly faster is to do fewer multiplications. Winograd's
F(4x4, 3x3) needs 4x fewer, F(6x6, 3x3) 5.1x; done block by block in cache
(see the C file), a 128-channel 256 x 256 convolution takes about a third of
PyTorch's time (37 ms against 112 ms on the AVX2 development machine).

Every argument is checked here before a pointer reaches the C code, which
trusts them. Where the kernel cannot be had (no compiler, a failed build or
self-test, ``CODEFORMER_FAST_CONV=0``), ``applies`` says no and everything
stays on PyTorch's convolutions: same results within float rounding, just
slower. Results differ from a direct convolution by float32 rounding only
(about 1e-5 over the whole network; the tests hold it to the official
network's outputs like the direct path).
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor, nn

from .buffers import pool
from .cpu_caches import last_level_cache_bytes
from .kernel_build import SOURCE, Kernel, available, enabled_by_environment, kernel, kernel_for

__all__ = [
    "SOURCE",
    "Kernel",
    "applies",
    "available",
    "child_self_test",
    "conv3x3",
    "enabled_by_environment",
    "group_norm",
    "kernel",
    "new_moments",
    "normalises",
    "transform_weight",
]

# Below this many output pixels per image the weight transform (made on every call) and the
# few tiles outweigh the savings. GroupNorm + SiLU + convolution, weights not in any cache (as
# in a pass), AMD Zen 4, 2 threads (2026-12-07): 512 channels at 16 x 16, 6.0 ms against
# PyTorch's 7.5 (batch of 4: 10.6 against 22.8), 256 channels 1.3 against 1.7, 128 channels
# 0.46 against 0.49, 64 channels 0.22 against 0.18; at 12 x 12 with 512 channels 4.2 against
# 4.4, at 8 x 8 with 256 channels 1.1 against 0.65. Before the weight transform gathered the
# channels-last weights in L1 (a third of its time), 512 channels at 16 x 16 had taken 11.7 ms
# against 8.0 on an AVX2 Zen 3, and the kernel started at 32 x 32.
MIN_PIXELS = 16 * 16
# Tiles of 6 x 6 outputs (F(6x6, 3x3): 1.78 products per pixel instead of 2.25) from this many
# output pixels per image and up to LARGE_TILE_CHANNELS input channels; elsewhere 4 x 4. On the
# development machine (AVX2) the larger tile took 47 ms against 52 ms for 64 channels at 512 x 512
# and 37 ms against 45 ms for 128 channels at 256 x 256, but 51 ms against 42 ms for 256 channels
# at 128 x 128 and 21 ms against 12 ms at 64 x 64: partial tiles, and 64/36 more transformed
# weights to make and to read once per block of tiles, which many channels make the larger cost.
LARGE_TILE_PIXELS = 128 * 128
LARGE_TILE_CHANNELS = 128
TILES = (4, 6)
# The kernel's shared schedule (see the C file) from this size of transformed weights (18.9 MB for
# 512 -> 256 channels in 4 x 4 tiles). On an AVX2 Zen 3 (32 MiB L3) it took 18 ms against 31 ms for
# 512 channels upsampled to 32 x 32, 14 against 20 ms for 512 -> 256 at 32 x 32 and 28 against
# 45-52 ms for a batch of 4 of them, the same (18 ms) for 256 channels at 64 x 64; with fewer
# channels it was slower (27 against 16 ms for 128 channels at 128 x 128: its group's input and
# products are read from L3 instead of one core's L2). On an AVX-512 Zen 4 (2026-12-07, weights
# not in any cache), 256 channels at 64 x 64 took 10.3 ms against 8.9 with per-thread blocks
# (batch of 4: 37.5 against 30.4), at 32 x 32 the same, 512 channels at 16 x 16 4.8 against 6.0:
# from 16 MiB instead of 8 (which took 256 channels too), one face 1586 ms against 1626.
SHARED_SCHEDULE_BYTES = 16 << 20
# Input channels must be a multiple of this: the kernel reads channels a vector (<= 16 floats) at a time.
CHANNEL_MULTIPLE = 16
# The C code takes sizes as int: keep every size and product it forms far from 2^31.
_MAX_SIDE = 1 << 15



def applies(x: Tensor, weight: Tensor, *, upsample: bool = False) -> bool:
    """Whether ``conv2d(x, weight, padding=1)`` may run on the kernel: CPU float32 with sizes that pay, no autograd."""
    loaded = kernel_for(x, weight, 3)
    if loaded is None or x.shape[-2] * x.shape[-1] * (4 if upsample else 1) < MIN_PIXELS:
        return False
    return x.shape[1] % CHANNEL_MULTIPLE == 0 and weight.shape[0] % loaded.out_channel_multiple == 0


def transform_weight(weight: Tensor, loaded: Kernel | None = None, tile: int = 4) -> Tensor:
    """G g G^T for every filter (float32), for tiles of ``tile`` x ``tile`` outputs (4 or 6), laid out for
    ``loaded`` (default: this CPU's kernel).

    Returns float32 ((tile + 2)^2, out_channels / block, in_channels, block):
    each point's weights in blocks of ``block`` output channels (the kernel's
    ``out_channel_multiple``), contiguous as its micro-kernel reads them.
    ``conv3x3`` makes it on every call instead of keeping it: it is 4x (tile
    4) or 7.1x (tile 6) the size of the weights, and costs 1-2 % of the
    convolution's time at 256-512 px, 10-30 % at 64-32 px with 256 channels
    (one thread, AVX2 Zen 3).
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
    reflect: bool = False,
    tile: int | None = None,
    shared: bool | None = None,
    stream: bool | None = None,
    input_moments: Tensor | None = None,
    output_moments: Tensor | None = None,
) -> Tensor:
    """``conv2d(produce(x), weight, bias, padding=1) (+ residual)`` for 3x3 float32 ``weight``.

    ``produce`` is, in this order, ``silu(norm(x))`` when ``norm`` is given
    and 2x nearest-neighbour upsampling when ``upsample``; both are computed
    on the fly inside the convolution. ``reflect``: the produced input is
    padded by reflection (``F.pad(..., (1, 1, 1, 1), mode="reflect")``, as
    facexlib's ParseNet pads) instead of with zeros; it needs at least 2 x 2
    pixels. The result is channels-last, like
    PyTorch's convolution of a channels-last input. ``tile``: the output
    tile's side, 4 or 6; by default 6 where it is faster (from
    ``LARGE_TILE_PIXELS`` output pixels, up to ``LARGE_TILE_CHANNELS`` input
    channels). ``shared``: the kernel's shared schedule (one group of tiles
    for all threads, each point's weights read once per group; see the C
    file), by default from ``SHARED_SCHEDULE_BYTES`` of transformed weights;
    both schedules compute the same. ``stream``: the output written with
    streaming stores, straight to memory (by default where it is at least
    the size of the last-level cache, ``last_level_cache_bytes``); the same
    values either way. ``output_moments`` (``new_moments(batch, out_channels)``) receives the
    output's GroupNorm statistics, gathered as it is written; given back as
    ``input_moments`` to the convolution whose ``norm`` reads that output, they
    spare its pass over the image. Every argument is checked before a
    pointer reaches the C code (ValueError), which trusts them; RuntimeError
    where the kernel is not available.
    """
    loaded = kernel()
    if loaded is None:
        raise RuntimeError("the Winograd kernel is not available here; check winograd.available() first")
    return run(
        loaded,
        x,
        weight,
        bias,
        residual,
        norm,
        upsample,
        tile,
        shared,
        stream,
        reflect=reflect,
        input_moments=input_moments,
        output_moments=output_moments,
    )


def run(
    loaded: Kernel,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None,
    norm: nn.GroupNorm | None,
    upsample: bool,
    tile: int | None = None,
    shared: bool | None = None,
    stream: bool | None = None,
    *,
    reflect: bool = False,
    input_moments: Tensor | None = None,
    output_moments: Tensor | None = None,
) -> Tensor:
    """``conv3x3`` on a given kernel (the self-test and the per-CPU-family tests use other builds)."""
    batch, in_channels, height, width = _checked_input(x)
    if upsample:
        height, width = 2 * height, 2 * width
    if reflect and min(height, width) < 2:
        raise ValueError(f"reflection padding needs at least 2 x 2 pixels (got {height} x {width})")
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
    _check_moments(input_moments, batch, in_channels, "input_moments")
    _check_moments(output_moments, batch, out_channels, "output_moments")
    x = x.contiguous(memory_format=torch.channels_last)
    if tile is None:
        tile = 6 if height * width >= LARGE_TILE_PIXELS and in_channels <= LARGE_TILE_CHANNELS else 4
    if shared is None:
        shared = uses_shared_schedule(tile, in_channels, out_channels)
    transformed = transform_weight(weight, loaded, tile)
    scale, shift = _norm_affine(loaded, x, norm, input_moments) if norm is not None else (None, None)
    out = pool.empty((batch, height, width, out_channels))
    if stream is None:
        stream = out.numel() * out.element_size() >= last_level_cache_bytes()
    threads = max(1, torch.get_num_threads())
    # Recycled like the output: fresh megabytes from the system would page-fault on every call.
    workspace = pool.empty(
        (loaded.workspace_floats(batch, height, width, in_channels, out_channels, tile, int(shared), threads),)
    )
    status = loaded.conv(
        x.data_ptr(),
        batch,
        height,
        width,
        in_channels,
        int(upsample),
        int(reflect),
        _pointer(scale),
        _pointer(shift),
        transformed.data_ptr(),
        out_channels,
        _pointer(bias),
        _pointer(residual),
        out.data_ptr(),
        tile,
        int(shared),
        int(stream),
        _pointer(output_moments),
        threads,
        workspace.data_ptr(),
    )
    if status != 0:
        raise MemoryError("the Winograd convolution could not allocate memory for its output statistics")
    return out.permute(0, 3, 1, 2)


def normalises(x: Tensor, norm: nn.GroupNorm) -> bool:
    """Whether ``group_norm(x, norm)`` may run on the kernel: a CPU float32 image whose channels fill its vectors."""
    loaded = kernel()
    return (
        loaded is not None
        and isinstance(x, Tensor)
        and x.dim() == 4
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and x.numel() > 0
        and not (torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in norm.parameters())))
        and norm.num_channels == x.shape[1]
        and x.shape[1] % loaded.vector_floats == 0
        and max(x.shape) <= _MAX_SIDE
    )


def group_norm(x: Tensor, norm: nn.GroupNorm) -> Tensor:
    """``norm(x)`` for an ``x`` that ``normalises`` accepts: channels-last, in recycled memory.

    Why: PyTorch's GroupNorm of a channels-last image took 20.7 ms for
    CodeFormer's last one (64 channels at 512 x 512, 2 Zen 4 cores); the
    kernel's statistics (one pass) and one multiply-add per value (PyTorch's
    ``addcmul``, one more) take about a third of that.
    """
    loaded = kernel()
    if loaded is None:
        raise RuntimeError("the Winograd kernel is not available here; check winograd.normalises() first")
    batch, channels, height, width = (int(size) for size in x.shape)
    x = x.contiguous(memory_format=torch.channels_last)
    scale, shift = _norm_affine(loaded, x, norm)
    out = pool.empty((batch, height, width, channels)).permute(0, 3, 1, 2)
    return torch.addcmul(shift.view(batch, channels, 1, 1), x, scale.view(batch, channels, 1, 1), out=out)


def new_moments(batch: int, channels: int) -> Tensor:
    """Room for the GroupNorm statistics of a (batch, channels, ...) image: ``run``'s ``output_moments``.

    float64 (3, batch, channels): per image and channel, the sum of
    ``x - shift``, the sum of its squares, and the shift (one of the image's
    values of that channel, so that a large mean does not cancel the variance away).
    """
    return torch.empty((3, batch, channels), dtype=torch.float64)


def _check_moments(moments: Tensor | None, batch: int, channels: int, name: str) -> None:
    if moments is None:
        return
    expected = (3, batch, channels)
    if not isinstance(moments, Tensor) or tuple(moments.shape) != expected or moments.dtype != torch.float64:
        raise ValueError(f"{name} {_shape(moments)} is not float64 {expected} (see new_moments)")
    if moments.device.type != "cpu" or not moments.is_contiguous():
        raise ValueError(f"{name} must be a contiguous CPU tensor")


def transformed_bytes(tile: int, in_channels: int, out_channels: int) -> int:
    """The size of a layer's transformed weights U: (tile + 2)^2 float32 matrices of in x out channels."""
    return (tile + 2) ** 2 * in_channels * out_channels * 4


def uses_shared_schedule(tile: int, in_channels: int, out_channels: int) -> bool:
    """The schedule ``run`` picks by default: shared from ``SHARED_SCHEDULE_BYTES`` of transformed weights."""
    return transformed_bytes(tile, in_channels, out_channels) >= SHARED_SCHEDULE_BYTES


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


def _norm_affine(loaded: Kernel, x: Tensor, norm: nn.GroupNorm, moments: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """GroupNorm as a per-image, per-channel ``x * scale + shift`` (float32, (B, C) each).

    Statistics as ``nn.GroupNorm`` takes them (biased variance over each
    group's channels and pixels), accumulated and combined in float64 by the
    kernel's ``group_norm_affine``. ``x`` is a
    checked, channels-last input; ``moments``, where given, its statistics
    as the convolution that made it gathered them (``output_moments``),
    which spares a pass over the image.
    """
    batch, channels, height, width = x.shape
    if moments is None:
        moments = new_moments(batch, channels)
        if loaded.moments(x.data_ptr(), batch, height * width, channels, moments.data_ptr(), max(1, torch.get_num_threads())):
            raise MemoryError("the GroupNorm statistics could not allocate their working buffers")
    scale = torch.empty((batch, channels), dtype=torch.float32)
    shift = torch.empty((batch, channels), dtype=torch.float32)
    weight = _affine_parameter(norm.weight if norm.affine else None, channels)
    bias = _affine_parameter(norm.bias if norm.affine else None, channels)
    loaded.norm_affine(
        moments.data_ptr(), batch, channels, norm.num_groups, height * width, float(norm.eps),
        _pointer(weight), _pointer(bias), scale.data_ptr(), shift.data_ptr(),
    )  # fmt: skip
    return scale, shift


def _affine_parameter(parameter: Tensor | None, channels: int) -> Tensor | None:
    """A GroupNorm's weight or bias as the C code reads it: ``channels`` contiguous float32 values on the CPU."""
    if parameter is None:
        return None
    values = parameter.detach().to("cpu", torch.float32).contiguous()
    if tuple(values.shape) != (channels,):
        raise ValueError(f"the GroupNorm's parameters {tuple(values.shape)} do not fit {channels} channels")
    return values


def child_self_test(library: str) -> int:
    """Entry point of the child process: 0 when the library agrees with PyTorch, else prints why and returns 1."""
    problem = self_test(Kernel(ctypes.CDLL(library)))
    if problem:
        print(problem)
        return 1
    return 0


def self_test(loaded: Kernel) -> str:
    """Compare with PyTorch on awkward sizes (partial tiles of both sizes, batch 2, every fused step, both schedules, with
    and without streaming stores, reflection padding; the direct form from and to RGB images;
    for the 1x1 convolution a pixel count that is no multiple of the micro-kernel's rows and more input channels than
    one chunk of weights); '' when it agrees."""
    import torch.nn.functional as F

    from . import direct, pointwise

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
            schedules = [(tile, shared, stream) for tile in TILES for shared in (False, True) for stream in (False, True)]
            results = [run(loaded, x, weight, bias, residual, norm, True, *schedule) for schedule in schedules]
            unit = (x - 1) / 3  # about the normalised inputs' scale, as the absolute bound below assumes
            reflected = F.conv2d(F.pad(unit.double(), (1, 1, 1, 1), mode="reflect"), weight.double(), bias.double())
            results_reflected = [run(loaded, unit, weight, bias, None, None, False, tile, reflect=True) for tile in TILES]
            pixels = torch.randn(2, 272, 5, 7, generator=generator)
            projection = torch.randn(2 * out_channels, 272, 1, 1, generator=generator) / 16
            other_branch = torch.randn(2, 2 * out_channels, 5, 7, generator=generator)
            expected_1x1 = F.conv2d(pixels.double(), projection.double(), bias.repeat(2).double()) + other_branch.double()
            in_place = other_branch.contiguous(memory_format=torch.channels_last)
            result_1x1 = pointwise.run(loaded, pixels, projection, bias.repeat(2), in_place)
            # The direct form, both ways: an RGB image in, and one out (a partial group of pixels at each row's end).
            rgb = torch.randn(2, 3, 9, 14, generator=generator)
            to_rgb = torch.randn(3, channels, 3, 3, generator=generator) / 12
            direct_cases = [(rgb, weight[:, :3].contiguous()), (x, to_rgb)]
            expected_direct = [F.conv2d(image.double(), filters.double(), padding=1) for image, filters in direct_cases]
            results_direct = [direct.run(loaded, image, filters, None) for image, filters in direct_cases]
    except MemoryError as error:
        return str(error)
    difference = max(float((got.double() - expected).abs().max()) for got in results)
    difference = max([difference] + [float((got.double() - reflected).abs().max()) for got in results_reflected])
    if difference >= 1e-4:
        return f"its self-test differs from PyTorch's convolution by {difference:.2e}"
    difference = float((result_1x1.double() - expected_1x1).abs().max())
    if difference >= 1e-4:
        return f"its self-test differs from PyTorch's 1x1 convolution by {difference:.2e}"
    difference = max(float((got.double() - want).abs().max()) for got, want in zip(results_direct, expected_direct, strict=True))
    return "" if difference < 1e-4 else f"its self-test differs from PyTorch's direct convolution by {difference:.2e}"
