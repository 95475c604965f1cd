"""Super-resolution model files (ESRGAN, Real-ESRGAN, SwinIR, DAT, ...) loaded with spandrel, safely, run in tiles.

spandrel (the library AUTOMATIC1111 and ComfyUI load upscalers with) is an
optional extra (``pip install 'sd-webui-codeformer[upscale]'``). The file is
read with the project's own restricted reader (no pickled code is ever run,
as for CodeFormer's weights) and only its tensors are handed to spandrel,
which recognises the architecture from them. ComfyUI's UPSCALE_MODEL is
such a spandrel model already: ``ModelUpscaler`` runs either.
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import MissingDependency, WeightsError
from .base import Lanczos, Upscaler, UpscalerError
from .tiles import ramps, spans

# Input tiles of this side (and this overlap) keep a 4x model's output tile near 2048 px: tens of MB.
TILE = 512
OVERLAP = 32


class ModelUpscaler:
    """A spandrel ``ImageModelDescriptor`` as an ``Upscaler``: tile by tile on ``device``, in float32."""

    def __init__(self, descriptor: Any, device: str | torch.device = "cpu", name: str | None = None) -> None:
        self.descriptor = descriptor
        self.device = torch.device(device)
        self.scale = int(getattr(descriptor, "scale", 1) or 1)
        self.name = name or f"{architecture_name(descriptor)} x{self.scale}"

    def to(self, device: str | torch.device) -> ModelUpscaler:
        self.device = torch.device(device)
        self.descriptor.to(self.device)
        return self

    def upscale(self, image: np.ndarray, scale: float) -> np.ndarray:
        """The model's own factor applied (the caller resizes to the size it needs)."""
        height, width = image.shape[:2]
        return self.enlarge_tiled(image, width * self.scale, height * self.scale)

    def enlarge_tiled(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        """``image`` (RGB float32, [0, 1]) through the model in overlapping tiles, blended, at ``width`` x ``height``."""
        rows, columns = spans(image.shape[0], TILE, OVERLAP), spans(image.shape[1], TILE, OVERLAP)
        out_rows = [(round(a * height / image.shape[0]), round(b * height / image.shape[0])) for a, b in rows]
        out_columns = [(round(a * width / image.shape[1]), round(b * width / image.shape[1])) for a, b in columns]
        row_weights, column_weights = ramps(out_rows), ramps(out_columns)
        output = np.zeros((height, width, 3), np.float32)
        for (y0, y1), (oy0, oy1), wy in zip(rows, out_rows, row_weights, strict=True):
            for (x0, x1), (ox0, ox1), wx in zip(columns, out_columns, column_weights, strict=True):
                tile = self.run(image[y0:y1, x0:x1])
                tile = resized(tile, ox1 - ox0, oy1 - oy0)
                output[oy0:oy1, ox0:ox1] += tile * (wy[:, None, None] * wx[None, :, None])
        return np.clip(output, 0.0, 1.0)

    def run(self, tile: np.ndarray) -> np.ndarray:
        """One tile through the model, at its own scale."""
        self.descriptor.to(self.device)
        tensor = torch.from_numpy(np.ascontiguousarray(tile.transpose(2, 0, 1)))[None].to(self.device, torch.float32)
        with torch.inference_mode():
            result = self.descriptor(tensor)
        return result[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def architecture_name(descriptor: Any) -> str:
    """spandrel 0.4's architecture object's name, or 0.3's string (AUTOMATIC1111 1.10 pins spandrel 0.3.4)."""
    architecture = getattr(descriptor, "architecture", "unknown")
    return str(getattr(architecture, "name", architecture))


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[0] * image.shape[1] > width * height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def load_upscaler(spec: str | os.PathLike, device: str | torch.device = "cpu") -> Upscaler:
    """``lanczos``, or a super-resolution model file read safely and recognised by spandrel.

    UpscalerError says why a file cannot be used (not a model spandrel knows,
    not an image-to-image model, no enlargement); MissingDependency where
    spandrel is not installed.
    """
    if str(spec).lower() == "lanczos":
        return Lanczos()
    from ..network.weights import read_tensors

    try:
        import spandrel
    except ImportError:
        raise MissingDependency(
            "upscaling with a model file needs spandrel, which is not installed: "
            "pip install spandrel (or pip install 'sd-webui-codeformer[upscale]'); lanczos needs nothing"
        ) from None
    try:
        state = read_tensors(spec)
    except WeightsError as error:
        raise UpscalerError(f"the upscaler {spec}: {error}") from None
    state = state.get("params_ema", state.get("params", state)) if isinstance(state, dict) else state
    try:
        descriptor = spandrel.ModelLoader(torch.device(device)).load_from_state_dict(state)
    except Exception as error:  # spandrel's UnsupportedModelError and whatever a foreign file makes it raise
        raise UpscalerError(f"{spec} is not a model spandrel knows ({error})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor) or int(descriptor.scale or 1) < 2:
        kind = f"{architecture_name(descriptor)} ({descriptor.purpose}, scale {descriptor.scale})"
        raise UpscalerError(f"{spec} is not a super-resolution model: spandrel recognised {kind}")
    descriptor.eval()
    return ModelUpscaler(descriptor, device, name=os.path.basename(str(spec)))
