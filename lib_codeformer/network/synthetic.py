"""Deterministic synthetic CodeFormer weights, for tests and benchmarks.

The released weights cannot be downloaded everywhere (CI has no internet),
so tests run the real network on weights generated from a seed. The rule is
the one that produced the reference outputs the tests compare against; any
change to it changes every number, so it is fixed:

* one ``torch.Generator`` seeded once; tensors in state-dict order; for each
  tensor one draw ``z = randn(shape, float64)``;
* ``quantize.embedding.weight``: ``z``; ``position_emb``: ``0.02 z``;
* rank >= 2: ``z * (1 / sqrt(fan_in))`` with ``fan_in = prod(shape[1:])``,
  times an extra gain of ``1/sqrt(2 L)`` (L transformer layers) for the
  transformer's residual output projections, 0.1 for the last conv of the
  SFT scale/shift branches and 0.5 for the final RGB conv;
* rank-1 ``*.weight`` (all are norm gains): ``1 + 0.1 z``; other rank-1: ``0.02 z``;
* arithmetic in float64 (multiply by the reciprocal), rounded to float32 once.

Drawing in float64 keeps the values independent of the CPU's vector unit
(torch's float32 randn differs between its AVX2 and generic kernels).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Iterable

import torch

from .arch import CodeFormer

REFERENCE_SEED = 1234
# sha256 of the float32 bytes, in state-dict order, of the seed-1234 weights.
REFERENCE_SHA256 = "c4d968a12466ce2669a0ed339b166bfcc340e253861b44635b4d61621c35087d"

_RESIDUAL_OUTPUT = re.compile(r"ft_layers\.\d+\.(self_attn\.out_proj|linear2)\.weight")
_SFT_OUTPUT = re.compile(r"fuse_convs_dict\.\d+\.(scale|shift)\.2\.weight")
_FINAL_RGB = "generator.blocks.24.weight"


def parameter_shapes(model: torch.nn.Module | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a model's state dict, in order (the released model by default).

    The default model is built on the meta device, so this allocates nothing.
    """
    if model is None:
        with torch.device("meta"):
            model = CodeFormer()
    return [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]


def _extra_gain(name: str, n_layers: int) -> float:
    if _RESIDUAL_OUTPUT.fullmatch(name):
        return 1.0 / math.sqrt(2 * n_layers)
    if _SFT_OUTPUT.fullmatch(name):
        return 0.1
    if name == _FINAL_RGB:
        return 0.5
    return 1.0


def _synthetic_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator, n_layers: int) -> torch.Tensor:
    z = torch.randn(shape, generator=generator, dtype=torch.float64)
    if name == "quantize.embedding.weight":
        value = z
    elif name == "position_emb":
        value = 0.02 * z
    elif len(shape) >= 2:
        value = z * (1.0 / math.sqrt(math.prod(shape[1:])))
        gain = _extra_gain(name, n_layers)
        if gain != 1.0:
            value = value * gain
    elif name.endswith(".weight"):
        value = 1.0 + 0.1 * z
    else:
        value = 0.02 * z
    return value.to(torch.float32).contiguous()


def synthetic_state_dict(
    seed: int = REFERENCE_SEED, shapes: Iterable[tuple[str, Iterable[int]]] | None = None
) -> OrderedDict[str, torch.Tensor]:
    """Weights for ``shapes`` (default: the released model's) drawn by the rule above."""
    shapes = [(name, tuple(int(s) for s in shape)) for name, shape in (shapes or parameter_shapes())]
    n_layers = len({name.split(".")[1] for name, _ in shapes if name.startswith("ft_layers.")})
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return OrderedDict((name, _synthetic_tensor(name, shape, generator, n_layers)) for name, shape in shapes)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the little-endian float32 bytes of every tensor, in order."""
    digest = hashlib.sha256()
    for tensor in state_dict.values():
        digest.update(tensor.detach().to(torch.float32).contiguous().cpu().numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


def random_weights_like(module: torch.nn.Module, seed: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    """Small random values of the right names and shapes for any network (the detector and parser in tests).

    Running variances are made positive so batch norms stay finite; integer
    buffers are kept.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            state[key] = torch.randn(value.shape, generator=generator) * scale
            if key.endswith("running_var"):
                state[key] = state[key].abs() + 1
        else:
            state[key] = value
    return state
