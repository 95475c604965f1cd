"""facexlib's ParseNet in a fast form that computes the same masks.

AUTOMATIC1111's path spends about a third of its time per face in ParseNet
(47 convolutions, most of them 3x3 at 64-256 px). ``accelerate_parsenet``
rebuilds it from the loaded model, changing only how it is computed:

- each batch norm (inference statistics) is folded into the convolution
  before it, in float64, and the ``x * 1.0`` that facexlib's "none" norm
  and activation compute is dropped;
- the parameters are stored channels-last on the CPU;
- each stride-1 3x3 convolution of a reflection-padded input runs on the
  Winograd kernel where it applies, which reads the unpadded (and not yet
  upsampled) input and reflects it at the edges itself: no padded copy of
  the image, and no border of outputs computed to be thrown away (at 32 x 32
  a fifth of the tiles);
- the image head (``out_img_conv``), whose output the mask does not use,
  is not run.

Results differ from facexlib's by float rounding only
(``tests/faces/test_parsenet_fast.py`` holds them to it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..acceleration import cpu_layout, winograd
from ..acceleration.buffers import pool, poolable
from ..acceleration.folding import folded_parameters
from ..acceleration.layers import FastConv3x3


class FastParseConv(nn.Module):
    """One facexlib ``ConvLayer``: [2x nearest upsampling], reflection padding, convolution (+ folded norm), activation."""

    def __init__(self, layer: nn.Module, *, use_winograd: bool) -> None:
        super().__init__()
        conv: nn.Conv2d = layer.conv2d
        weight, bias = _folded(layer, conv)
        self.upsample = _upsamples(layer)
        self.padding = tuple(layer.reflection_pad.padding) if layer.use_pad else (0, 0, 0, 0)
        plain_3x3 = conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.groups == 1 and self.padding == (1,) * 4
        with torch.device("meta"):  # the parameters are the folded ones, set below
            if plain_3x3:
                self.conv = FastConv3x3(conv.in_channels, conv.out_channels, use_winograd=use_winograd)
            else:
                self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride)
        self.conv.weight = nn.Parameter(weight, requires_grad=False)
        self.conv.bias = nn.Parameter(bias, requires_grad=False)
        activation = layer.relu.func
        self.activation = activation if isinstance(activation, nn.Module) else None

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.pads_on_the_kernel(x):
            return self.convolve_unpadded(x, residual)
        return self.convolve(self.prepare(x), residual)

    def pads_on_the_kernel(self, x: Tensor) -> bool:
        """Whether this layer runs on the Winograd kernel from the unpadded ``x`` (the kernel pads by reflection)."""
        conv = self.conv
        return (
            isinstance(conv, FastConv3x3)
            and conv.use_winograd
            and min(x.shape[-2:]) >= 2
            and winograd.applies(x, conv.weight, upsample=self.upsample)
        )

    def convolve_unpadded(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """The layer from its unpadded ``x`` on the kernel, which upsamples and reflects it itself (where
        ``pads_on_the_kernel``); ``residual`` is added to the result."""
        out = winograd.conv3x3(x, self.conv.weight, self.conv.bias, upsample=self.upsample, reflect=True)
        return self.finish(out, residual)

    def prepare(self, x: Tensor) -> Tensor:
        """The convolution's input: ``x`` upsampled if the layer does, reflection-padded."""
        if self.padding == (1, 1, 1, 1):
            return reflect_pad1(x, upsample=self.upsample)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.pad(x, self.padding, mode="reflect") if any(self.padding) else x

    def convolve(self, padded: Tensor, residual: Tensor | None = None) -> Tensor:
        """The rest of the layer, from ``prepare``'s result; ``residual`` is added to the result."""
        conv = self.conv
        # Unpadded, strided or not 3x3: PyTorch's convolution (as a module, seen by profilers); a 3x3 one the
        # kernel does not take (switched off, too small): PyTorch's of the padded input.
        out = F.conv2d(padded, conv.weight, conv.bias) if isinstance(conv, FastConv3x3) else conv(padded)
        return self.finish(out, residual)

    def finish(self, out: Tensor, residual: Tensor | None) -> Tensor:
        """The convolution's result activated, ``residual`` added."""
        if self.activation is not None:
            out = self.activation(out)
        if residual is None:
            return out
        return out + residual if torch.is_grad_enabled() else out.add_(residual)


class FastParseBlock(nn.Module):
    """facexlib's ``ResidualBlock``: shortcut + conv2(conv1(x)), the sum made in place."""

    def __init__(self, block: nn.Module, *, use_winograd: bool) -> None:
        super().__init__()
        shortcut = block.shortcut_func
        self.shortcut = FastParseConv(shortcut, use_winograd=use_winograd) if isinstance(shortcut, nn.Module) else None
        self.conv1 = FastParseConv(block.conv1, use_winograd=use_winograd)
        self.conv2 = FastParseConv(block.conv2, use_winograd=use_winograd)

    def forward(self, x: Tensor) -> Tensor:
        padded: list[Tensor] = []  # the shortcut pads (and upsamples) the same input alike: made once, where needed

        def convolve(layer: FastParseConv) -> Tensor:
            if layer.pads_on_the_kernel(x):
                return layer.convolve_unpadded(x)
            if not padded:
                padded.append(self.conv1.prepare(x))
            return layer.convolve(padded[0])

        identity = x if self.shortcut is None else convolve(self.shortcut)
        return self.conv2(convolve(self.conv1), identity)


class FastParseNet(nn.Module):
    """ParseNet's mask head only: ``forward(faces)`` returns the (B, 19, H, W) label scores."""

    def __init__(self, model: nn.Module, *, use_winograd: bool = True) -> None:
        super().__init__()
        self.encoder = nn.Sequential(*(_fast(layer, use_winograd) for layer in model.encoder))
        self.body = nn.Sequential(*(_fast(layer, use_winograd) for layer in model.body))
        self.decoder = nn.Sequential(*(_fast(layer, use_winograd) for layer in model.decoder))
        self.out_mask_conv = FastParseConv(model.out_mask_conv, use_winograd=use_winograd)

    def forward(self, faces: Tensor) -> Tensor:
        if faces.device.type == "cpu":
            faces = faces.contiguous(memory_format=torch.channels_last)
        features = self.encoder(faces)
        features = features + self.body(features)
        return self.out_mask_conv(self.decoder(features))


def accelerate_parsenet(model: nn.Module, *, use_winograd: bool = True) -> FastParseNet:
    """The fast form of a loaded facexlib ParseNet (in inference mode), on the model's device."""
    device = next(model.parameters()).device
    return cpu_layout(FastParseNet(model, use_winograd=use_winograd).to(device).eval())


def reflect_pad1(x: Tensor, *, upsample: bool = False) -> Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode="reflect")``, of ``x`` upsampled 2x (nearest) first when ``upsample``.

    Made by slicing into one channels-last buffer (recycled memory on the
    CPU in float32): faster than PyTorch's reflection padding of a
    channels-last tensor that is a view (the cropped Winograd output), and
    upsampling and padding in one pass. For a 2x nearest upsampling, the
    reflected border row is a copy of the row inside.
    """
    batch, channels, height, width = x.shape
    if height < 2 or width < 2:
        raise ValueError(f"reflection padding needs at least 2 x 2 pixels (got {height} x {width})")
    source = x.permute(0, 2, 3, 1)
    scale = 2 if upsample else 1
    shape = (batch, scale * height + 2, scale * width + 2, channels)
    out = pool.empty(shape) if poolable(x) else x.new_empty(shape)
    inside = out[:, 1:-1, 1:-1]
    if upsample:
        inside = inside.unflatten(1, (height, 2)).unflatten(3, (width, 2))
        inside.copy_(source[:, :, None, :, None, :].expand(batch, height, 2, width, 2, channels))
    else:
        inside.copy_(source)
    mirrored = 1 if upsample else 2  # the row reflected into the border, counted from the border
    out[:, 0, 1:-1] = out[:, mirrored, 1:-1]
    out[:, -1, 1:-1] = out[:, -1 - mirrored, 1:-1]
    out[:, :, 0] = out[:, :, mirrored]
    out[:, :, -1] = out[:, :, -1 - mirrored]
    return out.permute(0, 3, 1, 2)


def _fast(layer: nn.Module, use_winograd: bool) -> nn.Module:
    if hasattr(layer, "conv2d"):
        return FastParseConv(layer, use_winograd=use_winograd)
    return FastParseBlock(layer, use_winograd=use_winograd)


def _folded(layer: nn.Module, conv: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """The convolution's weight and bias with the layer's batch norm (running statistics) folded in."""
    if layer.norm_type not in ("bn", "none"):
        raise ValueError(f"ParseNet layers with a {layer.norm_type!r} norm are not supported here")
    return folded_parameters(conv, layer.norm.norm if layer.norm_type == "bn" else None)


def _upsamples(layer: nn.Module) -> bool:
    """Whether the layer doubles its input first (facexlib keeps this only as a lambda, so it is asked)."""
    probe = torch.zeros(1, 1, 1, 1)
    return tuple(layer.scale_func(probe).shape[-2:]) == (2, 2)
