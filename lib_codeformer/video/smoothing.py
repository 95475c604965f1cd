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
are in docs/video.md and benchmarks/RESULTS.md (``benchmarks/bench_video.py --smoothing``).
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


# Holding the restored face steady: a temporal filter on each tracked face, in aligned coordinates.
#
# Steady landmarks give the network the same face at the same place in every
# frame, but not the same pixels: sensor noise and compression differ from
# frame to frame, and CodeFormer's code lookup turns small input changes into
# visibly different faces. Because the crops of one track are aligned (their
# motion is undone by the alignment), the same pixel of consecutive crops
# shows the same point of the face, so they can be averaged over time:
# recursively, pixel by pixel, with the new crop's weight rising from
# ``gain`` to 1 where it differs from the running average by more than noise
# explains (the mouth opened, an eye blinked): real change is taken at once,
# noise is averaged out. The network's output is averaged the same way,
# with the input's change map (widened) saying where the face really
# changed. A new track (a new face, or any face after a cut) starts afresh.


@dataclass(frozen=True)
class TemporalParameters:
    # Weight of the new aligned face (network input) where it differs from the running average only by noise.
    input_gain: float = 0.35
    # The same for the restored face (network output).
    output_gain: float = 0.35
    # A difference of more than this many noise deviations (the crop's own, estimated) is a real change ...
    change_level: float = 3.0
    # ... taken wholly once it reaches twice that; its map is widened by this (pixels of the 512 crop) for the output.
    change_spread: float = 6.0

    def __post_init__(self) -> None:
        if not (0.0 < self.input_gain <= 1.0 and 0.0 < self.output_gain <= 1.0):
            raise ValueError(f"gains must be in (0, 1]; got {self.input_gain}, {self.output_gain}")


def noise_deviation(difference: np.ndarray) -> float:
    """The standard deviation of the noise in a difference image, from its lower quartile of absolute values.

    For Gaussian noise that quartile is 0.3186 deviations; real change in up
    to three quarters of the face leaves it (nearly) where noise puts it.
    """
    return float(np.percentile(np.abs(difference), 25) / 0.3186) + 1e-6


def change_weights(difference: np.ndarray, gain: float, change_level: float) -> np.ndarray:
    """Per pixel, the new frame's weight: ``gain`` where ``difference`` is noise, 1 where it is real change.

    ``difference``: new minus running average, H x W x C. Averaged over
    channels and a 5 x 5 neighbourhood first, so that single noisy pixels do
    not count as change.
    """
    import cv2

    magnitude = cv2.blur(np.abs(difference).mean(axis=2).astype(np.float32), (5, 5))
    sigma = noise_deviation(difference) / np.sqrt(5.0)  # the blur averages about 5 independent samples
    excess = magnitude / (change_level * sigma) - 1.0
    return (gain + (1.0 - gain) * np.clip(excess, 0.0, 1.0)).astype(np.float32)


def blend_towards(average: np.ndarray, new: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``average + weights * (new - average)``, weights per pixel (H x W) for every channel."""
    return (average + weights[:, :, None] * (new - average)).astype(np.float32)


@dataclass
class _TrackState:
    input_average: np.ndarray
    output_average: np.ndarray | None = None
    change: np.ndarray | None = None  # this frame's input change weights, for the output


class TemporalFaceFilter:
    """Running averages of each track's aligned faces; plugs into ``FaceRestorer.restore_many`` (``for_frames``)."""

    def __init__(self, parameters: TemporalParameters | None = None) -> None:
        self.parameters = parameters or TemporalParameters()
        self._tracks: dict[int, _TrackState] = {}

    def keep_only(self, track_ids: set[int]) -> None:
        """Forget the tracks that ended (their faces are not coming back: tracks end at cuts and after misses)."""
        self._tracks = {track: state for track, state in self._tracks.items() if track in track_ids}

    def for_frames(self, track_ids: list[list[int]]) -> _FramesFilter:
        """The filter for one ``restore_many`` call: ``track_ids[i][j]`` is the track of image i's face j."""
        return _FramesFilter(self, track_ids)

    def network_input(self, track: int, crop: np.ndarray) -> np.ndarray:
        state = self._tracks.get(track)
        if state is None:
            self._tracks[track] = _TrackState(crop.copy())
            return crop
        weights = change_weights(crop - state.input_average, self.parameters.input_gain, self.parameters.change_level)
        state.input_average = blend_towards(state.input_average, crop, weights)
        state.change = weights
        return state.input_average

    def network_output(self, track: int, restored: np.ndarray | None) -> np.ndarray | None:
        import cv2

        state = self._tracks.get(track)
        if restored is None or state is None:
            return restored
        if state.output_average is None or state.change is None:
            state.output_average = restored.copy()
            return restored
        gain = self.parameters.output_gain
        input_change = (state.change - self.parameters.input_gain) / max(1.0 - self.parameters.input_gain, 1e-6)
        spread = cv2.GaussianBlur(input_change, (0, 0), self.parameters.change_spread)
        weights = gain + (1.0 - gain) * np.clip(np.maximum(spread, input_change), 0.0, 1.0)
        state.output_average = blend_towards(state.output_average, restored, weights.astype(np.float32))
        return state.output_average


@dataclass
class _FramesFilter:
    """``FaceFilter`` for one call: maps the restorer's (image, face) keys to tracks."""

    owner: TemporalFaceFilter
    track_ids: list[list[int]]

    def network_input(self, keys: list[tuple[int, int]], crops: list[np.ndarray]) -> list[np.ndarray]:
        return [self.owner.network_input(self.track_ids[i][j], crop) for (i, j), crop in zip(keys, crops, strict=True)]

    def network_output(self, keys: list[tuple[int, int]], restored: list[np.ndarray | None]) -> list[np.ndarray | None]:
        return [self.owner.network_output(self.track_ids[i][j], face) for (i, j), face in zip(keys, restored, strict=True)]
