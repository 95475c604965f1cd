"""Face alignment and paste-back geometry: pure functions on numpy arrays.

A face is aligned by the similarity transform (rotation, uniform scale,
translation) that best maps its 5 landmarks (eyes, nose tip, mouth corners,
viewer's left first) onto the FFHQ template of the 512 x 512 face crop the
network was trained on; the restored face goes back through the inverse
transform. Paste-back touches only the face's bounding box, so its cost and
memory follow the face, not the image.
"""

from __future__ import annotations

import numpy as np

FACE_SIZE = 512

# FFHQ 5-point template for a 512 x 512 crop (the one facexlib uses): left eye,
# right eye, nose tip, left and right mouth corner, as (x, y).
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.19360],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: half-open pixel ranges


def estimate_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform mapping ``source`` points onto ``target`` points.

    Returns the 2 x 3 matrix ``[[a, -b, tx], [b, a, ty]]`` minimising
    ``sum |M [x, y, 1] - target|^2`` (no reflection, no shear).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need two matching (N, 2) point sets with N >= 2; got {source.shape} and {target.shape}")
    if not (np.isfinite(source).all() and np.isfinite(target).all()):
        raise ValueError("the points are not all finite numbers")  # LAPACK can loop forever on infinities
    x, y = source[:, 0], source[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    # Unknowns (a, b, tx, ty): u = a x - b y + tx, v = b x + a y + ty.
    system = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    a, b, tx, ty = np.linalg.lstsq(system, np.concatenate([target[:, 0], target[:, 1]]), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty]])


def alignment_matrix(landmarks: np.ndarray, face_size: int = FACE_SIZE) -> np.ndarray:
    """The transform from image coordinates to the aligned ``face_size`` crop."""
    return estimate_similarity(landmarks, FFHQ_TEMPLATE_512 * (face_size / FACE_SIZE))


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2 x 3 affine transform."""
    linear, offset = matrix[:, :2], matrix[:, 2]
    inverse = np.linalg.inv(linear)
    return np.concatenate([inverse, -(inverse @ offset)[:, None]], axis=1)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine transform to (N, 2) points."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def scale_of(matrix: np.ndarray) -> float:
    """The uniform scale factor of a similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))


def face_box(face_to_image: np.ndarray, image_height: int, image_width: int, face_size: int = FACE_SIZE) -> Box | None:
    """The pixels of the image that the face crop covers, clipped to the image; None if it lies outside."""
    corners = transform_points(face_to_image, [[0, 0], [face_size, 0], [0, face_size], [face_size, face_size]])
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, image_width), min(y1, image_height)
    if x0 >= x1 or y0 >= y1:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def translate(matrix: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``matrix`` followed by a shift of the output by (dx, dy)."""
    shifted = matrix.copy()
    shifted[:, 2] += (dx, dy)
    return shifted


def feathered_box_mask(size: int = FACE_SIZE, feather: float = 0.1) -> np.ndarray:
    """A ``size`` x ``size`` mask: 1 inside, easing to 0 over ``feather * size`` pixels at each edge.

    Defined in face coordinates, so once warped into the image the soft edge
    is proportional to the face's size there. The easing is smoothstep, so
    the mask has no visible crease; the outermost pixel ring is exactly 0,
    so the square's edge never shows.
    """
    if not 0 < feather <= 0.5:
        raise ValueError(f"feather must be in (0, 0.5]; got {feather}")
    centres = np.arange(size) + 0.5
    distance_to_edge = np.minimum(centres, size - centres) - 0.5
    ramp = np.clip(distance_to_edge / (feather * size), 0.0, 1.0)
    ease = ramp * ramp * (3.0 - 2.0 * ramp)
    return np.outer(ease, ease).astype(np.float32)
