"""Running the network on aligned faces: no autograd, chosen precision, safe fallback.

float32 is the default everywhere: it is the only precision that meets the
reference tolerances (bfloat16 changes several predicted codes; float16
changes codes and can overflow). Lower precisions are opt-in; a float16 or
bfloat16 result that is not finite is recomputed in float32.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import torch
from torch import Tensor

from ..compat import autocast_supports
from .arch import CodeFormer

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def restore_aligned(
    model: CodeFormer, faces: Tensor, fidelity: float | Tensor = 0.5, *, precision: str = "fp32", adain: bool = True
) -> Tensor:
    """Restore a batch of aligned 512 x 512 faces (RGB in [-1, 1]); returns float32 in [-1, 1].

    ``adain=True`` is what the official inference script and AUTOMATIC1111
    use: the decoded codes take the input's colour statistics.
    """
    parameter = next(model.parameters())
    check_precision(precision, parameter.device)
    faces = faces.to(device=parameter.device, dtype=parameter.dtype)
    with torch.inference_mode():
        image = _forward(model, faces, fidelity, precision, adain)
        if precision != "fp32" and not bool(torch.isfinite(image).all()):
            logger.warning("CodeFormer produced non-finite values in %s; recomputing these faces in float32.", precision)
            image = _forward(model, faces, fidelity, "fp32", adain)
        return image.float().clamp_(-1.0, 1.0)


def check_precision(precision: str, device: torch.device) -> None:
    """ValueError where ``precision`` is unknown or cannot run on ``device`` with this torch."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "fp32" and not autocast_supports(device.type, PRECISIONS[precision]):
        raise ValueError(
            f"precision {precision} cannot run on {device.type} with torch {torch.__version__} (its autocast does not "
            "support it there); use fp32 or bf16"
        )


def _forward(model: CodeFormer, faces: Tensor, fidelity: float | Tensor, precision: str, adain: bool) -> Tensor:
    device_type = faces.device.type
    autocast = torch.autocast(device_type=device_type, dtype=PRECISIONS[precision]) if precision != "fp32" else nullcontext()
    with autocast:
        return model(faces, w=fidelity, adain=adain)[0]
