"""Faster stand-ins for the network's layers: the same parameters, the same results within float rounding.

``accelerate`` swaps them in for the pure layers of ``network.arch``; each
adopts the original layer's parameters (same objects, same names, so the
state dict does not change) and computes the same function faster:

- 3x3 convolutions on the Winograd kernel where it applies (CPU float32,
  large images), with the steps around them folded in: GroupNorm + SiLU
  before, 2x upsampling before, the residual addition after; the first
  convolution of each residual block gathers its output's statistics for
  the block's second GroupNorm as it writes it;
- the residual blocks' 1x1 shortcut projections on the same kernel's
  products (``pointwise``), the block's other branch added in place;
- outputs of 1 MiB and more written into recycled memory (``buffers``), on
  the CPU in float32: the kernel's, the encoder's padded inputs to its
  stride-2 convolutions and the SFT's concatenations;
- elsewhere, the decoder's "upsample then convolve" in sub-pixel form
  (``subpixel.upsample2x_conv3x3``: 2.25x fewer multiply-adds, no 4x copy),
  and activations, residual additions and the SFT modulation in place (on
  the CPU, fresh large allocations cost page faults).

The Winograd kernel transforms the weights on every call (1-2 % of the
convolution's time at 256-512 px, 10-30 % of a 256-channel layer's at 64-32
px), so nothing beside the parameters is kept and a changed weight is always
the one used; keeping them for the 32 px layers alone would hold about 190 MB
beside the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.arch import Downsample, ResnetBlock, SFTFusion, Upsample
from . import direct, pointwise, winograd
from .buffers import pool, poolable
from .subpixel import upsample2x_conv3x3


def is_plain_conv3x3(module: nn.Module) -> bool:
    """Whether ``module`` is exactly ``nn.Conv2d(in, out, 3, padding=1)`` (zero padding, no stride, dilation or
    groups): the one convolution the kernel computes. Subclasses may compute something else, so they are not."""
    return _is_plain_conv(module, 3)


def is_plain_conv1x1(module: nn.Module) -> bool:
    """Whether ``module`` is exactly ``nn.Conv2d(in, out, 1)`` (no stride, padding, dilation or groups)."""
    return _is_plain_conv(module, 1)


def _is_plain_conv(module: nn.Module, size: int) -> bool:
    """``nn.Conv2d(in, out, size, padding=size // 2)`` itself, padded with zeros where it pads at all."""
    padding = size // 2
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (size, size)
        and module.stride == (1, 1)
        and module.padding == (padding, padding)
        and module.dilation == (1, 1)
        and module.groups == 1
        and (padding == 0 or module.padding_mode == "zeros")
    )


class _KernelConv(nn.Conv2d):
    """A plain ``size`` x ``size`` convolution whose forward runs on the compiled kernel where it applies."""

    size: int

    def __init__(self, in_channels: int, out_channels: int, *, use_winograd: bool = True) -> None:
        super().__init__(in_channels, out_channels, self.size, padding=self.size // 2)
        self.use_winograd = use_winograd

    @classmethod
    def adopt(cls, conv: nn.Conv2d, *, use_winograd: bool) -> _KernelConv:
        """One holding ``conv``'s own parameters."""
        if not _is_plain_conv(conv, cls.size):
            raise ValueError(f"{conv} is not a plain {cls.size}x{cls.size} convolution")
        with torch.device("meta"):
            fast = cls(conv.in_channels, conv.out_channels, use_winograd=use_winograd)
        fast.weight, fast.bias = conv.weight, conv.bias
        return fast


def _plus(out: Tensor, residual: Tensor | None) -> Tensor:
    """``out + residual`` on PyTorch's path: in place where no gradient is recorded."""
    if residual is None:
        return out
    return out + residual if torch.is_grad_enabled() else out.add_(residual)


class FastConv3x3(_KernelConv):
    """``nn.Conv2d(in, out, 3, padding=1)`` that runs on the Winograd kernel where that is faster, and on the
    kernel's direct form where one side has few channels (an RGB image in or out: ``direct``).

    ``forward(x, residual, norm=, upsample=)`` computes
    ``conv(upsample(silu(norm(x)))) + residual`` with each step optional.
    ``use_winograd`` is set by ``accelerate``.
    """

    size = 3

    def forward(
        self,
        x: Tensor,
        residual: Tensor | None = None,
        *,
        norm: nn.GroupNorm | None = None,
        upsample: bool = False,
        input_moments: Tensor | None = None,
    ) -> Tensor:
        """``input_moments``: ``x``'s statistics from ``forward_with_moments``, for ``norm`` (else it takes them itself)."""
        if self.use_winograd and winograd.applies(x, self.weight, upsample=upsample) and not _tracks_gradient(residual):
            return winograd.conv3x3(
                x, self.weight, self.bias, residual, norm=norm, upsample=upsample, input_moments=input_moments
            )
        if norm is None and not upsample and self.use_winograd and direct.applies(x, self.weight):
            return _plus(direct.conv3x3(x, self.weight, self.bias), residual)
        if norm is not None:
            x = F.silu(norm(x), inplace=not torch.is_grad_enabled())
        return _plus(upsample2x_conv3x3(x, self.weight, self.bias) if upsample else super().forward(x), residual)

    def forward_with_moments(self, x: Tensor, *, norm: nn.GroupNorm | None = None) -> tuple[Tensor, Tensor | None]:
        """``forward(x, norm=norm)`` and, where it ran on the kernel, its output's GroupNorm statistics (else None).

        The kernel gathers them as it writes the output, so that the next
        GroupNorm, which reads this output, needs no pass of its own over it.
        """
        if not (self.use_winograd and winograd.applies(x, self.weight)):
            return self.forward(x, norm=norm), None
        moments = winograd.new_moments(x.shape[0], self.out_channels)
        return winograd.conv3x3(x, self.weight, self.bias, norm=norm, output_moments=moments), moments


class FastConv1x1(_KernelConv):
    """``nn.Conv2d(in, out, 1)`` that runs on the compiled kernel's products where it applies.

    ``forward(x, residual)`` computes ``conv(x) + residual``; on the kernel
    the sum is written over ``residual`` (a tensor the caller is done with).
    ``use_winograd`` (the kernel switch, named as FastConv3x3's) is set by ``accelerate``.
    """

    size = 1

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.use_winograd and pointwise.applies(x, self.weight) and not _tracks_gradient(residual):
            return pointwise.conv1x1(x, self.weight, self.bias, residual)
        return _plus(super().forward(x), residual)


def is_plain_group_norm(module: nn.Module) -> bool:
    """Whether ``module`` is ``nn.GroupNorm`` itself (a subclass may compute something else)."""
    return type(module) is nn.GroupNorm


class FastGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with its statistics and affine map from the compiled kernel where it applies
    (``winograd.group_norm``), into recycled channels-last memory. Used where a GroupNorm stands on its own (the
    encoder's and generator's last, the attention blocks'); the residual blocks' are folded into their
    convolutions. ``use_winograd`` (the kernel switch, named as the convolutions') is set by ``accelerate``."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *, use_winograd: bool = True):
        super().__init__(num_groups, num_channels, eps, affine)
        self.use_winograd = use_winograd

    @classmethod
    def adopt(cls, norm: nn.GroupNorm, *, use_winograd: bool) -> FastGroupNorm:
        """One holding ``norm``'s own parameters."""
        if not is_plain_group_norm(norm):
            raise ValueError(f"{norm} is not a plain GroupNorm")
        with torch.device("meta"):
            fast = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, use_winograd=use_winograd)
        fast.weight, fast.bias = norm.weight, norm.bias
        return fast

    def forward(self, x: Tensor) -> Tensor:
        if self.use_winograd and winograd.normalises(x, self):
            return winograd.group_norm(x, self)
        return super().forward(x)


def _tracks_gradient(residual: Tensor | None) -> bool:
    """Whether autograd must see ``residual``'s addition: the kernel's results carry no gradient."""
    return residual is not None and torch.is_grad_enabled() and residual.requires_grad


class FastResnetBlock(nn.Module):
    """``ResnetBlock`` with GroupNorm + SiLU folded into each convolution and the residual into the second (or,
    where a 1x1 convolution projects the shortcut, into that projection)."""

    def __init__(self, block: ResnetBlock, *, use_winograd: bool) -> None:
        super().__init__()
        # Registered in ResnetBlock's order, so the state dict reads the same.
        self.norm1 = block.norm1
        self.conv1 = FastConv3x3.adopt(block.conv1, use_winograd=use_winograd)
        self.norm2 = block.norm2
        self.conv2 = FastConv3x3.adopt(block.conv2, use_winograd=use_winograd)
        self.conv_out = None if block.conv_out is None else FastConv1x1.adopt(block.conv_out, use_winograd=use_winograd)

    def forward(self, x: Tensor) -> Tensor:
        h, moments = self.conv1.forward_with_moments(x, norm=self.norm1)
        if self.conv_out is None:
            return self.conv2(h, x, norm=self.norm2, input_moments=moments)
        return self.conv_out(x, self.conv2(h, norm=self.norm2, input_moments=moments))


class FastUpsample(nn.Module):
    """``Upsample`` without the 4x larger upsampled copy: the kernel or the sub-pixel form reads the source."""

    def __init__(self, upsample: Upsample, *, use_winograd: bool) -> None:
        super().__init__()
        self.conv = FastConv3x3.adopt(upsample.conv, use_winograd=use_winograd)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, upsample=True)


class FastDownsample(nn.Module):
    """``Downsample`` with its one-pixel right and bottom zero padding made in recycled memory, channels-last."""

    def __init__(self, downsample: Downsample) -> None:
        super().__init__()
        self.conv = downsample.conv

    def forward(self, x: Tensor) -> Tensor:
        if not poolable(x):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        batch, channels, height, width = x.shape
        padded = pool.channels_last(batch, channels, height + 1, width + 1)
        padded[:, :, :height, :width].copy_(x)
        padded[:, :, height].zero_()
        padded[:, :, :height, width].zero_()
        return self.conv(padded)


class FastSFTFusion(nn.Module):
    """``SFTFusion``, ``dec + w * (dec * scale + shift)`` computed in place on the freshly made scale."""

    def __init__(self, fusion: SFTFusion, *, use_winograd: bool) -> None:
        super().__init__()
        self.encode_enc = FastResnetBlock(fusion.encode_enc, use_winograd=use_winograd)
        self.scale = _fast_sequence(fusion.scale, use_winograd)
        self.shift = _fast_sequence(fusion.shift, use_winograd)

    def forward(self, encoder_feature: Tensor, decoder_feature: Tensor, w: float | Tensor) -> Tensor:
        joint = self.encode_enc(_concatenate_channels(encoder_feature, decoder_feature))
        if torch.is_grad_enabled():
            return decoder_feature + w * (decoder_feature * self.scale(joint) + self.shift(joint))
        return self.scale(joint).mul_(decoder_feature).add_(self.shift(joint)).mul_(w).add_(decoder_feature)


def _concatenate_channels(first: Tensor, second: Tensor) -> Tensor:
    """``torch.cat([first, second], dim=1)``, into recycled channels-last memory where it may be."""
    if not (poolable(first) and poolable(second)):
        return torch.cat([first, second], dim=1)
    batch, channels, height, width = first.shape
    joint = pool.channels_last(batch, channels + second.shape[1], height, width)
    return torch.cat([first, second], dim=1, out=joint)


def _fast_sequence(sequence: nn.Sequential, use_winograd: bool) -> nn.Sequential:
    """The SFT branch (conv, LeakyReLU, conv) with fast convolutions and an in-place activation."""
    layers: list[nn.Module] = []
    for layer in sequence:
        if isinstance(layer, nn.Conv2d):
            layers.append(FastConv3x3.adopt(layer, use_winograd=use_winograd))
        elif isinstance(layer, nn.LeakyReLU):
            layers.append(nn.LeakyReLU(layer.negative_slope, inplace=True))
        else:
            layers.append(layer)
    return nn.Sequential(*layers)
