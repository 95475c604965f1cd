"""One track per face: detections matched to the faces already followed, landmarks carried and smoothed.

Each frame, ``FaceTracker.advance`` carries every track's landmarks by the
face's measured motion (``motion.face_motion``) and says whether a
detection is wanted on this frame: every ``detect_every``-th frame, after a
cut (tracks end there), and whenever a face's motion could not be
measured. ``correct`` then matches the detections to the tracks (box
overlap and landmark distance, closest pairs first), pulls each matched
track towards its detection (``smoothing.fuse``), starts a track for each
new face and lets a track go unfound for ``max_missed`` detections (it is
still restored where its motion carries it) before ending it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..faces.selection import face_from_landmarks
from ..options import DEFAULT_DETECT_EVERY
from . import motion
from .smoothing import UNSMOOTHED, SmoothingParameters, TemporalParameters, apply_motion, face_scale, fuse, mean_gap


def tracking_parameters(detect_every: int = DEFAULT_DETECT_EVERY, *, steady: bool = True) -> TrackingParameters:
    """Tracking from the two video options every front end shows: ``steady=False`` aligns each frame on its
    own detection (every frame detected, nothing smoothed), as frame-by-frame restoration does."""
    if not steady:
        return TrackingParameters(detect_every=1, max_missed=0, smoothing=UNSMOOTHED, follow_motion=False, temporal=None)
    return TrackingParameters(detect_every=detect_every)


class DetectedFace(Protocol):
    box: tuple[float, float, float, float]
    landmarks: np.ndarray


@dataclass(frozen=True)
class TrackingParameters:
    # Detect on every N-th frame; the landmarks are carried by the measured motion in between.
    detect_every: int = DEFAULT_DETECT_EVERY
    # Detections in a row a track may be missing from and still be restored (where its motion carries it).
    max_missed: int = 3
    # A detection continues a track when their boxes overlap at least this much (intersection over union) ...
    min_overlap: float = 0.3
    # ... and their landmarks are on average closer than this fraction of the face's size.
    max_landmark_gap: float = 0.35
    # Two tracks overlapping more than this follow the same face: the younger one ends.
    duplicate_overlap: float = 0.7
    smoothing: SmoothingParameters = field(default_factory=SmoothingParameters)
    # Carry landmarks by optical flow between frames (off: they stay where they were until the next detection).
    follow_motion: bool = True
    # Average each track's aligned faces over time (``smoothing.TemporalFaceFilter``); None: off.
    temporal: TemporalParameters | None = field(default_factory=TemporalParameters)

    def __post_init__(self) -> None:
        if isinstance(self.detect_every, bool) or not isinstance(self.detect_every, int) or self.detect_every < 1:
            raise ValueError(f"detect_every must be a whole number >= 1; got {self.detect_every!r}")
        if isinstance(self.max_missed, bool) or not isinstance(self.max_missed, int) or self.max_missed < 0:
            raise ValueError(f"max_missed must be a whole number >= 0; got {self.max_missed!r}")


@dataclass
class Track:
    id: int
    landmarks: np.ndarray  # (5, 2), this frame's smoothed landmarks
    motion_known: bool = True  # whether this frame's landmarks were carried by a measured motion
    missed: int = 0  # detections in a row that did not find this face
    detections: int = 1  # how many detections it was matched to (its age, in detections)


@dataclass(frozen=True)
class TrackedFace:
    track_id: int
    landmarks: np.ndarray


def box_of(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """The face box around its landmarks (as the restorer draws it for given landmarks)."""
    return face_from_landmarks(landmarks).box


def overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def match(
    tracks: Sequence[Track], detections: Sequence[DetectedFace], parameters: TrackingParameters
) -> list[tuple[int, int]]:
    """(track index, detection index) pairs: allowed pairs (overlap and landmark gap within limits), closest first."""
    candidates = []
    for t, track in enumerate(tracks):
        track_box = box_of(track.landmarks)
        scale = max(face_scale(track.landmarks), 1e-6)
        for d, detection in enumerate(detections):
            gap = mean_gap(track.landmarks, detection.landmarks) / scale
            if overlap(track_box, detection.box) >= parameters.min_overlap and gap <= parameters.max_landmark_gap:
                candidates.append((gap, t, d))
    pairs, used_tracks, used_detections = [], set(), set()
    for _, t, d in sorted(candidates):
        if t not in used_tracks and d not in used_detections:
            pairs.append((t, d))
            used_tracks.add(t)
            used_detections.add(d)
    return pairs


class FaceTracker:
    """Follows the faces of one clip, frame by frame (``advance``, then ``correct`` when it asked for a detection)."""

    def __init__(self, parameters: TrackingParameters | None = None) -> None:
        self.parameters = parameters or TrackingParameters()
        self.tracks: list[Track] = []
        self._previous: np.ndarray | None = None
        self._since_detection: int | None = None
        self._next_id = 0

    def advance(self, gray: np.ndarray, cut: bool) -> bool:
        """Move to a new frame (8-bit gray); True when a detection should be run on it."""
        previous, self._previous = self._previous, gray
        if cut:
            self.tracks = []
        lost_motion = False
        for track in self.tracks:
            moved = None
            if self.parameters.follow_motion and previous is not None and previous.shape == gray.shape:
                moved = motion.face_motion(previous, gray, track.landmarks)
            track.motion_known = moved is not None
            if moved is not None:
                track.landmarks = apply_motion(moved, track.landmarks)
            lost_motion = lost_motion or (self.parameters.follow_motion and moved is None)
        due = self._since_detection is None or self._since_detection + 1 >= self.parameters.detect_every
        self._since_detection = None if self._since_detection is None else self._since_detection + 1
        return cut or due or lost_motion

    def correct(self, detections: Sequence[DetectedFace]) -> None:
        """Take this frame's detections: continue, start and end tracks."""
        self._since_detection = 0
        pairs = match(self.tracks, detections, self.parameters)
        matched_tracks = {t for t, _ in pairs}
        for t, d in pairs:
            track = self.tracks[t]
            detected = np.asarray(detections[d].landmarks, dtype=np.float64)
            track.detections += 1
            track.landmarks = fuse(
                track.landmarks, detected, self.parameters.smoothing, with_motion=track.motion_known, detections=track.detections
            )
            track.missed = 0
        for t, track in enumerate(self.tracks):
            if t not in matched_tracks:
                track.missed += 1
        matched_detections = {d for _, d in pairs}
        for d, detection in enumerate(detections):
            if d not in matched_detections:
                self.tracks.append(Track(self._next_id, np.asarray(detection.landmarks, dtype=np.float64).copy()))
                self._next_id += 1
        self.tracks = self._without_duplicates([t for t in self.tracks if t.missed <= self.parameters.max_missed])

    def _without_duplicates(self, tracks: list[Track]) -> list[Track]:
        """Tracks in order of age; a track overlapping an older one heavily is the same face twice."""
        kept: list[Track] = []
        for track in sorted(tracks, key=lambda t: t.id):
            box = box_of(track.landmarks)
            if all(overlap(box, box_of(other.landmarks)) <= self.parameters.duplicate_overlap for other in kept):
                kept.append(track)
        return kept

    @property
    def faces(self) -> list[TrackedFace]:
        """The faces to restore on this frame, oldest track first."""
        return [TrackedFace(track.id, track.landmarks.copy()) for track in self.tracks]
