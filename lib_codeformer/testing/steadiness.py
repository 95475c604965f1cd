"""Measurement harness: a test clip whose true motion is known, and how steady a restored clip is on it.

Used by the tests and ``benchmarks/bench_video.py``; nothing at run time imports it.

The clip (``SteadyClip``): a face photo (``skimage.data.astronaut()`` in
the tests and benchmark) moved along a slow path (a drift with a slight
zoom and turn) plus small random sub-pixel shake, with per-frame sensor
noise; at ``cut`` the shot changes (another framing, mirrored, moving the
other way) and a second face slides in from the right. Each frame comes
with the true transform of each face (``FaceTruth``).

Flicker (``flicker``): for each face and each pair of consecutive frames
of a shot in which the face is wholly in the picture, both frames are
warped back by their true transforms, so that a face that is perfectly
steady gives two identical crops; the mean absolute difference (0..255,
over RGB) inside the inner face is averaged over all pairs. Sensor noise
alone gives the input's flicker; a restoration that holds the face steady
gives less.

Lag (``landmark_errors``): how far the landmarks used to restore each
frame are from the truth, in pixels, and how far they trail it along the
direction of the motion.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

# The astronaut's face in skimage.data.astronaut(): its five landmarks (YuNet, averaged) and centre.
ASTRONAUT_FACE_CENTRE = (222.0, 120.0)


@dataclass(frozen=True)
class FaceTruth:
    layer: int  # which face: 0 the first shot's and second shot's main face, 1 the face that enters
    matrix: np.ndarray  # 2 x 3, photo coordinates -> frame coordinates
    velocity: np.ndarray  # (2,) the smooth path's motion per frame, without the shake (frame pixels)


@dataclass(frozen=True)
class SteadyClip:
    """A clip of ``frames`` frames of ``width`` x ``height`` made from ``photo``; the shot changes at ``cut``."""

    photo: np.ndarray
    width: int = 320
    height: int = 240
    frames: int = 24
    face_centre: tuple[float, float] = ASTRONAUT_FACE_CENTRE
    drift: float = 1.2  # pixels per frame along the slow path
    shake: float = 0.3  # standard deviation of the per-frame shake, pixels
    noise: float = 4.0  # standard deviation of the sensor noise, 0..255
    scale: float = 1.0  # the face's size in the frame relative to the photo
    seed: int = 0
    second_shot: bool = True  # False: one shot, one face (the speed benchmark's clip)

    @property
    def cut(self) -> int:
        return self.frames // 2 if self.second_shot else self.frames

    def truths(self, index: int) -> list[FaceTruth]:
        """The true transform of each face on frame ``index`` (the entering face once it is partly in view)."""
        rng = np.random.default_rng((self.seed, index))
        shake = rng.normal(0.0, self.shake, size=(2, 2))
        second_shot = index >= self.cut
        local = index - self.cut if second_shot else index
        length = self.frames - self.cut if second_shot else self.cut
        progress = local / max(length - 1, 1)
        centre = np.array([self.width / 2, self.height / 2])
        direction = np.array([-1.0, 0.35]) if second_shot else np.array([1.0, 0.25])
        direction = direction / np.hypot(*direction)
        offset = direction * self.drift * (local - (length - 1) / 2)
        scale = self.scale * ((1.25 + 0.06 * progress) if second_shot else (1.0 + 0.05 * progress))
        angle = (-1.5 if second_shot else 2.0) * progress
        main = _similarity(self.face_centre, centre + offset + shake[0], scale, angle, mirror=second_shot)
        found = [FaceTruth(0, main, direction * self.drift)]
        if second_shot:
            entering = min(1.0, local / max(0.6 * (length - 1), 1))
            start, stop = self.width + 0.3 * self.width, self.width - 0.22 * self.width
            x = start + (stop - start) * entering
            speed = 0.0 if entering >= 1.0 else (stop - start) / max(0.6 * (length - 1), 1)
            second = _similarity(self.face_centre, (x + shake[1][0], 0.42 * self.height + shake[1][1]), 0.8 * self.scale, 0.0)
            if _face_corners(second, self.face_centre)[:, 0].min() < self.width:
                found.append(FaceTruth(1, second, np.array([speed, 0.0])))
        return found

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index``: the moved photo, the entering face over it, then sensor noise (uint8 RGB)."""
        truths = self.truths(index)
        size = (self.width, self.height)
        image = cv2.warpAffine(self.photo, truths[0].matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        image = image.astype(np.float32)
        for truth in truths[1:]:
            layer = cv2.warpAffine(self.photo, truth.matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            alpha = cv2.warpAffine(_oval_mask(self.photo.shape[:2], self.face_centre), truth.matrix, size, flags=cv2.INTER_LINEAR)
            image += (layer.astype(np.float32) - image) * alpha[:, :, None]
        rng = np.random.default_rng((self.seed, index, 1))
        image += rng.normal(0.0, self.noise, size=image.shape).astype(np.float32)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)

    def __iter__(self):
        return (self.frame(index) for index in range(self.frames))


def _similarity(
    source: Sequence[float], target: Sequence[float], scale: float, degrees: float, *, mirror: bool = False
) -> np.ndarray:
    """Photo -> frame: mirror (optionally), turn and scale about ``source``, then put ``source`` on ``target``."""
    radians = np.deg2rad(degrees)
    linear = scale * np.array([[np.cos(radians), -np.sin(radians)], [np.sin(radians), np.cos(radians)]])
    if mirror:
        linear = linear @ np.diag([-1.0, 1.0])
    shift = np.asarray(target, dtype=np.float64) - linear @ np.asarray(source, dtype=np.float64)
    return np.concatenate([linear, shift[:, None]], axis=1)


def _oval_mask(shape: tuple[int, int], centre: Sequence[float]) -> np.ndarray:
    """The entering face's cut-out: a soft oval around the face in photo coordinates."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    distance = np.sqrt(((xx - centre[0]) / 62.0) ** 2 + ((yy - centre[1]) / 80.0) ** 2)
    return np.clip((1.15 - distance) / 0.3, 0.0, 1.0).astype(np.float32)


# The inner face in photo coordinates (around the landmarks), where flicker is measured.
_INNER_FACE_HALF = (40, 48)


def _face_corners(matrix: np.ndarray, centre: Sequence[float]) -> np.ndarray:
    hx, hy = _INNER_FACE_HALF
    corners = np.array([[-hx, -hy], [hx, -hy], [-hx, hy], [hx, hy]], dtype=np.float64) + centre
    return corners @ matrix[:, :2].T + matrix[:, 2]


def _inside(matrix: np.ndarray, centre: Sequence[float], width: int, height: int) -> bool:
    corners = _face_corners(matrix, centre)
    return bool((corners >= 1).all() and (corners[:, 0] <= width - 2).all() and (corners[:, 1] <= height - 2).all())


def steady_crop(image: np.ndarray, matrix: np.ndarray, centre: Sequence[float]) -> np.ndarray:
    """The inner face of ``image`` warped back to photo coordinates (float32): the same for a face that did not move."""
    hx, hy = _INNER_FACE_HALF
    to_frame = matrix @ np.array([[1.0, 0.0, centre[0] - hx], [0.0, 1.0, centre[1] - hy], [0.0, 0.0, 1.0]])
    crop = cv2.warpAffine(image, to_frame, (2 * hx, 2 * hy), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return crop.astype(np.float32)


def _oval_weights() -> np.ndarray:
    hx, hy = _INNER_FACE_HALF
    yy, xx = np.mgrid[0 : 2 * hy, 0 : 2 * hx].astype(np.float32)
    return ((((xx + 0.5 - hx) / hx) ** 2 + ((yy + 0.5 - hy) / hy) ** 2) <= 1.0).astype(np.float32)


def flicker(clip: SteadyClip, outputs: Sequence[np.ndarray]) -> float:
    """Mean absolute difference (0..255) between consecutive frames inside each face, its true motion undone."""
    weights = _oval_weights()[:, :, None]
    differences = []
    for index in range(1, len(outputs)):
        if index == clip.cut:
            continue
        before = {truth.layer: truth for truth in clip.truths(index - 1)}
        for truth in clip.truths(index):
            previous = before.get(truth.layer)
            if previous is None or not (
                _inside(truth.matrix, clip.face_centre, clip.width, clip.height)
                and _inside(previous.matrix, clip.face_centre, clip.width, clip.height)
            ):
                continue
            a = steady_crop(outputs[index - 1], previous.matrix, clip.face_centre)
            b = steady_crop(outputs[index], truth.matrix, clip.face_centre)
            differences.append(float((np.abs(a - b) * weights).sum() / (weights.sum() * a.shape[2])))
    if not differences:
        raise ValueError("no pair of consecutive frames shows a whole face: the clip is too short")
    return float(np.mean(differences))


@dataclass(frozen=True)
class LandmarkErrors:
    mean_error: float  # mean distance of the landmarks' centre from the truth, pixels
    lag: float  # mean distance it trails the truth along the motion (negative: ahead), pixels
    jitter: float  # mean frame-to-frame change of its offset from the truth, pixels


def reference_landmarks(clip: SteadyClip, detections: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """Where the detector puts the main face's landmarks, in photo coordinates, averaged over the first shot.

    Taking the detector's own average as the truth leaves out its constant
    bias, so the errors measured are those of following the face over time.
    """
    mapped = []
    for index in range(clip.cut):
        truth = clip.truths(index)[0]
        inverse = cv2.invertAffineTransform(truth.matrix)
        for points in detections[index]:
            photo = points @ inverse[:, :2].T + inverse[:, 2]
            if np.hypot(*(photo.mean(axis=0) - clip.face_centre)) < 30:
                mapped.append(photo)
    if not mapped:
        raise ValueError("the main face was not detected in the first shot")
    return np.mean(mapped, axis=0)


def landmark_errors(clip: SteadyClip, used: Sequence[Sequence[np.ndarray]], reference: np.ndarray) -> LandmarkErrors:
    """How the main face's landmarks in the first shot (the slow path) follow the truth."""
    offsets, along = [], []
    for index in range(clip.cut):
        truth = clip.truths(index)[0]
        true_centre = (reference @ truth.matrix[:, :2].T + truth.matrix[:, 2]).mean(axis=0)
        nearest = min(used[index], key=lambda points: np.hypot(*(points.mean(axis=0) - true_centre)), default=None)
        if nearest is None:
            continue
        offset = nearest.mean(axis=0) - true_centre
        offsets.append(offset)
        along.append(-float(offset @ truth.velocity) / max(float(np.hypot(*truth.velocity)), 1e-9))
    if not offsets:
        raise ValueError("no landmarks were used for the main face")
    offsets_array = np.array(offsets)
    steps = np.hypot(*np.diff(offsets_array, axis=0).T) if len(offsets_array) > 1 else np.zeros(1)
    return LandmarkErrors(float(np.hypot(*offsets_array.T).mean()), float(np.mean(along)), float(steps.mean()))


@dataclass(frozen=True)
class Measurement:
    """One way of restoring the clip, measured."""

    name: str
    flicker: float  # see ``flicker``
    landmarks: LandmarkErrors | None  # None for the input (no landmarks used)
    faces: int  # faces restored over the clip
    seconds: float


def measure_input(clip: SteadyClip) -> Measurement:
    """The input's own flicker: sensor noise, and the resampling of the shake."""
    return Measurement("input", flicker(clip, list(clip)), None, 0, 0.0)


def measure_frame_by_frame(restorer: Any, clip: SteadyClip, **options: Any) -> tuple[Measurement, np.ndarray]:
    """Each frame detected and restored on its own (as the official video script does), and the detector's
    average landmarks (``reference_landmarks``) that the other measurements are compared with."""
    started = time.perf_counter()
    results = [restorer.restore(frame, **options) for frame in clip]
    seconds = time.perf_counter() - started
    used = [[face.landmarks for face in result.faces] for result in results]
    reference = reference_landmarks(clip, used)
    measurement = Measurement(
        "frame by frame",
        flicker(clip, [result.image for result in results]),
        landmark_errors(clip, used, reference),
        sum(result.restored_count for result in results),
        seconds,
    )
    return measurement, reference


def measure_steady(
    restorer: Any, clip: SteadyClip, reference: np.ndarray, name: str, tracking: Any = None, **options: Any
) -> Measurement:
    """The video pipeline (tracking, smoothing, shared batches) with ``tracking`` (``TrackingParameters``)."""
    from ..video.pipeline import restore_array_frames

    started = time.perf_counter()
    frames = list(restore_array_frames(restorer, iter(clip), tracking=tracking, **options))
    seconds = time.perf_counter() - started
    outputs = [frame.restored if frame.restored is not None else frame.image for frame in frames]
    used = [[face.landmarks for face in frame.faces] for frame in frames]
    return Measurement(
        name, flicker(clip, outputs), landmark_errors(clip, used, reference), sum(f.restored_count for f in frames), seconds
    )


def track_only(restorer: Any, clip: SteadyClip, tracking: Any) -> tuple[list[list[np.ndarray]], int]:
    """The landmarks the pipeline would restore each frame with (no network), and how many frames were detected."""
    from ..options import RestoreOptions
    from ..video.frames import ClipFrame
    from ..video.pipeline import analyse

    frames = list(analyse((ClipFrame(i, image) for i, image in enumerate(clip)), restorer, RestoreOptions(), tracking))
    return [[face.landmarks for face in frame.faces] for frame in frames], sum(frame.detected for frame in frames)
