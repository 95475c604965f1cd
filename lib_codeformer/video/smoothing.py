"""Holding a face's five landmarks steady over time without lagging its real motion.

A detector's landmarks on consecutive frames of a still face differ by a
fraction of a pixel to a pixel (noise, compression, the detector's own
grid), and the face crop, therefore the network's input, jitters with them.
Averaging detections over time removes that jitter but lags a moving face.

The filter here is a motion-compensated one (a complementary filter): each
frame the previous landmarks are first carried by the face's measured
motion between the two frames (``motion.face_motion``: optical flow on the
face, accurate to a few hundredths of a pixel), then pulled a small step
(``gain``) towards the new detection. Real motion is followed at once,
through the flow; the detector's noise is averaged over about ``2 / gain``
detections; the flow's small errors cannot accumulate, because the
detections keep pulling. A new face's first detections are averaged
plainly (gain ``1 / n`` for its ``n``-th detection, down to ``gain``), so it
settles as fast as averaging allows. When the prediction and the detection disagree by
more than detection noise can explain (the flow lost the face, the face
turned fast), the step grows to all of the detection (``snap``).

Pure functions on numpy arrays: the parameters and their measured effect
are in the README's Video section (``benchmarks/bench_video.py --smoothing``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothingParameters:
    """How strongly detections are averaged; distances are fractions of the face's size (``face_scale``)."""

    # Fraction of the gap between prediction and detection closed per detection.
    gain: float = 0.2
    # Below this mean landmark gap the detection is taken as noise (``gain`` applies) ...
    noise_gap: float = 0.03
    # ... and from this gap up it is taken as the truth (the prediction went wrong): gain 1.
    snap_gap: float = 0.12
    # Without a motion measurement the prediction is only the last position: trust detections more.
    gain_without_motion: float = 0.6

    def __post_init__(self) -> None:
        if not (0.0 < self.gain <= 1.0 and 0.0 < self.gain_without_motion <= 1.0):
            raise ValueError(f"gains must be in (0, 1]; got {self.gain}, {self.gain_without_motion}")
        if not 0.0 <= self.noise_gap < self.snap_gap:
            raise ValueError(f"need 0 <= noise_gap < snap_gap; got {self.noise_gap}, {self.snap_gap}")


# No smoothing: every frame takes its detection as it is (what restoring frame by frame does).
UNSMOOTHED = SmoothingParameters(gain=1.0, gain_without_motion=1.0)


def face_scale(landmarks: np.ndarray) -> float:
    """A size of the face that does not depend on its pose much: eye centre to mouth centre plus eye to eye."""
    eyes = landmarks[:2].mean(axis=0)
    mouth = landmarks[3:5].mean(axis=0)
    return float(np.hypot(*(mouth - eyes)) + np.hypot(*(landmarks[1] - landmarks[0])))


def mean_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between corresponding landmarks, in pixels."""
    return float(np.hypot(*(a - b).T).mean())


def apply_motion(matrix: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Landmarks carried by a 2 x 3 affine motion."""
    return landmarks @ matrix[:, :2].T + matrix[:, 2]


def step_gain(
    gap: float, scale: float, parameters: SmoothingParameters, *, with_motion: bool, detections: int = 1_000_000
) -> float:
    """How much of the ``detections``-th detection to take: ``gain`` (at least ``1 / detections``, the plain
    average of a new face's detections) for a gap that noise explains, rising linearly to 1 at ``snap_gap``."""
    base = max(parameters.gain if with_motion else parameters.gain_without_motion, 1.0 / max(detections, 1))
    relative = gap / max(scale, 1e-6)
    ramp = (relative - parameters.noise_gap) / (parameters.snap_gap - parameters.noise_gap)
    return float(base + (1.0 - base) * np.clip(ramp, 0.0, 1.0))


def fuse(
    predicted: np.ndarray,
    detected: np.ndarray,
    parameters: SmoothingParameters,
    *,
    with_motion: bool,
    detections: int = 1_000_000,
) -> np.ndarray:
    """The landmarks for this frame: the prediction moved ``step_gain`` of the way to the ``detections``-th detection."""
    gap = mean_gap(predicted, detected)
    gain = step_gain(gap, face_scale(detected), parameters, with_motion=with_motion, detections=detections)
    return predicted + gain * (detected - predicted)
