"""A whole image enlarged (``--upscale S``): through a model tile by tile, or Lanczos, to exactly S times its size.

With a model, memory holds one tile's output and a strip of the result as
floats, never the whole enlarged image as floats: the result is written row
of tiles by row of tiles into an array of the image's own type (8 or 16
bits; alpha enlarged with Lanczos beside it).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..faces.compositing import LUMA
from .base import Lanczos, Upscaler, enlarge
from .models import OVERLAP, TILE, ModelUpscaler, resized
from .tiles import ramps, spans


def upscale_image(pixels: np.ndarray, upscaler: Upscaler, scale: float) -> np.ndarray:
    """``pixels`` (H x W, H x W x 3 or x 4; uint8 or uint16) enlarged ``scale`` times, in the same type."""
    height, width = pixels.shape[:2]
    out_height, out_width = max(1, round(height * scale)), max(1, round(width * scale))
    if isinstance(upscaler, Lanczos):
        return cv2.resize(pixels, (out_width, out_height), interpolation=cv2.INTER_LANCZOS4)
    top = float(np.iinfo(pixels.dtype).max)
    color = pixels if pixels.ndim == 3 else pixels[:, :, None]
    output = np.empty((out_height, out_width, *pixels.shape[2:]), pixels.dtype)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        output[:, :, 3] = cv2.resize(pixels[:, :, 3], (out_width, out_height), interpolation=cv2.INTER_LANCZOS4)
    rows = spans(height, TILE, OVERLAP)
    out_rows = [(round(a * scale), min(out_height, round(b * scale))) for a, b in rows]
    weights = ramps(out_rows)
    columns = spans(width, TILE, OVERLAP)
    column_weights = ramps([(round(a * scale), min(out_width, round(b * scale))) for a, b in columns])
    strip_start, strip = 0, np.zeros((0, out_width, 3), np.float32)
    for index, ((y0, y1), (oy0, oy1), wy) in enumerate(zip(rows, out_rows, weights, strict=True)):
        needed = oy1 - strip_start
        if needed > strip.shape[0]:
            strip = np.concatenate([strip, np.zeros((needed - strip.shape[0], out_width, 3), np.float32)])
        band = _rgb(color[y0:y1], top)
        for x0, x1 in columns:
            ox0, ox1 = round(x0 * scale), min(out_width, round(x1 * scale))
            tile = _enlarged_tile(upscaler, band[:, x0:x1], ox1 - ox0, oy1 - oy0)
            weight = wy[:, None, None] * column_weights[columns.index((x0, x1))][None, :, None]
            strip[oy0 - strip_start : oy1 - strip_start, ox0:ox1] += tile * weight
        final = out_rows[index + 1][0] if index + 1 < len(rows) else out_height  # rows the next tiles do not touch
        _write(output, strip[: final - strip_start], strip_start, top, pixels.ndim)
        strip, strip_start = strip[final - strip_start :], final
    return output


def _rgb(band: np.ndarray, top: float) -> np.ndarray:
    rgb = band[:, :, :3].astype(np.float32) / top
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb


def _enlarged_tile(upscaler: Upscaler, tile: np.ndarray, width: int, height: int) -> np.ndarray:
    if isinstance(upscaler, ModelUpscaler):
        return resized(upscaler.run(tile), width, height)
    return enlarge(upscaler, tile, width, height)


def _write(output: np.ndarray, rows: np.ndarray, start: int, top: float, dims: int) -> None:
    """Finished rows of the result, rounded into the output's type (a gray image takes their luma)."""
    if not len(rows):
        return
    if dims == 2:
        rows = rows @ LUMA
    values = np.clip(np.rint(rows * top), 0, top).astype(output.dtype)
    if dims == 2:
        output[start : start + len(rows)] = values
    else:
        output[start : start + len(rows), :, :3] = values
