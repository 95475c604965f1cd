"""From image to aligned face and back: cropping, colour, masks and paste-back, as functions on arrays.

Paste-back touches only the face's box, so time and memory follow the
face, not the image, and every pixel outside the box keeps its exact value.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from . import geometry
from .pixels import Pixels

# Grey that fills the parts of a face crop outside the image (the value facexlib uses).
OUTSIDE_FILL = (135, 133, 132)
# Luma weights (ITU-R BT.601), as Pillow's and OpenCV's RGB-to-gray conversions use.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# The smallest side a face is shrunk to before the inverse warp.
_MIN_SHRUNK_SIDE = 8


def crop_face(pixels: Pixels, matrix: np.ndarray) -> np.ndarray:
    """The aligned 512 x 512 face as RGB float32 in [0, 1]; parts outside the image are grey."""
    size = geometry.FACE_SIZE
    fill = tuple(v * pixels.max_value / 255.0 for v in OUTSIDE_FILL)
    channels = 1 if pixels.is_gray_array else pixels.array.shape[2]
    border = (fill[0],) if channels == 1 else (*fill, pixels.max_value)[:channels]
    crop = cv2.warpAffine(
        pixels.array, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )
    return as_rgb_float(pixels, crop)


def as_rgb_float(pixels: Pixels, crop: np.ndarray) -> np.ndarray:
    """Pixels of the input's kind as RGB float32 in [0, 1] (gray repeated, alpha dropped)."""
    crop = crop.astype(np.float32) / pixels.max_value
    if crop.ndim == 2:
        return np.repeat(crop[:, :, None], 3, axis=2)
    return np.ascontiguousarray(crop[:, :, :3])


def resize_each_side(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to ``width`` x ``height``, each side with the filter its own change needs: area averaging
    where it shrinks (no aliasing), bicubic where it grows. A side that keeps its length is not resampled."""
    if image.shape[1] != width:
        shrink = image.shape[1] > width
        image = cv2.resize(image, (width, image.shape[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    if image.shape[0] != height:
        shrink = image.shape[0] > height
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return image


@functools.lru_cache(maxsize=8)
def _skin_weights(size: int = geometry.FACE_SIZE) -> np.ndarray:
    """Where colour statistics are measured: a soft disc over the cheeks, nose and mouth of the template."""
    yy, xx = np.mgrid[0:size, 0:size] / (size / geometry.FACE_SIZE)
    return np.exp(-(((xx - 256) / 90) ** 2 + ((yy - 300) / 90) ** 2)).astype(np.float32)




def finish_face(restored: np.ndarray, original: np.ndarray, *, color_correction: bool, gray: bool) -> np.ndarray:
    """The restored face as it is pasted: the original's colours (optional), gray for a gray photo.

    At any square size (an enlarged face too): the colour statistics are taken over the same part of the face.
    """
    if color_correction:
        restored = match_colors(restored, original, _skin_weights(restored.shape[0]))
    if gray:
        restored = np.repeat(luma(restored)[:, :, None], 3, axis=2)
    return restored


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ LUMA


def match_colors(restored: np.ndarray, original: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Give ``restored`` the per-channel mean and spread of ``original`` over the face (weighted by ``weights``)."""
    weight = weights[:, :, None].astype(np.float64)
    total = max(float(weight.sum()), 1e-6)

    def stats(face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (face * weight).sum(axis=(0, 1)) / total
        std = np.sqrt(((face - mean) ** 2 * weight).sum(axis=(0, 1)) / total)
        return mean, np.maximum(std, 1e-4)

    restored_mean, restored_std = stats(restored)
    original_mean, original_std = stats(original)
    corrected = (restored - restored_mean) * (original_std / restored_std) + original_mean
    return np.clip(corrected, 0.0, 1.0).astype(np.float32)


def parsing_mask(face_parts: np.ndarray, box: np.ndarray) -> np.ndarray:
    """ParseNet's hard face-parts mask softened (blurred twice), inside the box mask's soft edge."""
    soft = cv2.GaussianBlur(face_parts, (0, 0), sigmaX=11)
    return cv2.GaussianBlur(soft, (0, 0), sigmaX=11) * box


def shrink_matrix(size: int, face_size: int = geometry.FACE_SIZE) -> np.ndarray:
    """Maps pixel coordinates of a face area-resized from ``face_size`` to ``size`` back to the original face's.

    ``cv2.resize`` puts pixel centres at half-integers: output pixel ``u``
    covers input ``[u / s, (u + 1) / s)`` with ``s = size / face_size``, so
    its centre is input coordinate ``(u + 0.5) / s - 0.5``, not ``u / s``.
    """
    inverse = face_size / size
    offset = 0.5 * inverse - 0.5
    return np.array([[inverse, 0.0, offset], [0.0, inverse, offset], [0.0, 0.0, 1.0]])


def paste(
    output: np.ndarray,
    face: np.ndarray,
    mask: np.ndarray,
    face_to_image: np.ndarray,
    pixels: Pixels,
    coverage: np.ndarray | None = None,
) -> geometry.Box | None:
    """Warp ``face`` back and composite it through ``mask``, touching only the face's box.

    ``coverage`` (H x W float32, optional): how much of each pixel comes from
    restored faces, 0..1; this face's warped mask is added to it (as a union:
    ``1 - (1 - coverage) (1 - mask)``). Returns the box that was written,
    None if the face lies outside the image.
    """
    height, width = output.shape[:2]
    box = geometry.face_box(face_to_image, height, width)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    matrix = geometry.translate(face_to_image, -x0, -y0)
    if face.shape[0] != geometry.FACE_SIZE:  # an enlarged face: its pixels are finer than the crop's
        matrix = (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ shrink_matrix(face.shape[0]))[:2]
        mask = cv2.resize(mask, face.shape[1::-1], interpolation=cv2.INTER_LINEAR)
    # A small face: shrink with area averaging first, to 3x its size in the image, so the
    # bilinear warp neither aliases nor blurs (measured round trip error: 1.5/255 mean).
    size = int(np.ceil(geometry.FACE_SIZE * geometry.scale_of(matrix) * 3))
    if size < geometry.FACE_SIZE:
        size = max(size, _MIN_SHRUNK_SIDE)
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA)
        matrix = (np.vstack([matrix, [0.0, 0.0, 1.0]]) @ shrink_matrix(size))[:2]
    warp = {"dsize": (x1 - x0, y1 - y0), "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    warped_face = cv2.warpAffine(face, matrix, **warp)
    warped_mask = cv2.warpAffine(mask, matrix, **warp)
    blend_into(output[y0:y1, x0:x1], warped_face, warped_mask, pixels)
    if coverage is not None:
        add_coverage(coverage[y0:y1, x0:x1], warped_mask)
    return box


def add_coverage(region: np.ndarray, mask: np.ndarray) -> None:
    """``region = 1 - (1 - region) (1 - mask)``, in place: overlapping faces cover a pixel at most once."""
    region[...] = 1.0 - (1.0 - region) * (1.0 - np.clip(mask, 0.0, 1.0))


def blend_into(region: np.ndarray, face: np.ndarray, mask: np.ndarray, pixels: Pixels) -> None:
    """``region = region + (face - region) * mask`` in float, rounded; where mask is 0 the value stays exact.

    ``face`` is RGB float in [0, 1]; a gray region takes its luma (a colour
    face cannot be held by a gray image), an RGBA region keeps its alpha.
    """
    face = face * pixels.max_value
    if region.ndim == 2:
        target = region
        face = luma(face)
        weight = mask
    else:
        target = region[:, :, :3]
        weight = mask[:, :, None]
    current = target.astype(np.float32)
    blended = current + (face - current) * weight
    np.rint(blended, out=blended)
    np.clip(blended, 0, pixels.max_value, out=blended)
    target[...] = blended.astype(region.dtype)


def blend_regions(original: np.ndarray, restored: np.ndarray, visibility: float, boxes: list[geometry.Box]) -> None:
    """``restored = original + (restored - original) * visibility`` inside ``boxes``, in place, in their dtype.

    Outside the boxes the two images are equal, so nothing else is read or
    written: no full-size float copy. Overlapping boxes are merged first, so
    no pixel is blended twice.
    """
    top = float(np.iinfo(restored.dtype).max)
    for x0, y0, x1, y1 in merge_boxes(boxes):
        before = original[y0:y1, x0:x1].astype(np.float32)
        after = restored[y0:y1, x0:x1].astype(np.float32)
        mixed = before + (after - before) * visibility
        np.rint(mixed, out=mixed)
        np.clip(mixed, 0, top, out=mixed)
        restored[y0:y1, x0:x1] = mixed.astype(restored.dtype)


def merge_boxes(boxes: list[geometry.Box]) -> list[geometry.Box]:
    """Boxes that do not overlap and cover every given box (overlapping ones replaced by their bounding box)."""
    merged: list[geometry.Box] = []
    for box in boxes:
        while True:
            overlapping = [other for other in merged if _overlap(box, other)]
            if not overlapping:
                break
            for other in overlapping:
                merged.remove(other)
                box = (min(box[0], other[0]), min(box[1], other[1]), max(box[2], other[2]), max(box[3], other[3]))
        merged.append(box)
    return merged


def _overlap(a: geometry.Box, b: geometry.Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
