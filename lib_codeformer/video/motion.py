"""How a face moved between two frames, and where a shot ends.

``face_motion`` follows corner features inside the face from one frame to
the next with pyramidal Lucas-Kanade optical flow, keeps those that flow
back to where they started (forward-backward check), and fits the
similarity transform (shift, rotation, scale) that best explains them,
robustly (least median of squares). On a face of 100 px or more that is
accurate to a few hundredths of a pixel, far better than a detector's
landmarks (see ``smoothing``), and costs a few milliseconds.

``is_cut`` compares small blurred thumbnails: a cut changes most of the
picture at once, motion inside a shot changes little of a 64-px-wide view.
"""

from __future__ import annotations

import cv2
import numpy as np

# Corners tracked per face; fewer than MIN_POINTS surviving means the motion is not measured.
MAX_POINTS = 80
MIN_POINTS = 8
# A point whose flow back lands farther than this from its start (pixels) is dropped.
MAX_ROUND_TRIP = 0.5
# Thumbnails for cut detection: this wide, and a cut when their mean absolute difference exceeds CUT_LEVEL (0..255).
THUMBNAIL_WIDTH = 64
CUT_LEVEL = 18.0


def gray(image: np.ndarray) -> np.ndarray:
    """The 8-bit gray image flow and cut detection work on (RGB, RGBA, gray; uint8 or uint16)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)


def thumbnail(gray_image: np.ndarray) -> np.ndarray:
    """A small, blurred float copy: insensitive to noise and small motion, not to a change of scene."""
    height, width = gray_image.shape
    size = (THUMBNAIL_WIDTH, max(1, round(height * THUMBNAIL_WIDTH / max(width, 1))))
    small = cv2.resize(gray_image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    return cv2.GaussianBlur(small, (0, 0), 1.0)


def cut_level(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (0..255); different sizes count as a cut."""
    if previous.shape != current.shape:
        return 255.0
    return float(np.abs(previous - current).mean())


def is_cut(previous: np.ndarray | None, current: np.ndarray) -> bool:
    return previous is not None and cut_level(previous, current) > CUT_LEVEL


def face_region(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The pixels around the face where features are looked for: its landmarks' box, widened to hold the face."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    margin = 0.45 * float((high - low).max())
    x0, y0 = np.floor(low - margin).astype(int)
    x1, y1 = np.ceil(high + margin).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def face_motion(previous: np.ndarray, current: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The similarity transform (2 x 3) carrying the face at ``landmarks`` in ``previous`` to ``current``.

    None when it cannot be measured: the face left the picture, has too
    little texture, or the points disagree (occlusion, a cut).
    """
    if not np.isfinite(landmarks).all():
        return None
    region = face_region(landmarks, previous.shape)
    if region is None:
        return None
    x0, y0, x1, y1 = region
    spacing = max(2.0, (x1 - x0) / 24)
    corners = cv2.goodFeaturesToTrack(previous[y0:y1, x0:x1], MAX_POINTS, 0.01, spacing, blockSize=5)
    if corners is None or len(corners) < MIN_POINTS:
        return None
    start = (corners.reshape(-1, 2) + np.array([x0, y0], dtype=np.float32)).astype(np.float32)
    window = (21, 21)
    flow = {"winSize": window, "maxLevel": 3, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
    moved, found, _ = cv2.calcOpticalFlowPyrLK(previous, current, start, None, **flow)
    back, found_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, moved, None, **flow)
    round_trip = np.hypot(*(back - start).T)
    keep = (found.ravel() == 1) & (found_back.ravel() == 1) & (round_trip < MAX_ROUND_TRIP)
    if keep.sum() < MIN_POINTS:
        return None
    matrix, inliers = cv2.estimateAffinePartial2D(start[keep], moved[keep], method=cv2.LMEDS)
    if matrix is None or inliers is None or int(inliers.sum()) < MIN_POINTS:
        return None
    return matrix.astype(np.float64)
