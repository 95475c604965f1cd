"""Which of the faces found are restored, and what is reported for each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Landmarks closer together than this (pixels) cannot define an alignment.
MIN_LANDMARK_SPREAD = 1e-3


@dataclass
class FaceResult:
    """One face found in the image, and what became of it."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in image pixels
    score: float
    landmarks: np.ndarray  # (5, 2) in image pixels
    restored: bool = False
    reason: str | None = None  # why it was not restored (filtered out, or the error)
    upscaled: float | None = None  # the factor a face upscaler enlarged it by before paste-back (None: not enlarged)
    note: str | None = None  # what went otherwise than asked while it was restored (an upscaler that failed)

    @property
    def enlarged(self) -> bool:
        """Restored and enlarged by a face upscaler (what the front ends count and report)."""
        return self.restored and bool(self.upscaled)

    @property
    def size(self) -> float:
        """The longer side of the box, in pixels (what the face size limits compare)."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def landmark_problem(points: np.ndarray) -> str | None:
    """Why these landmarks cannot be aligned (not finite, all at one point), or None."""
    if not np.isfinite(points).all():
        return "its landmarks are not finite numbers"
    if np.ptp(points, axis=0).max() < MIN_LANDMARK_SPREAD:
        return "its landmarks are degenerate (all at one point)"
    return None


def face_from_landmarks(points: np.ndarray) -> FaceResult:
    """A face known only by its landmarks: the box holds the whole face around them."""
    if points.shape != (5, 2):
        raise ValueError(f"landmarks must be (5, 2) per face; got {points.shape}")
    finite = points[np.isfinite(points).all(axis=1)]
    if len(finite) == 0:
        return FaceResult((0.0, 0.0, 0.0, 0.0), 1.0, points)
    x0, y0 = finite.min(axis=0)
    x1, y1 = finite.max(axis=0)
    margin = max(x1 - x0, y1 - y0) * 0.6  # the landmarks span the inner face; the box holds all of it
    return FaceResult((x0 - margin, y0 - margin, x1 + margin, y1 + margin), 1.0, points)


def choose_faces(
    faces: Sequence[FaceResult],
    shape: tuple[int, int],
    *,
    faces_wanted: str,
    max_faces: int | None,
    min_face_size: int,
    max_face_size: int | None,
) -> list[int]:
    """Indices of the faces to restore; every face left out gets its reason."""
    candidates = []
    for index, face in enumerate(faces):
        problem = landmark_problem(face.landmarks)
        if problem is not None:
            face.reason = problem
        elif face.size < min_face_size:
            face.reason = f"smaller than min_face_size ({face.size:.0f} < {min_face_size} px)"
        elif max_face_size is not None and face.size > max_face_size:
            face.reason = f"larger than max_face_size ({face.size:.0f} > {max_face_size} px)"
        else:
            candidates.append(index)
    if faces_wanted == "largest":
        candidates = sorted(candidates, key=lambda i: -faces[i].size)[:1]
    elif faces_wanted == "center":
        centre = np.array([shape[1] / 2, shape[0] / 2])

        def distance(i: int) -> float:
            box = faces[i].box
            return float(np.hypot(*(np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) - centre)))

        candidates = sorted(candidates, key=distance)[:1]
    if max_faces is not None:
        candidates = sorted(candidates, key=lambda i: -faces[i].size)[:max_faces]
    chosen = set(candidates)
    for index, face in enumerate(faces):
        if index not in chosen and face.reason is None:
            face.reason = f"not selected (faces={faces_wanted}, max_faces={max_faces})"
    return sorted(chosen)
