"""The face pipeline end to end: real detection (YuNet) on real photos, every kind of input."""

from __future__ import annotations

import itertools
import logging
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from support import IdentityNetwork

from lib_codeformer import FaceRestorer
from lib_codeformer.acceleration import buffers
from lib_codeformer.faces import detection
from lib_codeformer.faces.geometry import face_box, invert_affine
from lib_codeformer.faces.pixels import Pixels, is_grayscale
from lib_codeformer.network.synthetic import random_weights_like

ASTRONAUT_FACE = (178, 63, 267, 175)  # YuNet's box, x0 y0 x1 y1


def face_crop(astronaut: np.ndarray) -> np.ndarray:
    return astronaut[20:220, 130:320]


def outside_boxes(shape: tuple[int, int], result) -> np.ndarray:
    """Pixels no restored face's paste-back region touches."""
    from lib_codeformer.faces.geometry import alignment_matrix

    keep = np.ones(shape[:2], bool)
    for face in result.faces:
        if face.restored:
            box = face_box(invert_affine(alignment_matrix(face.landmarks)), *shape[:2])
            keep[box[1] : box[3], box[0] : box[2]] = False
    return keep


def test_finds_and_restores_the_astronaut(identity_restorer, astronaut):
    result = identity_restorer.restore(astronaut)
    assert result.detector == "yunet"
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.restored and face.reason is None
    assert np.allclose(face.box, ASTRONAUT_FACE, atol=3)
    assert face.landmarks.shape == (5, 2) and 0.8 < face.score <= 1
    keep = outside_boxes(astronaut.shape, result)
    assert keep.sum() > 0.8 * keep.size
    np.testing.assert_array_equal(result.image[keep], astronaut[keep])
    # An identity "network" gives the same face back: paste-back adds no visible error.
    x0, y0, x1, y1 = ASTRONAUT_FACE
    assert np.abs(result.image[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1]).mean() < 2.0


def test_real_network_restores_only_the_face(fast_reference_model, astronaut):
    restorer = FaceRestorer(fast_reference_model, detector="yunet", device="cpu")
    result = restorer.restore(astronaut, fidelity=0.5)
    assert result.restored_count == 1
    keep = outside_boxes(astronaut.shape, result)
    np.testing.assert_array_equal(result.image[keep], astronaut[keep])
    x0, y0, x1, y1 = ASTRONAUT_FACE
    assert np.abs(result.image[y0:y1, x0:x1].astype(int) - astronaut[y0:y1, x0:x1]).mean() > 10


def test_no_face_returns_the_image_bit_for_bit(small_restorer):
    gradient = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (200, 1, 3))
    result = small_restorer.restore(gradient)
    assert result.faces == []
    np.testing.assert_array_equal(result.image, gradient)
    assert result.image is not gradient


def test_tiny_image(small_restorer):
    tiny = np.full((20, 24, 3), 90, np.uint8)
    result = small_restorer.restore(tiny)
    np.testing.assert_array_equal(result.image, tiny)


def test_grayscale_array_stays_grayscale(small_restorer, astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    result = small_restorer.restore(gray)
    assert result.image.shape == gray.shape and result.image.dtype == np.uint8
    assert result.restored_count == 1
    assert not np.array_equal(result.image, gray)


def test_rgb_stored_grayscale_comes_back_grayscale(small_restorer, astronaut):
    gray = np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    result = small_restorer.restore(gray)
    assert result.restored_count == 1 and is_grayscale(result.image)
    colour = small_restorer.restore(gray, keep_grayscale=False)
    assert not is_grayscale(colour.image)


def test_rgba_alpha_is_kept_exactly(small_restorer, astronaut):
    alpha = np.random.default_rng(0).integers(0, 256, astronaut.shape[:2], dtype=np.uint8)
    rgba = np.dstack([astronaut, alpha])
    result = small_restorer.restore(rgba)
    assert result.image.shape == rgba.shape and result.restored_count == 1
    np.testing.assert_array_equal(result.image[:, :, 3], alpha)
    assert not np.array_equal(result.image[:, :, :3], astronaut)


def test_16_bit_keeps_depth_and_untouched_pixels(small_restorer, astronaut):
    deep = astronaut.astype(np.uint16) * 257 + 3
    result = small_restorer.restore(deep)
    assert result.image.dtype == np.uint16 and result.restored_count == 1
    keep = outside_boxes(deep.shape, result)
    np.testing.assert_array_equal(result.image[keep], deep[keep])
    assert not np.array_equal(result.image, deep)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16"])
def test_pil_image_in_pil_image_out(small_restorer, astronaut, mode):
    if mode == "I;16":
        image = Image.fromarray(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    else:
        image = Image.fromarray(astronaut).convert(mode)
    result = small_restorer.restore(image)
    assert isinstance(result.image, Image.Image)
    assert result.image.mode == image.mode and result.image.size == image.size
    assert result.restored_count == 1


def test_face_at_the_border(small_restorer, astronaut):
    cut = np.ascontiguousarray(astronaut[:, 205:])  # the face's left third is outside
    result = small_restorer.restore(cut, confidence=0.5)
    assert result.restored_count == 1
    keep = outside_boxes(cut.shape, result)
    np.testing.assert_array_equal(result.image[keep], cut[keep])


def test_thirty_faces_restored_in_batches(astronaut):
    tile = face_crop(astronaut)
    grid = np.concatenate([np.concatenate([tile] * 6, axis=1)] * 5, axis=0)
    network = IdentityNetwork()
    restorer = FaceRestorer(network, detector="yunet", device="cpu", batch_size=8)
    calls = []
    result = restorer.restore(grid, progress=lambda done, total: calls.append((done, total)))
    assert len(result.faces) == 30 and result.restored_count == 30
    assert network.batch_sizes == [8, 8, 8, 6]
    assert calls == [(8, 30), (16, 30), (24, 30), (30, 30)]


class FlakyNetwork(IdentityNetwork):
    """Fails on any batch that holds the face whose crop is darkest (the second one here)."""

    def forward(self, x, w=0.0, adain=False, **_):
        if (x.mean(dim=(1, 2, 3)) < -0.5).any():
            raise RuntimeError("simulated failure")
        return super().forward(x, w, adain)


def test_one_failing_face_is_left_as_it_was_and_reported(astronaut, caplog):
    tile = face_crop(astronaut)
    image = np.concatenate([tile, (tile // 8)], axis=1)
    restorer = FaceRestorer(FlakyNetwork(), detector="yunet", device="cpu", batch_size=4)
    with caplog.at_level(logging.ERROR):
        result = restorer.restore(image, confidence=0.3)
    by_x = sorted(result.faces, key=lambda f: f.box[0])
    assert [f.restored for f in by_x] == [True, False]
    assert "simulated failure" in by_x[1].reason
    right = image[:, tile.shape[1] :]
    np.testing.assert_array_equal(result.image[:, tile.shape[1] + 40 :], right[:, 40:])


def test_confidence_and_size_filters(small_restorer, astronaut):
    strict = small_restorer.restore(astronaut, confidence=0.99)
    assert strict.faces == [] or not strict.faces[0].restored
    np.testing.assert_array_equal(strict.image, astronaut)
    too_small = small_restorer.restore(astronaut, min_face_size=200)
    assert not too_small.faces[0].restored and "min_face_size" in too_small.faces[0].reason
    np.testing.assert_array_equal(too_small.image, astronaut)
    too_large = small_restorer.restore(astronaut, max_face_size=50)
    assert not too_large.faces[0].restored and "max_face_size" in too_large.faces[0].reason


def two_faces(astronaut: np.ndarray) -> np.ndarray:
    tile = face_crop(astronaut)
    big = cv2.resize(tile, None, fx=1.6, fy=1.6, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((big.shape[0], big.shape[1] + tile.shape[1] + 200, 3), 200, np.uint8)
    canvas[: tile.shape[0], : tile.shape[1]] = tile  # small face, top left
    canvas[:, -big.shape[1] :] = big  # large face, right (nearer the centre)
    return canvas


@pytest.mark.parametrize(
    ("options", "restored_sizes"),
    [({}, "both"), ({"faces": "largest"}, "large"), ({"max_faces": 1}, "large"), ({"faces": "center"}, "large")],
)
def test_which_faces(identity_restorer, astronaut, options, restored_sizes):
    image = two_faces(astronaut)
    result = identity_restorer.restore(image, **options)
    assert len(result.faces) == 2
    by_size = sorted(result.faces, key=lambda f: f.box[2] - f.box[0])
    expected = {"both": [True, True], "large": [False, True]}[restored_sizes]
    assert [f.restored for f in by_size] == expected
    assert all(f.reason for f in by_size if not f.restored)


def test_blend_zero_changes_nothing_and_half_is_between(small_restorer, astronaut):
    none = small_restorer.restore(astronaut, blend=0.0)
    np.testing.assert_array_equal(none.image, astronaut)
    full = small_restorer.restore(astronaut, blend=1.0).image.astype(float)
    half = small_restorer.restore(astronaut, blend=0.5).image.astype(float)
    x0, y0, x1, y1 = ASTRONAUT_FACE
    region = (slice(y0 + 20, y1 - 20), slice(x0 + 20, x1 - 20))
    expected = (full[region] + astronaut[region]) / 2
    assert np.abs(half[region] - expected).max() <= 1.0


def test_colour_correction_keeps_the_original_colours(small_restorer, astronaut):
    x0, y0, x1, y1 = ASTRONAUT_FACE
    region = (slice(y0 + 15, y1 - 15), slice(x0 + 15, x1 - 15))
    original = astronaut[region].reshape(-1, 3).mean(axis=0)
    plain = small_restorer.restore(astronaut).image[region].reshape(-1, 3).mean(axis=0)
    corrected = small_restorer.restore(astronaut, color_correction=True).image[region].reshape(-1, 3).mean(axis=0)
    assert np.abs(corrected - original).max() < np.abs(plain - original).max()
    assert np.abs(corrected - original).max() < 20


def test_aligned_mode_skips_detection(small_model, astronaut):
    restorer = FaceRestorer(small_model, detector="yunet", device="cpu")
    face = cv2.resize(face_crop(astronaut), (512, 512))
    result = restorer.restore(face, aligned=True)
    assert result.restored_count == 1 and result.image.shape == face.shape
    assert not np.array_equal(result.image, face)
    assert restorer._detectors == {}
    smaller = restorer.restore(face[::2, ::2], aligned=True)
    assert smaller.image.shape == (256, 256, 3)


def test_aligned_faces_go_through_batches_with_progress_stop_and_timings(astronaut):
    network = IdentityNetwork()
    restorer = FaceRestorer(network, detector="yunet", device="cpu", batch_size=2)
    faces = [cv2.resize(np.roll(face_crop(astronaut), shift, axis=1), (512, 512)) for shift in range(5)]
    calls = []
    results = restorer.restore_many(faces, aligned=True, progress=lambda done, total: calls.append((done, total)))
    assert network.batch_sizes == [2, 2, 1] and calls == [(2, 5), (4, 5), (5, 5)]
    assert all(result.restored_count == 1 for result in results)
    assert results[0].timings["network"] > 0 and results[0].timings["paste"] > 0 and results[0].timings["detect"] == 0
    network.batch_sizes.clear()
    stopped = restorer.restore_many(faces, aligned=True, should_stop=lambda: bool(network.batch_sizes))
    assert network.batch_sizes == [2]  # asked between batches: the first batch ran, the rest did not
    assert [result.faces[0].reason for result in stopped] == [None, None, "interrupted", "interrupted", "interrupted"]
    assert all(np.array_equal(result.image, face) for result, face in zip(stopped[2:], faces[2:], strict=True))


def test_resizing_takes_each_side_on_its_own():
    """Area averaging where a side shrinks, bicubic where it grows, nothing where it keeps its length (exact)."""
    from lib_codeformer.faces.compositing import resize_each_side

    stripes = np.tile(np.array([0.0, 1.0], np.float32), (3, 4))  # 3 rows of 0, 1, 0, 1, ...
    shrunk = resize_each_side(stripes, 4, 3)
    np.testing.assert_array_equal(shrunk, np.full((3, 4), 0.5, np.float32))  # no aliasing: each pair averaged
    assert resize_each_side(stripes, 8, 3) is stripes  # unchanged sides are not resampled
    column = np.array([[0.0], [1.0]], np.float32)
    grown = resize_each_side(column, 1, 4)
    np.testing.assert_array_equal(grown, cv2.resize(column, (1, 4), interpolation=cv2.INTER_CUBIC))


def test_a_non_square_aligned_input_is_resized_side_by_side_and_back(astronaut):
    seen = []

    class Recording(IdentityNetwork):
        def forward(self, x, w=0.0, adain=False, **_):
            seen.append(x.clone())
            return super().forward(x, w, adain)

    restorer = FaceRestorer(Recording(), detector="yunet", device="cpu")
    wide = np.ascontiguousarray(cv2.resize(face_crop(astronaut), (1024, 256)))
    wide[:, ::2] = 0  # stripes a shrink by the height's filter alone would alias
    result = restorer.restore(wide, aligned=True)
    assert result.image.shape == wide.shape and result.restored_count == 1
    from lib_codeformer.faces.compositing import resize_each_side

    expected = resize_each_side(wide.astype(np.float32) / 255.0, 512, 512)
    network_input = ((seen[0][0].permute(1, 2, 0).numpy() + 1.0) / 2.0).astype(np.float32)
    np.testing.assert_allclose(network_input, expected, atol=1e-6)


def test_moving_checks_the_device_reapplies_the_layout_and_chooses_the_batch_size(small_model):
    restorer = FaceRestorer(small_model, detector="yunet", device="cpu")
    for wrong in ("cuda:7", "bogus", "tpu"):
        with pytest.raises(ValueError, match="device"):
            restorer.to(wrong)
    assert restorer.device == torch.device("cpu")
    network = restorer.network
    network.to(memory_format=torch.contiguous_format)  # as a model comes back from a GPU
    restorer.batch_size = 7
    restorer.to("cpu")
    conv = next(module for module in network.modules() if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert restorer.batch_size == 2  # chosen for the device again: none was given
    given = FaceRestorer(small_model, detector="yunet", device="cpu", batch_size=3).to("cpu")
    assert given.batch_size == 3


def test_invalid_options_are_rejected_with_the_reason(small_restorer, astronaut):
    with pytest.raises(ValueError, match=r"fidelity must be a number in \[0, 1\].*faces must be one of"):
        small_restorer.restore(astronaut, fidelity=2, faces="leftmost")
    with pytest.raises(ValueError, match="unknown option 'not_an_option'"):
        small_restorer.restore(astronaut, not_an_option=1)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        small_restorer.restore(astronaut.astype(np.float32))


def test_parsing_mask_with_parsenet(small_model, astronaut, tmp_path):
    from facexlib.parsing.parsenet import ParseNet

    torch.save(random_weights_like(ParseNet(in_size=512, out_size=512, parsing_ch=19), 1), tmp_path / "parsing_parsenet.pth")
    restorer = FaceRestorer(small_model, detector="yunet", device="cpu", detector_model_dirs=[tmp_path], download=False)
    parsed = restorer.restore(astronaut, mask="parsing")
    boxed = restorer.restore(astronaut, mask="box")
    assert parsed.restored_count == 1
    assert not np.array_equal(parsed.image, boxed.image)
    keep = outside_boxes(astronaut.shape, parsed)
    np.testing.assert_array_equal(parsed.image[keep], astronaut[keep])
    restorer.fast_conv = False  # the WebUI setting "Fast CPU convolutions" reaches the parser's layers too
    assert not any(getattr(layer, "use_winograd", False) for layer in restorer.parser.model.modules())
    restorer.fast_conv = True
    assert any(getattr(layer, "use_winograd", False) for layer in restorer.parser.model.modules())


def test_retinaface_loads_weights_from_the_webui_folder(tmp_path):
    from facexlib.detection.retinaface import RetinaFace

    weights = tmp_path / "detection_Resnet50_Final.pth"
    state = random_weights_like(RetinaFace(network_name="resnet50", half=False, device="cpu"), 2)
    torch.save({f"module.{k}": v for k, v in state.items()}, weights)
    detector = detection.create_detector("retinaface_resnet50", device=torch.device("cpu"), model_dirs=[tmp_path], download=False)
    assert detector.name == "retinaface_resnet50"
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    found = detector.detect(image, 0.0)
    assert found and all(d.landmarks.shape == (5, 2) and 0.0 <= d.score <= 1.0 for d in found)
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    # What facexlib's own model with these weights computes (ours has its batch norms folded: float rounding apart).
    reference = RetinaFace(network_name="resnet50", half=False, device="cpu")
    reference.load_state_dict(state)
    batch = torch.from_numpy(image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))[None] - 110.0
    with torch.inference_mode():
        expected, outputs = reference.eval()(batch), detector.model(batch)
    for ours, theirs in zip(outputs, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_retinaface_runs_its_3x3_convolutions_on_the_kernel_as_fast_conv_says(tmp_path, small_model, fast_conv_calls):
    from facexlib.detection.retinaface import RetinaFace

    state = random_weights_like(RetinaFace(network_name="resnet50", half=False, device="cpu"), 4)
    torch.save(state, tmp_path / "detection_Resnet50_Final.pth")
    restorer = FaceRestorer(
        small_model, detector="retinaface_resnet50", device="cpu", detector_model_dirs=[tmp_path], download=False
    )
    detector = restorer.detector()
    reference = RetinaFace(network_name="resnet50", half=False, device="cpu")
    reference.load_state_dict(state)
    image = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)  # ResNet's first stages: >= 32 x 32
    batch = torch.from_numpy(image[:, :, ::-1].transpose(2, 0, 1).astype(np.float32))[None] - 110.0
    with torch.inference_mode():
        expected = reference.eval()(batch)
        on_kernel = detector.model(batch)
        calls_on = len(fast_conv_calls)
        restorer.fast_conv = False  # the setting reaches the loaded detector
        off_kernel = detector.model(batch)
    assert calls_on >= 10 and len(fast_conv_calls) == calls_on  # ResNet50's stride-1 3x3 at 60 x 80 and 30 x 40, the FPN's
    for outputs in (on_kernel, off_kernel):
        for ours, theirs in zip(outputs, expected, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


def test_retinaface_falls_back_to_yunet_with_one_warning(tmp_path, monkeypatch, caplog, astronaut):
    monkeypatch.setenv("CODEFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(detection, "_fallback_warned", type(detection._fallback_warned)())
    with caplog.at_level(logging.WARNING):
        first = detection.create_detector(
            "retinaface_resnet50", device=torch.device("cpu"), model_dirs=[tmp_path], download=False
        )
        second = detection.create_detector(
            "retinaface_mobile0.25", device=torch.device("cpu"), model_dirs=[tmp_path], download=False
        )
    assert first.name == second.name == "yunet"
    assert caplog.text.count("using the built-in YuNet detector") == 1


def test_auto_is_retinaface_where_it_can_be_had_and_yunet_without_a_warning(tmp_path, monkeypatch, caplog):
    from facexlib.detection.retinaface import RetinaFace

    monkeypatch.setenv("CODEFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(detection, "_fallback_warned", type(detection._fallback_warned)())
    with caplog.at_level(logging.INFO):
        missing = detection.create_detector("auto", device=torch.device("cpu"), model_dirs=[tmp_path], download=False)
    assert missing.name == "yunet"
    assert "using the built-in YuNet detector" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]  # the default, not a fault
    state = random_weights_like(RetinaFace(network_name="resnet50", half=False, device="cpu"), 2)
    torch.save(state, tmp_path / "detection_Resnet50_Final.pth")
    present = detection.create_detector("auto", device=torch.device("cpu"), model_dirs=[tmp_path], download=False)
    assert present.name == "retinaface_resnet50"  # what runs, as the infotext says it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident set from /proc")
def test_very_large_image_memory_stays_bounded(astronaut):
    from pathlib import Path

    height, width = 6000, 8000
    large = np.full((height, width, 3), 120, np.uint8)
    face = cv2.resize(face_crop(astronaut), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    large[2000 : 2000 + face.shape[0], 3000 : 3000 + face.shape[1]] = face
    restorer = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu")
    restorer.restore(np.zeros((64, 64, 3), np.uint8))  # load what loads once

    status = Path("/proc/self/status")

    def kib(field: str) -> int:
        return int(next(line for line in status.read_text().splitlines() if line.startswith(field)).split()[1])

    Path("/proc/self/clear_refs").write_text("5")
    before = kib("VmRSS:")
    result = restorer.restore(large)
    growth = (kib("VmHWM:") - before) * 1024
    assert result.restored_count == 1
    # The output copy is one image's worth; everything else is per face or downscaled.
    assert growth < 1.5 * large.nbytes, f"peak grew by {growth / 2**20:.0f} MiB for a {large.nbytes / 2**20:.0f} MiB image"


def test_grayscale_check_reads_in_chunks():
    image = np.zeros((1000, 10, 3), np.uint8)
    assert is_grayscale(image)
    image[999, 3, 1] = 1
    assert not is_grayscale(image)
    assert Pixels(image[:, :, 0]).is_gray_array


def test_given_landmarks_skip_detection_and_give_the_same_result(small_model, astronaut):
    restorer = FaceRestorer(small_model, detector="yunet", device="cpu")
    detected = restorer.restore(astronaut)
    fresh = FaceRestorer(small_model, detector="yunet", device="cpu")
    given = fresh.restore(astronaut, landmarks=[detected.faces[0].landmarks])
    assert fresh._detectors == {}
    assert given.detector == "given landmarks" and given.restored_count == 1
    np.testing.assert_array_equal(given.image, detected.image)
    assert set(detected.timings) == {"detect", "network", "paste"}
    assert detected.timings["network"] > 0 and detected.timings["detect"] > 0
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        fresh.restore(astronaut, landmarks=[np.zeros((4, 2))])


def test_models_load_once_and_again_after_unload(small_weights, astronaut):
    restorer = FaceRestorer(small_weights, detector="yunet", device="cpu")
    assert restorer.network is restorer.network  # loaded once, reused
    first = restorer.network
    kept = buffers.pool.empty((1 << 18,))  # 1 MiB of working memory, freed: kept for reuse until unload
    del kept
    assert buffers.pool.free_bytes() > 0
    restorer.unload()
    assert restorer._network is None and restorer._detectors == {}
    assert buffers.pool.free_bytes() == 0
    assert restorer.network is not first and restorer.restore(astronaut).restored_count == 1


def test_parsing_mask_without_facexlib_says_what_to_install(small_model, astronaut, tmp_path, monkeypatch):
    from lib_codeformer.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "facexlib.parsing.parsenet", None)
    (tmp_path / "parsing_parsenet.pth").write_bytes(b"unused")
    restorer = FaceRestorer(small_model, detector="yunet", device="cpu", detector_model_dirs=[tmp_path], download=False)
    with pytest.raises(MissingDependency, match="pip install facexlib"):
        restorer.restore(astronaut, mask="parsing")


class RedNetwork(IdentityNetwork):
    """Returns a pure red face: tells which of a colour face's channels a gray image receives."""

    def forward(self, x, w=0.0, adain=False, **_):
        red = torch.full_like(x, -1.0)
        red[:, 0] = 1.0
        return red, None, None


def test_a_gray_image_allowed_colour_gets_the_faces_luminance_not_its_red(astronaut):
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    result = FaceRestorer(RedNetwork(), detector="yunet", device="cpu").restore(gray, keep_grayscale=False)
    x0, y0, x1, y1 = ASTRONAUT_FACE
    centre = result.image[(y0 + y1) // 2 - 5 : (y0 + y1) // 2 + 5, (x0 + x1) // 2 - 5 : (x0 + x1) // 2 + 5]
    assert np.all(np.abs(centre.astype(int) - round(0.299 * 255)) <= 1)  # red's luma, not 255


@pytest.mark.parametrize(
    ("mode", "given_back"),
    [("LA", "LA"), ("P", "RGB"), ("PA", "RGBA"), ("CMYK", "RGB"), ("I", "I"), ("F", "L"), ("1", "L"), ("RGBA", "RGBA")],
)
def test_pil_modes_come_back_as_documented(identity_restorer, astronaut, mode, given_back):
    image = Image.fromarray(astronaut).convert(mode if mode not in ("I", "F", "1", "LA") else "L")
    if mode == "I":
        image = Image.fromarray(np.asarray(image).astype(np.int32) * 200)
    elif mode in ("F", "1", "LA"):
        image = image.convert(mode)
    if mode == "P":
        transparent = image.copy()
        transparent.info["transparency"] = 0
        assert identity_restorer.restore(transparent).image.mode == "RGBA"  # a palette with a transparent colour
    result = identity_restorer.restore(image)
    assert result.image.mode == given_back and result.image.size == image.size
    assert result.restored_count == (mode != "1")  # a dithered 1-bit face is not found


def test_a_16_bit_gray_pil_image_keeps_its_values_outside_the_face(identity_restorer, astronaut):
    deep = (cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.int32) * 257).clip(0, 65535)
    image = Image.fromarray(deep.astype(np.int32))  # mode "I": how Pillow opens many 16-bit gray PNGs
    result = identity_restorer.restore(image)
    back = np.asarray(result.image)
    assert result.image.mode == "I" and back.max() > 255
    np.testing.assert_array_equal(back[400:], deep[400:])


def test_options_of_the_wrong_type_are_a_value_error_naming_each(small_restorer, astronaut):
    with pytest.raises(ValueError) as raised:
        small_restorer.restore(astronaut, fidelity="0.5", blend=[1], max_faces=2.5, confidence=float("nan"), colour=True)
    message = str(raised.value)
    for fragment in ("fidelity must be a number", "blend must be a number", "max_faces must be a whole number"):
        assert fragment in message
    assert "confidence must be a number" in message and "unknown option 'colour'" in message
    with pytest.raises(ValueError, match="fidelity must be a number"):
        small_restorer.restore(astronaut, fidelity=None)
    assert small_restorer.restore(astronaut, fidelity=np.float32(0.5), max_faces=np.int64(1)).restored_count == 1


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 10, 3), (10, 0), (0, 0, 4)])
def test_empty_images_come_back_empty(small_restorer, shape):
    empty = np.zeros(shape, np.uint8)
    result = small_restorer.restore(empty)
    assert result.image.shape == shape and result.faces == []
    assert small_restorer.restore(empty, aligned=True).image.shape == shape


@pytest.mark.parametrize(
    ("points", "reason"),
    [
        (np.full((5, 2), np.inf), "not finite"),  # made the alignment solve spin at 100 % CPU
        (np.full((5, 2), np.nan), "not finite"),
        (np.array([[1e308, 1], [2, 2], [3, 3], [4, 4], [np.inf, 5]]), "not finite"),
        (np.full((5, 2), 100.0), "degenerate"),
    ],
)
def test_landmarks_that_cannot_be_aligned_leave_the_face_as_it_was(small_restorer, astronaut, points, reason):
    good = np.array([[200.0, 110], [240, 110], [220, 130], [205, 150], [235, 150]])
    with concurrent_timeout(60):
        result = small_restorer.restore(astronaut, landmarks=[points, good])
    bad_face, good_face = result.faces
    assert not bad_face.restored and reason in bad_face.reason
    assert good_face.restored


def concurrent_timeout(seconds: float):
    """Fails the test instead of hanging it (the old infinite-landmark case never returned)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def limit():
        def expired(signum, frame):
            raise TimeoutError(f"did not return within {seconds} s")

        previous = signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return limit()


def test_visibility_blends_only_where_faces_changed(small_weights_file, astronaut):
    """It blended the whole image in float32 (several full-size float copies); now only the changed boxes."""
    import tracemalloc

    from lib_codeformer.frontends.webui import runtime as codeformer_webui

    services = codeformer_webui.HostServices(
        settings=lambda: {"weights": str(small_weights_file), "detector": "yunet"}, device=lambda: "cpu"
    )
    runtime = codeformer_webui.ExtensionRuntime(services)
    large = np.zeros((3000, 3000, 3), np.uint8)
    large[:512, :512] = astronaut
    full = runtime.restore(large, {"visibility": 1.0}).image
    tracemalloc.start()
    half = runtime.restore(large, {"visibility": 0.5}).image
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    expected = np.clip(np.rint(large * 0.5 + full.astype(np.float64) * 0.5), 0, 255).astype(np.uint8)
    assert np.abs(half.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(half[600:], large[600:])
    assert peak < 2.5 * large.nbytes  # the output copy plus per-face buffers; a float32 blend alone is 4x


def test_network_batches_run_one_at_a_time_while_detection_and_paste_overlap(astronaut):
    """Decided: several threads may restore at once; one network batch runs at a time (each uses every core or
    the GPU), while detection, alignment and paste-back of other images go on beside it."""
    import threading
    import time

    intervals = {"network": [], "detect": []}

    class SlowNetwork(IdentityNetwork):
        def forward(self, x, w=0.0, adain=False, **_):
            started = time.perf_counter()
            time.sleep(0.3)
            intervals["network"].append((started, time.perf_counter()))
            return x.clone(), None, None

    restorer = FaceRestorer(SlowNetwork(), detector="yunet", device="cpu")
    detector = restorer.detector()
    real_detect = detector.detect

    def timed_detect(image, threshold):
        started = time.perf_counter()
        time.sleep(0.2)
        found = real_detect(image, threshold)
        intervals["detect"].append((started, time.perf_counter()))
        return found

    detector.detect = timed_detect
    images = [astronaut, np.ascontiguousarray(astronaut[:, ::-1]), astronaut[::2, ::2].copy()]
    sequential = [restorer.restore(image).image for image in images]
    intervals["network"].clear()
    intervals["detect"].clear()
    results: dict[int, np.ndarray] = {}
    def restore_later(index: int) -> None:
        time.sleep(0.25 * index)  # staggered, so one image's detection falls in another's network batch
        results[index] = restorer.restore(images[index]).image

    threads = [threading.Thread(target=restore_later, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for index, image in enumerate(sequential):
        np.testing.assert_array_equal(results[index], image)
    network = sorted(intervals["network"])
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(network))  # never two at once
    overlapping = [d for d in intervals["detect"] for n in network if d[0] < n[1] and n[0] < d[1]]
    assert overlapping, "no detection ran beside a network batch"


def test_the_mobile_detector_download_is_checked_tensor_by_tensor(tmp_path):
    """No sha256 is published for it: its exact size and every tensor's name and shape are what can be checked."""
    from facexlib.detection.retinaface import RetinaFace

    from lib_codeformer.errors import WeightsError

    good, wrong = tmp_path / "mobile.pth", tmp_path / "resnet.pth"
    torch.save(random_weights_like(RetinaFace(network_name="mobile0.25", half=False, device="cpu"), 3), good)
    torch.save({"params": {"body.conv1.weight": torch.zeros(64, 3, 7, 7)}}, wrong)
    detection.RETINAFACE_MOBILE.verify(good)
    with pytest.raises(WeightsError, match=r"not RetinaFace mobile0\.25"):
        detection.RETINAFACE_MOBILE.verify(wrong)
