"""What an upscaler is to the restorer, and the one that needs no model (Lanczos)."""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np


class UpscalerError(RuntimeError):
    """An upscaler that could not enlarge an image; the message says which and why."""


class Upscaler(Protocol):
    """Enlarges RGB float32 images in [0, 1] (H x W x 3) by about ``scale``; any size near it is fine."""

    name: str

    def upscale(self, image: np.ndarray, scale: float) -> np.ndarray: ...


class Lanczos:
    """OpenCV's Lanczos interpolation: no model, no download (the WebUIs' "Lanczos" does the same)."""

    name = "lanczos"

    def upscale(self, image: np.ndarray, scale: float) -> np.ndarray:
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.clip(cv2.resize(image, size, interpolation=cv2.INTER_LANCZOS4), 0.0, 1.0)


def enlarge(upscaler: Upscaler, image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` enlarged by ``upscaler`` to exactly ``width`` x ``height`` (float32 RGB in [0, 1]).

    The upscaler is asked for the scale once; what it returns is resized to
    the exact size (area averaging from a model's larger fixed factor).
    Anything wrong (an exception, a result that is not an image, not finite)
    is one ``UpscalerError`` naming the upscaler.
    """
    scale = max(width / image.shape[1], height / image.shape[0])
    name = getattr(upscaler, "name", type(upscaler).__name__)
    try:
        result = upscaler.upscale(image, scale)
    except UpscalerError:
        raise
    except Exception as error:
        raise UpscalerError(f"the upscaler {name} failed ({type(error).__name__}: {error})") from error
    result = np.asarray(result)
    if result.ndim != 3 or result.shape[2] != 3 or min(result.shape[:2]) < 1:
        raise UpscalerError(f"the upscaler {name} returned {result.shape}, not an RGB image")
    result = result.astype(np.float32, copy=False)
    if not np.isfinite(result).all():
        raise UpscalerError(f"the upscaler {name} returned values that are not finite numbers")
    if result.shape[:2] != (height, width):
        shrink = result.shape[0] * result.shape[1] > width * height
        result = cv2.resize(result, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(result, 0.0, 1.0)
