"""Tracks: matching, new faces, missed detections, cuts, detecting every N-th frame; motion and cuts measured."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from lib_codeformer.video import motion
from lib_codeformer.video.smoothing import UNSMOOTHED, SmoothingParameters
from lib_codeformer.video.tracking import FaceTracker, Track, TrackingParameters, match, overlap

FACE = np.array([[40.0, 40.0], [60.0, 40.0], [50.0, 50.0], [42.0, 60.0], [58.0, 60.0]])


@dataclass
class Found:
    landmarks: np.ndarray

    @property
    def box(self):
        low, high = self.landmarks.min(axis=0), self.landmarks.max(axis=0)
        margin = 0.6 * float((high - low).max())
        return (*(low - margin), *(high + margin))


def shift(dx: float, dy: float) -> np.ndarray:
    """FACE moved by (dx, dy)."""
    return FACE + np.array([dx, dy])


def test_overlap_is_intersection_over_union():
    assert overlap((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert overlap((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert overlap((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0


def test_match_pairs_closest_first_and_refuses_far_faces():
    tracks = [Track(0, FACE), Track(1, shift(200, 0))]
    detections = [Found(shift(201, 1)), Found(shift(1, 0)), Found(shift(0, 400))]
    assert sorted(match(tracks, detections, TrackingParameters())) == [(0, 1), (1, 0)]


def still_tracker(**kwargs) -> FaceTracker:
    """Without optical flow (the frames here are blank): tracking logic only."""
    return FaceTracker(TrackingParameters(follow_motion=False, temporal=None, **kwargs))


BLANK = np.zeros((120, 120), np.uint8)


def test_a_new_face_starts_a_new_track_and_a_known_one_keeps_its_id():
    tracker = still_tracker(smoothing=UNSMOOTHED)
    assert tracker.advance(BLANK, cut=False)
    tracker.correct([Found(FACE)])
    assert [face.track_id for face in tracker.faces] == [0]
    tracker.advance(BLANK, cut=False)
    tracker.correct([Found(shift(1.0, 0.5)), Found(shift(300, 0))])
    assert [face.track_id for face in tracker.faces] == [0, 1]
    np.testing.assert_allclose(tracker.faces[0].landmarks, shift(1.0, 0.5))  # unsmoothed: the detection itself


def test_a_missed_detection_is_tolerated_for_max_missed_detections():
    tracker = still_tracker(max_missed=2)
    tracker.advance(BLANK, cut=False)
    tracker.correct([Found(FACE)])
    for _ in range(2):
        tracker.advance(BLANK, cut=False)
        tracker.correct([])
        assert [face.track_id for face in tracker.faces] == [0]  # still restored where it was
    tracker.advance(BLANK, cut=False)
    tracker.correct([])
    assert tracker.faces == []
    tracker.advance(BLANK, cut=False)
    tracker.correct([Found(FACE)])
    assert [face.track_id for face in tracker.faces] == [1]  # it came back too late: a new track


def test_a_cut_ends_every_track_and_asks_for_a_detection():
    tracker = still_tracker(detect_every=10)
    tracker.advance(BLANK, cut=False)
    tracker.correct([Found(FACE)])
    assert not tracker.advance(BLANK, cut=False)  # not due yet
    assert tracker.advance(BLANK, cut=True)
    assert tracker.faces == []
    tracker.correct([Found(FACE)])
    assert [face.track_id for face in tracker.faces] == [1]


def test_detect_every_n_frames():
    tracker = still_tracker(detect_every=3)
    asked = []
    for _ in range(7):
        due = tracker.advance(BLANK, cut=False)
        asked.append(due)
        if due:
            tracker.correct([Found(FACE)])
    assert asked == [True, False, False, True, False, False, True]


def test_smoothing_pulls_a_fraction_of_the_way():
    tracker = still_tracker(smoothing=SmoothingParameters(gain=0.25))
    for _ in range(4):  # four detections of the same landmarks: the plain average is FACE
        tracker.advance(BLANK, cut=False)
        tracker.correct([Found(FACE)])
    tracker.advance(BLANK, cut=False)
    tracker.correct([Found(shift(0.4, 0.0))])  # a noise-sized gap; no motion measured: gain_without_motion (0.6)
    np.testing.assert_allclose(tracker.faces[0].landmarks, shift(0.4 * 0.6, 0.0))


def test_duplicate_tracks_of_one_face_are_merged():
    tracker = still_tracker()
    tracker.advance(BLANK, cut=False)
    tracker.correct([Found(FACE), Found(shift(3.0, 0.0))])  # two detections of one face (a detector's double)
    assert len(tracker.faces) == 1


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="detect_every"):
        TrackingParameters(detect_every=0)
    with pytest.raises(ValueError, match="max_missed"):
        TrackingParameters(max_missed=-1)


def shifted(image: np.ndarray, dx: float, dy: float, degrees: float = 0.0) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D((256, 256), degrees, 1.0)
    matrix[:, 2] += (dx, dy)
    return cv2.warpAffine(image, matrix, (image.shape[1], image.shape[0]), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


ASTRONAUT_FACE = np.array([[200.0, 101.0], [247.0, 102.0], [220.0, 124.0], [198.0, 142.0], [239.0, 143.0]])


def test_face_motion_measures_sub_pixel_shifts_and_turns(astronaut):
    gray = motion.gray(astronaut)
    moved = shifted(gray, 0.37, -0.61, degrees=0.8)
    measured = motion.face_motion(gray, moved, ASTRONAUT_FACE)
    assert measured is not None
    truth = cv2.getRotationMatrix2D((256, 256), 0.8, 1.0)
    truth[:, 2] += (0.37, -0.61)
    error = np.hypot(*((ASTRONAUT_FACE @ measured[:, :2].T + measured[:, 2]) - (ASTRONAUT_FACE @ truth[:, :2].T + truth[:, 2])).T)
    assert error.max() < 0.08  # pixels: a detector's landmarks are off by about 1


def test_face_motion_is_none_without_texture_or_outside_the_picture(astronaut):
    flat = np.full((256, 256), 128, np.uint8)
    assert motion.face_motion(flat, flat, ASTRONAUT_FACE / 2) is None
    gray = motion.gray(astronaut)
    assert motion.face_motion(gray, gray, ASTRONAUT_FACE + 2000) is None


def test_cuts_are_found_and_motion_is_not(astronaut):
    gray = motion.gray(astronaut)
    still = motion.thumbnail(gray)
    assert not motion.is_cut(still, motion.thumbnail(shifted(gray, 3.0, 2.0)))
    assert not motion.is_cut(None, still)
    assert motion.is_cut(still, motion.thumbnail(np.ascontiguousarray(gray[::-1])))
    assert motion.is_cut(still, motion.thumbnail(gray[:200]))  # another size
