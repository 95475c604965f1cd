"""Alignment and paste-back geometry, with exact numbers."""

from __future__ import annotations

import numpy as np
import pytest

from lib_codeformer.faces import geometry
from lib_codeformer.faces.compositing import crop_face, paste
from lib_codeformer.faces.pixels import Pixels


def similarity(scale: float, angle: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def test_similarity_estimate_recovers_a_known_transform():
    truth = similarity(0.37, 0.4, 120.5, -33.0)
    points = np.array([[10.0, 20.0], [300.0, 40.0], [150.0, 200.0], [20.0, 380.0], [310.0, 370.0]])
    estimate = geometry.estimate_similarity(points, geometry.transform_points(truth, points))
    np.testing.assert_allclose(estimate, truth, atol=1e-9)


def test_template_aligns_to_identity():
    np.testing.assert_allclose(geometry.alignment_matrix(geometry.FFHQ_TEMPLATE_512), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(
        geometry.alignment_matrix(geometry.FFHQ_TEMPLATE_512 * 2 + 7), [[0.5, 0, -3.5], [0, 0.5, -3.5]], atol=1e-12
    )


def test_invert_affine_exact():
    np.testing.assert_array_equal(geometry.invert_affine(np.array([[2.0, 0, 10], [0, 2.0, 20]])), [[0.5, 0, -5], [0, 0.5, -10]])
    matrix = similarity(1.7, -0.3, 5, 9)
    round_trip = geometry.transform_points(geometry.invert_affine(matrix), geometry.transform_points(matrix, [[3.0, 4.0]]))
    np.testing.assert_allclose(round_trip, [[3.0, 4.0]], atol=1e-12)


def test_scale_of_similarity():
    assert geometry.scale_of(similarity(0.25, 1.1, 0, 0)) == pytest.approx(0.25, abs=1e-15)


def test_face_box_clips_to_the_image():
    half_size = np.array([[0.5, 0, 100], [0, 0.5, 50]])  # face crop -> image
    assert geometry.face_box(half_size, 1000, 1000) == (100, 50, 357, 307)
    assert geometry.face_box(half_size, 200, 300) == (100, 50, 300, 200)
    assert geometry.face_box(np.array([[0.5, 0, -400], [0, 0.5, 0]]), 100, 100) is None


def test_feathered_box_mask_exact_values():
    row = np.array([0, 7 / 27, 20 / 27, 1, 1, 1, 1, 20 / 27, 7 / 27, 0])
    np.testing.assert_allclose(geometry.feathered_box_mask(10, 0.3), np.outer(row, row), atol=1e-7)
    mask = geometry.feathered_box_mask()
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[0].max() == 0 and mask[:, -1].max() == 0 and mask[256, 256] == 1
    with pytest.raises(ValueError):
        geometry.feathered_box_mask(10, 0.0)


def test_warp_then_inverse_warp_returns_the_original_region():
    height, width = 600, 700
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([128 + 100 * np.sin(xx / 40), 128 + 100 * np.cos(yy / 50), (xx + yy) % 256 * 0 + 90], axis=2)
    image = np.rint(smooth).astype(np.uint8)
    pixels = Pixels(image)
    to_face = geometry.invert_affine(similarity(0.45, 0.3, 260, 120))  # a rotated face of ~230 px
    crop = crop_face(pixels, to_face)
    output = image.copy()
    mask = geometry.feathered_box_mask()
    assert paste(output, crop, mask, geometry.invert_affine(to_face), pixels)

    x0, y0, x1, y1 = geometry.face_box(geometry.invert_affine(to_face), height, width)
    outside = np.ones((height, width), bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(output[outside], image[outside])  # untouched, bit for bit
    inner = np.zeros((512, 512), np.float32)
    inner[128:384, 128:384] = 1
    inside = _inverse_mask(inner, to_face, height, width) > 0.999
    difference = np.abs(output[inside].astype(int) - image[inside].astype(int))
    assert inside.sum() > 10000
    assert difference.mean() < 0.5 and difference.max() <= 3


def _inverse_mask(mask, to_face, height, width):
    import cv2

    return cv2.warpAffine(mask, geometry.invert_affine(to_face), (width, height))


def test_shrink_matrix_follows_the_resize_pixel_centres():
    from lib_codeformer.faces.compositing import shrink_matrix

    np.testing.assert_array_equal(shrink_matrix(256), [[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(shrink_matrix(128, face_size=512), [[4.0, 0.0, 1.5], [0.0, 4.0, 1.5], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(shrink_matrix(512), np.eye(3))


@pytest.mark.parametrize("scale", [0.05, 0.1, 0.2])
def test_a_small_face_is_pasted_where_it_belongs(scale):
    """Small faces are shrunk before the inverse warp; composed as a pure scale, they landed up to 0.17 px off."""
    yy, xx = np.mgrid[0:512, 0:512]
    centre = np.array([301.0, 207.0])  # off the middle, so a scale error would show as a shift too
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 30.0**2)).astype(np.float32)
    face = np.repeat(blob[:, :, None], 3, axis=2)
    face_to_image = similarity(scale, 0.0, 40.3, 25.7)
    output = np.zeros((120, 120, 3), np.uint16)
    pixels = Pixels(output)
    assert paste(output, face, np.ones((512, 512), np.float32), face_to_image, pixels) is not None
    weights = output[:, :, 0].astype(np.float64)
    rows, cols = np.mgrid[0 : output.shape[0], 0 : output.shape[1]]
    found = np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()
    expected = geometry.transform_points(face_to_image, centre[None])[0]
    assert np.abs(found - expected).max() < 0.02, f"pasted at {found}, belongs at {expected}"
