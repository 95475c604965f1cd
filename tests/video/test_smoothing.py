"""The landmark filter and the per-face temporal filter, with numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lib_codeformer.video import smoothing
from lib_codeformer.video.smoothing import SmoothingParameters, TemporalFaceFilter, TemporalParameters

# Eyes 10 px apart, mouth 10 px below them: face_scale = 10 + 10.
FACE = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [1.0, 10.0], [9.0, 10.0]])
PARAMETERS = SmoothingParameters(gain=0.2, noise_gap=0.03, snap_gap=0.12)


def shift(dx: float, dy: float) -> np.ndarray:
    """FACE moved by (dx, dy)."""
    return FACE + np.array([dx, dy])


def test_face_scale_is_eye_to_mouth_plus_eye_to_eye():
    assert smoothing.face_scale(FACE) == pytest.approx(20.0)
    assert smoothing.face_scale(FACE * 3) == pytest.approx(60.0)


def test_step_gain_takes_noise_gently_and_real_jumps_wholly():
    # gaps relative to the face (20 px): 0.5 px = 0.025 (noise), 1.5 px = 0.075 (half way), 3 px = 0.15 (a jump)
    assert smoothing.step_gain(0.5, 20.0, PARAMETERS, with_motion=True) == pytest.approx(0.2)
    assert smoothing.step_gain(1.5, 20.0, PARAMETERS, with_motion=True) == pytest.approx(0.2 + 0.8 * 0.5)
    assert smoothing.step_gain(3.0, 20.0, PARAMETERS, with_motion=True) == pytest.approx(1.0)
    # without a motion measurement the prediction is worth less
    assert smoothing.step_gain(0.5, 20.0, PARAMETERS, with_motion=False) == pytest.approx(0.6)


def test_a_new_face_averages_its_first_detections_plainly():
    assert smoothing.step_gain(0.5, 20.0, PARAMETERS, with_motion=True, detections=1) == pytest.approx(1.0)
    assert smoothing.step_gain(0.5, 20.0, PARAMETERS, with_motion=True, detections=2) == pytest.approx(0.5)
    assert smoothing.step_gain(0.5, 20.0, PARAMETERS, with_motion=True, detections=4) == pytest.approx(0.25)
    assert smoothing.step_gain(0.5, 20.0, PARAMETERS, with_motion=True, detections=9) == pytest.approx(0.2)


def test_fuse_moves_a_fraction_of_the_way():
    noisy = shift(0.5, 0.0)
    np.testing.assert_allclose(smoothing.fuse(FACE, noisy, PARAMETERS, with_motion=True), shift(0.1, 0.0))
    jumped = shift(4.0, 0.0)
    np.testing.assert_allclose(smoothing.fuse(FACE, jumped, PARAMETERS, with_motion=True), jumped)


def test_unsmoothed_takes_every_detection():
    noisy = shift(0.5, -0.3)
    np.testing.assert_allclose(smoothing.fuse(FACE, noisy, smoothing.UNSMOOTHED, with_motion=True), noisy)
    np.testing.assert_allclose(smoothing.fuse(FACE, noisy, smoothing.UNSMOOTHED, with_motion=False), noisy)


def test_apply_motion():
    shift_and_turn = np.array([[0.0, -1.0, 3.0], [1.0, 0.0, -2.0]])  # 90 degrees, then (3, -2)
    np.testing.assert_allclose(smoothing.apply_motion(shift_and_turn, np.array([[1.0, 0.0], [0.0, 2.0]])), [[3, -1], [1, -2]])


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="gains"):
        SmoothingParameters(gain=0.0)
    with pytest.raises(ValueError, match="noise_gap"):
        SmoothingParameters(noise_gap=0.2, snap_gap=0.1)
    with pytest.raises(ValueError, match="gains"):
        TemporalParameters(input_gain=1.5)


def test_noise_deviation_of_gaussian_noise():
    noise = np.random.default_rng(0).normal(0.0, 0.02, size=(200, 200, 3))
    assert smoothing.noise_deviation(noise) == pytest.approx(0.02, rel=0.02)


def test_change_weights_gain_for_noise_one_for_change():
    rng = np.random.default_rng(1)
    difference = rng.normal(0.0, 0.01, size=(64, 64, 3)).astype(np.float32)
    difference[:, 32:] += 0.5  # the right half really changed
    weights = smoothing.change_weights(difference, gain=0.35, change_level=3.0)
    assert weights[:, :28].max() < 0.4  # noise: about the gain
    assert weights[:, :28].mean() == pytest.approx(0.35, abs=0.01)
    assert weights[:, 36:].min() == pytest.approx(1.0)


def test_temporal_filter_averages_noise_and_takes_change_at_once():
    crops = TemporalFaceFilter(TemporalParameters(input_gain=0.35, output_gain=0.5))
    first = np.zeros((32, 32, 3), np.float32)
    assert crops.network_input(7, first) is first  # a new track starts from its own face
    second = np.full((32, 32, 3), 0.01, np.float32)
    second[:, 16:] = 0.5  # half of the face changed for real
    averaged = crops.network_input(7, second)
    np.testing.assert_allclose(averaged[:, :8], 0.35 * 0.01, rtol=1e-5)  # noise-sized: gain of the way
    np.testing.assert_allclose(averaged[:, 24:], 0.5)  # real change: taken wholly
    # the output follows the input's change map: the restored face moves half way where the input did not change
    restored_first = np.zeros((32, 32, 3), np.float32)
    crops.keep_only({7})
    assert crops.network_output(7, restored_first) is restored_first
    third = second + np.random.default_rng(2).normal(0.0, 0.01, size=second.shape).astype(np.float32)
    crops.network_input(7, third)  # only noise changed
    out = crops.network_output(7, np.full((32, 32, 3), 0.2, np.float32))
    assert 0.09 < float(out[:, :2].mean()) < 0.11  # 0.5 of the way from 0 to 0.2 where nothing changed


def test_temporal_filter_forgets_ended_tracks():
    crops = TemporalFaceFilter()
    crops.network_input(1, np.zeros((8, 8, 3), np.float32))
    crops.keep_only({2})
    fresh = np.ones((8, 8, 3), np.float32)
    assert crops.network_input(1, fresh) is fresh  # track 1 ended: no average with its old face


def test_frames_filter_maps_the_restorers_keys_to_tracks():
    crops = TemporalFaceFilter()
    view = crops.for_frames([[5], [5, 9]])  # image 0 has track 5, image 1 has tracks 5 and 9
    a, b, c = (np.full((8, 8, 3), v, np.float32) for v in (0.0, 0.3, 0.6))
    first, second, third = view.network_input([(0, 0), (1, 0), (1, 1)], [a, b, c])
    assert first is a and third is c  # new tracks 5 and 9
    assert 0.0 < float(second.mean()) < 0.3  # track 5's second face averaged with its first
