"""Steady faces, measured on the test clip with known motion (slow drift, shake, noise, a cut, a face entering)."""

from __future__ import annotations

import numpy as np
import pytest

from lib_codeformer import FaceRestorer
from lib_codeformer.options import DEFAULT_DETECT_EVERY
from lib_codeformer.testing import steadiness
from lib_codeformer.testing.steadiness import SteadyClip
from lib_codeformer.video.tracking import TrackingParameters, tracking_parameters


def frame_by_frame_tracking() -> TrackingParameters:
    return tracking_parameters(1, steady=False)


def test_the_clip_moves_as_it_says(astronaut):
    clip = SteadyClip(astronaut, frames=8)
    first, second = clip.frame(0).astype(float), clip.frame(1).astype(float)
    assert first.shape == (240, 320, 3) and np.abs(first - second).mean() > 1  # it moves
    counts = [len(clip.truths(i)) for i in range(8)]
    assert counts[:4] == [1, 1, 1, 1] and counts[-1] == 2 and counts == sorted(counts)  # a second face enters after the cut
    truth = clip.truths(0)[0]
    centre = np.array(clip.face_centre) @ truth.matrix[:, :2].T + truth.matrix[:, 2]
    assert np.hypot(*(centre - (160, 120))) < 10  # the face's centre is where the path puts it
    assert steadiness.flicker(clip, list(clip)) > 1  # the input flickers (sensor noise)
    still = [clip.frame(0)] * 8
    with pytest.raises(ValueError):
        steadiness.flicker(SteadyClip(astronaut, frames=2), still[:2])


def test_tracked_landmarks_are_steadier_than_detections_and_do_not_lag(astronaut, identity_restorer):
    clip = SteadyClip(astronaut, frames=24)
    detected, detections = steadiness.track_only(identity_restorer, clip, frame_by_frame_tracking())
    reference = steadiness.reference_landmarks(clip, detected)
    raw = steadiness.landmark_errors(clip, detected, reference)
    ours, our_detections = steadiness.track_only(identity_restorer, clip, TrackingParameters(detect_every=DEFAULT_DETECT_EVERY))
    steady = steadiness.landmark_errors(clip, ours, reference)
    assert detections == 24 and our_detections < 24
    assert raw.jitter > 0.5  # YuNet's landmarks move by more than half a pixel from frame to frame
    assert steady.jitter <= 0.35 * raw.jitter
    assert abs(steady.lag) <= 1.0 and steady.mean_error <= raw.mean_error


def test_flicker_is_at_most_half_of_frame_by_frame_restoration(astronaut, fast_reference_model):
    """The full network (synthetic weights): ours against the official per-frame way, on a short version of the clip."""
    restorer = FaceRestorer(fast_reference_model, detector="yunet", device="cpu")
    clip = SteadyClip(astronaut, frames=6)
    frame_by_frame, reference = steadiness.measure_frame_by_frame(restorer, clip)
    ours = steadiness.measure_steady(restorer, clip, reference, "ours")
    assert ours.flicker <= 0.5 * frame_by_frame.flicker, (ours, frame_by_frame)
    assert abs(ours.landmarks.lag) <= 1.0
    # the same faces, except that the entering one is found at the next detection, up to DEFAULT_DETECT_EVERY - 1 frames later
    assert ours.faces >= frame_by_frame.faces - (DEFAULT_DETECT_EVERY - 1)
