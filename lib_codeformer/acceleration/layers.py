"""Faster stand-ins for the network's layers: the same parameters, the same results within float rounding.

``accelerate`` swaps them in for the pure layers of ``network.arch``; each
adopts the original layer's parameters (same objects, same names, so the
state dict does not change) and computes the same function faster:

- 3x3 convolutions on the Winograd kernel where it applies (CPU float32,
  large images), with the steps around them folded in: GroupNorm + SiLU
  before, 2x upsampling before, the residual addition after;
- elsewhere, the decoder's "upsample then convolve" in sub-pixel form
  (``subpixel.upsample2x_conv3x3``: 2.25x fewer multiply-adds, no 4x copy),
  and activations, residual additions and the SFT modulation in place (on
  the CPU, fresh large allocations cost page faults).

The Winograd kernel needs the weights transformed (4x their size). That copy
is the layer's own state: computed on first use, recomputed when the weight
is replaced or changed in place, dropped on ``.to()``/``.half()``/... (it is
only ever used on the CPU in float32) and freed with the layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..network.arch import ResnetBlock, SFTFusion, Upsample
from . import winograd
from .subpixel import upsample2x_conv3x3


class FastConv3x3(nn.Conv2d):
    """``nn.Conv2d(in, out, 3, padding=1)`` that runs on the Winograd kernel where that is faster.

    ``forward(x, residual, norm=, upsample=)`` computes
    ``conv(upsample(silu(norm(x)))) + residual`` with each step optional.
    ``use_winograd`` is set by ``accelerate``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, use_winograd: bool = True) -> None:
        super().__init__(in_channels, out_channels, 3, padding=1)
        self.use_winograd = use_winograd
        self._transformed: tuple[Tensor, int, Tensor] | None = None  # (weight it was made from, its version, transformed)

    @classmethod
    def adopt(cls, conv: nn.Conv2d, *, use_winograd: bool) -> FastConv3x3:
        """A FastConv3x3 holding ``conv``'s own parameters."""
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError(f"{conv} is not a plain 3x3 convolution")
        with torch.device("meta"):
            fast = cls(conv.in_channels, conv.out_channels, use_winograd=use_winograd)
        fast.weight, fast.bias = conv.weight, conv.bias
        return fast

    def forward(
        self, x: Tensor, residual: Tensor | None = None, *, norm: nn.GroupNorm | None = None, upsample: bool = False
    ) -> Tensor:
        if self.use_winograd and winograd.applies(x, self.weight, upsample=upsample):
            return winograd.conv3x3(x, self._transformed_weight(), self.bias, residual, norm=norm, upsample=upsample)
        if norm is not None:
            x = F.silu(norm(x), inplace=not torch.is_grad_enabled())
        out = upsample2x_conv3x3(x, self.weight, self.bias) if upsample else super().forward(x)
        if residual is None:
            return out
        return out + residual if torch.is_grad_enabled() else out.add_(residual)

    def _transformed_weight(self) -> Tensor:
        weight = self.weight
        # The version counter counts in-place changes; tensors made under inference_mode have none.
        version = -1 if weight.is_inference() else weight._version
        cached = self._transformed
        if cached is None or cached[0] is not weight or cached[1] != version:
            self._transformed = (weight, version, winograd.transform_weight(weight))
        return self._transformed[2]

    def _apply(self, *args, **kwargs):
        self._transformed = None  # only ever valid for CPU float32 weights: made again where it is used
        return super()._apply(*args, **kwargs)


class FastResnetBlock(nn.Module):
    """``ResnetBlock`` with GroupNorm + SiLU folded into each convolution and the residual into the second."""

    def __init__(self, block: ResnetBlock, *, use_winograd: bool) -> None:
        super().__init__()
        # Registered in ResnetBlock's order, so the state dict reads the same.
        self.norm1 = block.norm1
        self.conv1 = FastConv3x3.adopt(block.conv1, use_winograd=use_winograd)
        self.norm2 = block.norm2
        self.conv2 = FastConv3x3.adopt(block.conv2, use_winograd=use_winograd)
        self.conv_out = block.conv_out

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x, norm=self.norm1)
        shortcut = x if self.conv_out is None else self.conv_out(x)
        return self.conv2(h, shortcut, norm=self.norm2)


class FastUpsample(nn.Module):
    """``Upsample`` without the 4x larger upsampled copy: the kernel or the sub-pixel form reads the source."""

    def __init__(self, upsample: Upsample, *, use_winograd: bool) -> None:
        super().__init__()
        self.conv = FastConv3x3.adopt(upsample.conv, use_winograd=use_winograd)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x, upsample=True)


class FastSFTFusion(nn.Module):
    """``SFTFusion``, ``dec + w * (dec * scale + shift)`` computed in place on the freshly made scale."""

    def __init__(self, fusion: SFTFusion, *, use_winograd: bool) -> None:
        super().__init__()
        self.encode_enc = FastResnetBlock(fusion.encode_enc, use_winograd=use_winograd)
        self.scale = _fast_sequence(fusion.scale, use_winograd)
        self.shift = _fast_sequence(fusion.shift, use_winograd)

    def forward(self, encoder_feature: Tensor, decoder_feature: Tensor, w: float | Tensor) -> Tensor:
        joint = self.encode_enc(torch.cat([encoder_feature, decoder_feature], dim=1))
        if torch.is_grad_enabled():
            return decoder_feature + w * (decoder_feature * self.scale(joint) + self.shift(joint))
        return self.scale(joint).mul_(decoder_feature).add_(self.shift(joint)).mul_(w).add_(decoder_feature)


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
