"""1x1 convolutions on the compiled kernel's micro-kernel: the residual blocks' shortcut projections.

Why: a 1x1 convolution is a matrix product of the channels-last image
(pixels x in_channels) with the weights, which is exactly the Winograd
kernel's products stage for one point, with no transforms around it.
PyTorch's took 14-25 G multiply-adds per second on one AVX2 Zen 3 core for
the shortcuts of CodeFormer's residual blocks (64-256 channels at 256-512
px), against about 39 at the core's peak. The residual addition that
follows the shortcut is folded in: the block's other branch is the sums'
starting value, and the result is written over it.

Every argument is checked here before a pointer reaches the C code, which
trusts them; where the kernel cannot be had, ``applies`` says no and
PyTorch's convolution runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .buffers import pool
from .kernel_build import Kernel, kernel, kernel_for

# Below this many pixels per image PyTorch's product is as fast (small images, many channels).
MIN_PIXELS = 64 * 64
# The C code takes channel counts as int and pixel counts as int64: keep them far from 2^31.
_MAX_CHANNELS = 1 << 15


def applies(x: Tensor, weight: Tensor) -> bool:
    """Whether ``conv2d(x, weight)`` (1x1 filters) may run on the kernel: CPU float32, sizes that pay, no autograd."""
    loaded = kernel_for(x, weight, 1)
    if loaded is None or x.shape[-2] * x.shape[-1] < MIN_PIXELS:
        return False
    return x.shape[1] <= _MAX_CHANNELS and weight.shape[0] <= _MAX_CHANNELS and weight.shape[0] % loaded.out_channel_multiple == 0


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None, residual: Tensor | None = None) -> Tensor:
    """``conv2d(x, weight, bias) + residual`` for 1x1 float32 ``weight``, channels-last like PyTorch's result.

    ``residual``, where given, receives the result (it is overwritten and
    returned) when it is a channels-last float32 CPU tensor of the output's
    shape: the caller hands over a tensor it no longer needs, such as the
    other branch of a residual block. Any other residual is added into new
    memory. RuntimeError where the kernel is not available.
    """
    loaded = kernel()
    if loaded is None:
        raise RuntimeError("the compiled kernel is not available here; check pointwise.applies() first")
    return run(loaded, x, weight, bias, residual)


def run(loaded: Kernel, x: Tensor, weight: Tensor, bias: Tensor | None, residual: Tensor | None) -> Tensor:
    """``conv1x1`` on a given kernel (the self-test and the per-CPU-family tests use other builds)."""
    if not isinstance(x, Tensor) or x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu" or x.numel() == 0:
        raise ValueError(f"the input must be a non-empty 4-D float32 CPU tensor (got {_describe(x)})")
    batch, in_channels, height, width = (int(size) for size in x.shape)
    block = loaded.out_channel_multiple
    if not (isinstance(weight, Tensor) and weight.dim() == 4 and tuple(weight.shape[1:]) == (in_channels, 1, 1)):
        raise ValueError(f"weights {_describe(weight)} are not (out_channels, {in_channels}, 1, 1) filters for this input")
    out_channels = int(weight.shape[0])
    if out_channels == 0 or out_channels % block or weight.dtype != torch.float32 or weight.device.type != "cpu":
        raise ValueError(f"weights {_describe(weight)} must be float32 on the CPU, in blocks of {block} output channels")
    if max(in_channels, out_channels) > _MAX_CHANNELS:
        raise ValueError(f"weights {tuple(weight.shape)} are larger than the kernel handles")
    if bias is not None:
        if not isinstance(bias, Tensor) or tuple(bias.shape) != (out_channels,) or bias.device.type != "cpu":
            raise ValueError(f"bias {_describe(bias)} does not fit {out_channels} output channels on the CPU")
        bias = bias.detach().float().contiguous()
    shape = (batch, out_channels, height, width)
    if residual is not None:
        if not isinstance(residual, Tensor) or tuple(residual.shape) != shape:
            raise ValueError(f"residual {_describe(residual)} does not match the output {shape}")
        if residual.dtype != torch.float32 or residual.device.type != "cpu":
            raise ValueError(f"residual must be float32 on the CPU (got {residual.dtype}, {residual.device})")
    x = x.contiguous(memory_format=torch.channels_last)
    # [out_channels / block][in_channels][block]: each block's weights contiguous as the micro-kernel reads them.
    packed = weight.detach().reshape(out_channels // block, block, in_channels).transpose(1, 2).contiguous()
    # Over the residual only where the input is elsewhere: each output row is written before the input rows of
    # the next block of output channels are read.
    if (
        residual is not None
        and residual.is_contiguous(memory_format=torch.channels_last)
        and residual.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    ):
        out = residual.permute(0, 2, 3, 1)
    else:
        if residual is not None:
            residual = residual.contiguous(memory_format=torch.channels_last)
        out = pool.empty((batch, height, width, out_channels))
    status = loaded.pointwise(
        x.data_ptr(),
        batch * height * width,
        in_channels,
        packed.data_ptr(),
        out_channels,
        None if bias is None else bias.data_ptr(),
        None if residual is None else residual.data_ptr(),
        out.data_ptr(),
        max(1, torch.get_num_threads()),
    )
    if status != 0:
        raise MemoryError("the 1x1 convolution could not allocate its working buffers")
    return out.permute(0, 3, 1, 2)


def _describe(value: object) -> object:
    return tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
