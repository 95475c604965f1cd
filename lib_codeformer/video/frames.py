"""A frame on its way through the video pipeline (decoder to tracker to restorer to encoder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..faces.selection import FaceResult
from .tracking import TrackedFace


@dataclass
class ClipFrame:
    """One frame on its way through the pipeline."""

    index: int
    image: np.ndarray  # H x W x 3 RGB (uint8 or uint16), as decoded
    source: Any = None  # the decoder's own frame, so an unchanged frame can be written exactly as decoded
    faces: list[TrackedFace] = field(default_factory=list)  # tracked faces, their smoothed landmarks
    detected: bool = False  # whether detection ran on this frame
    restored: np.ndarray | None = None  # the restored image; None when no face was restored
    results: list[FaceResult] = field(default_factory=list)  # what became of each tracked face
    coverage: np.ndarray | None = None  # where faces were pasted, when asked for (H x W float32, 0..1)
    changed: list[tuple[int, int, int, int]] = field(default_factory=list)  # the boxes paste-back wrote

    @property
    def restored_count(self) -> int:
        return sum(face.restored for face in self.results)
