"""3x3 convolutions of layers with few channels on one side, computed directly on the compiled kernel.

Why: Winograd's tiles need many channels on both sides (the kernel takes
input channels in multiples of 16 and output channels in blocks of its
vector), and PyTorch's convolutions (oneDNN) run their vectors along the
channels too, so both do badly on a network's first layer, from an RGB image
(3 -> 64 channels in CodeFormer), and its last, to one (64 -> 3): at 512 x 512
PyTorch took 19.5 and 24.8 ms for them on 2 AMD Zen 4 cores, 0.2 and 0.16 of
the peak multiply-add rate (its other convolutions reach 0.6-0.9). The kernel computes them
directly (9 multiply-adds per pixel, input and output channel), with its
vectors along the side that has many channels: the output channels with few
inputs, the input channels with few outputs.

Every argument is checked here before a pointer reaches the C code; where
the kernel cannot be had, ``applies`` says no and PyTorch's convolution runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .buffers import pool
from .cpu_caches import last_level_cache_bytes
from .kernel_build import Kernel, kernel, kernel_for

# Input channels from which the Winograd kernel takes a layer instead (its multiple).
WINOGRAD_CHANNELS = 16
# Below this many output pixels per image PyTorch's convolution is kept (as for the Winograd kernel).
MIN_PIXELS = 16 * 16
# The C code takes sizes as int: keep every size and product it forms far from 2^31.
_MAX_SIDE = 1 << 15


def applies(x: Tensor, weight: Tensor) -> bool:
    """Whether ``conv2d(x, weight, padding=1)`` may run here: CPU float32, no autograd, few channels on one side
    (fewer than 16 inputs and outputs in the kernel's blocks, or at most ``Kernel.few_outputs`` outputs and inputs
    in whole vectors), images of ``MIN_PIXELS`` and more."""
    loaded = kernel_for(x, weight, 3)
    if loaded is None or x.shape[-2] * x.shape[-1] < MIN_PIXELS or max(x.shape) > _MAX_SIDE:
        return False
    return _form(loaded, int(x.shape[1]), int(weight.shape[0])) is not None


def _form(loaded: Kernel, in_channels: int, out_channels: int) -> str | None:
    """'few inputs', 'few outputs', or None where neither form takes these channel counts."""
    if in_channels < WINOGRAD_CHANNELS and out_channels % loaded.out_channel_multiple == 0:
        return "few inputs"
    if out_channels <= loaded.few_outputs and in_channels % loaded.vector_floats == 0:
        return "few outputs"
    return None


def conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv2d(x, weight, bias, padding=1)`` for a layer ``applies`` accepts; channels-last like PyTorch's result.

    RuntimeError where the kernel is not available, ValueError for tensors it does not take.
    """
    loaded = kernel()
    if loaded is None:
        raise RuntimeError("the compiled kernel is not available here; check direct.applies() first")
    return run(loaded, x, weight, bias)


def run(loaded: Kernel, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``conv3x3`` on a given kernel (the self-test and the per-CPU-family tests use other builds)."""
    if not isinstance(x, Tensor) or x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0:
        raise ValueError(f"the input must be a non-empty 4-D float32 CPU tensor (got {_describe(x)})")
    batch, in_channels, height, width = (int(size) for size in x.shape)
    if max(batch, in_channels, height, width) > _MAX_SIDE:
        raise ValueError(f"the input {tuple(x.shape)} is larger than the kernel handles")
    if not (isinstance(weight, Tensor) and weight.dim() == 4 and tuple(weight.shape[1:]) == (in_channels, 3, 3)):
        raise ValueError(f"weights {_describe(weight)} are not (out_channels, {in_channels}, 3, 3) filters for this input")
    if weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(f"weights must be float32 on the CPU (got {weight.dtype}, {weight.device})")
    out_channels = int(weight.shape[0])
    form = _form(loaded, in_channels, out_channels) if 0 < out_channels <= _MAX_SIDE else None
    if form is None:
        raise ValueError(f"{in_channels} -> {out_channels} channels is no layer with few channels on one side")
    if bias is not None:
        if not isinstance(bias, Tensor) or tuple(bias.shape) != (out_channels,) or bias.device.type != "cpu":
            raise ValueError(f"bias {_describe(bias)} does not fit {out_channels} output channels on the CPU")
        bias = bias.detach().float().contiguous()
    x = x.contiguous(memory_format=torch.channels_last)
    weight = weight.detach()
    if form == "few inputs":
        # [out_channels / block][tap][in_channels][block]: each block's weights per tap as the micro-kernel reads them.
        block = loaded.out_channel_multiple
        packed = weight.reshape(out_channels // block, block, in_channels, 9).permute(0, 3, 2, 1).contiguous()
    else:
        packed = weight.permute(0, 2, 3, 1).contiguous()  # [out_channels][tap][in_channels]
    out = pool.empty((batch, height, width, out_channels))
    stream = out.numel() * out.element_size() >= last_level_cache_bytes()  # as the Winograd kernel's outputs
    status = loaded.direct(
        x.data_ptr(), batch, height, width, in_channels, packed.data_ptr(), out_channels,
        None if bias is None else bias.data_ptr(), out.data_ptr(), int(stream), max(1, torch.get_num_threads()),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("the direct convolution could not allocate its working rows")
    return out.permute(0, 3, 1, 2)


def _describe(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
