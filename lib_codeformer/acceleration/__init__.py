"""Making a loaded network fast on the processor it runs on, without changing what it computes.

``accelerate(model)`` returns the model with faster stand-ins (``layers``)
for the pure network's layers. It shares every parameter with ``model``
(same tensors, same names; nothing is copied, and ``model`` itself stays the
pure network); results differ by float rounding only (the tests hold both
forms to the official network's outputs). On the CPU the parameters are
also stored channels-last, which PyTorch's convolutions run faster. GPUs
keep cuDNN (which has its own Winograd kernels); the fused and in-place
forms still save memory there.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..network.arch import Downsample, ResnetBlock, SFTFusion, Upsample
from . import winograd
from .layers import (
    FastConv1x1,
    FastConv3x3,
    FastDownsample,
    FastGroupNorm,
    FastResnetBlock,
    FastSFTFusion,
    FastUpsample,
    is_plain_conv3x3,
    is_plain_group_norm,
)


def accelerate(model: nn.Module, *, winograd_kernel: bool = True) -> nn.Module:
    """The fast form of ``model``, sharing its parameters. Given a model it made, only sets the kernel switch.

    ``winograd_kernel``: use the compiled Winograd kernel on the CPU where it
    applies (the WebUI setting "Fast CPU convolutions", ``--no-fast-conv``);
    ``CODEFORMER_FAST_CONV=0`` in the environment keeps it off regardless.
    Modules that are not CodeFormer layers are kept as they are, so any
    network may be passed; one without any such layer is returned itself.
    """
    use = bool(winograd_kernel) and winograd.enabled_by_environment()
    if not is_accelerated(model) and any(_swappable(module) for module in model.modules()):
        shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
        model = copy.deepcopy(model, memo=shared)
        _swap_children(model, use)
        model._codeformer_accelerated = True
    for module in model.modules():
        if isinstance(module, (FastConv3x3, FastConv1x1, FastGroupNorm)):
            module.use_winograd = use
    return cpu_layout(model)


def cpu_layout(model: nn.Module) -> nn.Module:
    """``model`` with its parameters channels-last on the CPU (PyTorch's CPU convolutions run them about a third
    faster) and in the default layout elsewhere; call it again after moving the model."""
    parameter = next(model.parameters(), None)
    if parameter is not None:
        model.to(memory_format=torch.channels_last if parameter.device.type == "cpu" else torch.contiguous_format)
    return model


def is_accelerated(model: nn.Module) -> bool:
    return bool(getattr(model, "_codeformer_accelerated", False))


def uses_winograd(model: nn.Module) -> bool:
    """Whether ``model`` would run its large CPU float32 convolutions on the Winograd kernel."""
    return winograd.available() and any(isinstance(m, (FastConv3x3, FastConv1x1)) and m.use_winograd for m in model.modules())


def _swap_children(parent: nn.Module, use: bool) -> None:
    for name, child in parent.named_children():
        fast = _fast_form(child, use)
        if fast is not None:
            parent.register_module(name, fast)
        else:
            _swap_children(child, use)


def _swappable(module: nn.Module) -> bool:
    if isinstance(module, (ResnetBlock, Upsample, Downsample, SFTFusion)):
        return True
    return is_plain_conv3x3(module) or is_plain_group_norm(module)


def _fast_form(module: nn.Module, use: bool) -> nn.Module | None:
    if isinstance(module, ResnetBlock):
        return FastResnetBlock(module, use_winograd=use)
    if isinstance(module, Upsample):
        return FastUpsample(module, use_winograd=use)
    if isinstance(module, Downsample):
        return FastDownsample(module)
    if isinstance(module, SFTFusion):
        return FastSFTFusion(module, use_winograd=use)
    if is_plain_conv3x3(module):
        return FastConv3x3.adopt(module, use_winograd=use)
    if is_plain_group_norm(module):
        return FastGroupNorm.adopt(module, use_winograd=use)
    return None


__all__ = ["accelerate", "is_accelerated", "uses_winograd", "winograd"]
