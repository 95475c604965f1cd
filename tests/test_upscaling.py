"""Large faces enlarged by an upscaler before paste-back; whole images enlarged tile by tile; bad upscalers harmless."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support import IdentityNetwork

from lib_codeformer import FaceRestorer
from lib_codeformer.faces import geometry
from lib_codeformer.upscaling import Lanczos, UpscalerError, enlarge, load_upscaler, upscale_image
from lib_codeformer.upscaling.models import ModelUpscaler
from lib_codeformer.upscaling.tiles import ramps, spans


class Pattern:
    """A deterministic stand-in upscaler: a checkerboard of 4 px squares of exactly the size asked, calls recorded."""

    name = "pattern"

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], float]] = []

    def upscale(self, image: np.ndarray, scale: float) -> np.ndarray:
        self.calls.append((image.shape, scale))
        side = round(image.shape[0] * scale)
        yy, xx = np.mgrid[0:side, 0:side]
        board = ((yy // 4 + xx // 4) % 2).astype(np.float32)
        return np.repeat((0.25 + 0.5 * board)[:, :, None], 3, axis=2)


def face_of_size(side: float, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """A gray canvas and the landmarks of a face whose aligned crop covers ``side`` x ``side`` pixels, centred."""
    scale = side / geometry.FACE_SIZE
    offset = (canvas - side) / 2
    landmarks = geometry.FFHQ_TEMPLATE_512 * scale + offset
    image = np.full((canvas, canvas, 3), 90, np.uint8)
    image[:, ::7] = 30  # texture, so that the crop is not flat
    return image, landmarks


def test_tiles_cover_the_image_and_their_blend_weights_sum_to_one():
    assert spans(1200, 512, 32) == [(0, 512), (480, 992), (688, 1200)]
    assert spans(300, 512, 32) == [(0, 300)]
    np.testing.assert_array_equal(ramps([(0, 4), (2, 6)])[0], np.array([1, 1, 0.75, 0.25], np.float32))
    np.testing.assert_array_equal(ramps([(0, 4), (2, 6)])[1], np.array([0.25, 0.75, 1, 1], np.float32))
    total = np.zeros(1200, np.float32)
    for (start, end), weight in zip(spans(1200, 512, 32), ramps(spans(1200, 512, 32)), strict=True):
        total[start:end] += weight
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_a_large_face_goes_through_the_upscaler_once_at_its_scale_and_is_pasted_at_full_resolution():
    image, landmarks = face_of_size(1200, 1400)
    pattern = Pattern()
    restorer = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu", face_upscaler=pattern)
    result = restorer.restore(image, landmarks=[landmarks], blend=1.0, keep_grayscale=False)
    assert len(pattern.calls) == 1
    (shape, scale), size = pattern.calls[0], int(np.ceil(1200))
    assert shape == (512, 512, 3) and scale == pytest.approx(size / 512, abs=1e-9)
    assert result.faces[0].upscaled == pytest.approx(size / 512)
    centre = result.image[650:750, 650:750, 0].astype(int)
    # The 4 px squares arrive one image pixel per upscaled pixel (the face is 1200 px on the image, enlarged to
    # 1200): a row crosses a square's edge every 4 pixels, about 25 times in 100. Stretched from the 512 crop, the
    # same squares would be 9.4 pixels wide (about 11 crossings).
    crossings = np.count_nonzero(np.diff(centre[50] > 127))
    assert 22 <= crossings <= 27 and centre.std() > 40
    plain = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu").restore(image, landmarks=[landmarks])
    assert not np.array_equal(plain.image, result.image)
    outside = np.ones(image.shape[:2], bool)
    for x0, y0, x1, y1 in result.changed:
        outside[y0:y1, x0:x1] = False
    assert np.array_equal(result.image[outside], image[outside])


def test_the_pasted_face_is_the_upscalers_output_warped_back():
    """Exact numbers: a uniform upscaled face pastes as that value wherever the mask is whole."""

    class Uniform:
        name = "uniform"

        def upscale(self, image, scale):
            side = round(image.shape[0] * scale)
            return np.full((side, side, 3), (0.2, 0.4, 0.6), np.float32)

    image, landmarks = face_of_size(1000, 1200)
    restorer = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu", face_upscaler=Uniform())
    result = restorer.restore(image, landmarks=[landmarks], keep_grayscale=False)
    expected = np.broadcast_to(np.array([51, 102, 153], np.uint8), (100, 100, 3))
    np.testing.assert_array_equal(result.image[550:650, 550:650], expected)


def test_faces_at_or_below_the_crop_are_not_enlarged():
    pattern = Pattern()
    restorer = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu", face_upscaler=pattern)
    for side in (300, 512):
        image, landmarks = face_of_size(side, 700)
        result = restorer.restore(image, landmarks=[landmarks])
        assert result.faces[0].upscaled is None and result.restored_count == 1
    assert pattern.calls == []


class Broken:
    name = "broken"

    def __init__(self, result=None) -> None:
        self.result = result

    def upscale(self, image, scale):
        if self.result is None:
            raise RuntimeError("CUDA out of memory")
        return self.result


@pytest.mark.parametrize("upscaler", [Broken(), Broken(np.zeros((5, 5))), Broken(np.full((900, 900, 3), np.nan, np.float32))])
def test_an_upscaler_that_fails_leaves_the_face_as_without_one(upscaler, caplog):
    image, landmarks = face_of_size(900, 1000)
    without = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu").restore(image, landmarks=[landmarks])
    restorer = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu", face_upscaler=upscaler)
    result = restorer.restore(image, landmarks=[landmarks])
    assert np.array_equal(result.image, without.image) and result.restored_count == 1
    assert result.faces[0].note.startswith("not enlarged: the upscaler broken")
    assert result.faces[0].upscaled is None


def test_enlarge_gives_exactly_the_size_asked():
    face = np.random.default_rng(0).random((512, 512, 3), dtype=np.float32)
    assert enlarge(Lanczos(), face, 1201, 1201).shape == (1201, 1201, 3)
    with pytest.raises(UpscalerError, match=r"the upscaler broken failed .RuntimeError: CUDA out of memory"):
        enlarge(Broken(), face, 900, 900)


class Nearest2x(torch.nn.Module):
    """A stand-in spandrel model: nearest-neighbour 2x, so tiles and their blending can be checked exactly."""

    scale = 2

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    def __call__(self, x):  # spandrel's descriptors are called with the image tensor
        return self.forward(x)


def test_a_whole_image_is_enlarged_tile_by_tile_without_seams():
    flat = np.full((1100, 700, 3), 128, np.uint8)
    model = ModelUpscaler(Nearest2x(), "cpu", name="nearest2x")
    enlarged = upscale_image(flat, model, 2.0)
    assert enlarged.shape == (2200, 1400, 3) and enlarged.dtype == np.uint8
    assert np.array_equal(enlarged, np.full_like(enlarged, 128))  # the overlaps' weights sum to one: no seam
    gradient = np.tile(np.arange(700, dtype=np.uint16)[None, :, None] * 90, (1100, 1, 3))
    wide = upscale_image(gradient, model, 2.0)
    np.testing.assert_array_equal(wide[:, ::2], gradient.repeat(2, axis=0))  # exactly the model's output, 16 bits
    gray = upscale_image(np.full((600, 600), 40, np.uint8), model, 1.5)
    assert gray.shape == (900, 900) and np.all(gray == 40)
    rgba = np.dstack([flat[:600, :600], np.full((600, 600), 200, np.uint8)])
    assert np.all(upscale_image(rgba, model, 2.0)[:, :, 3] == 200)


@pytest.fixture(scope="module")
def esrgan_file(tmp_path_factory):
    """A real ESRGAN-family network (spandrel's RRDBNet, 4x, small) with random weights, in a .pth file."""
    pytest.importorskip("spandrel")
    from spandrel.architectures import ESRGAN as family

    torch.manual_seed(0)
    architecture = getattr(family, "ESRGAN", None) or family.RRDBNet  # spandrel 0.4's name; 0.3.4 (AUTOMATIC1111's)
    network = architecture(num_filters=16, num_blocks=1, scale=4)
    path = tmp_path_factory.mktemp("upscalers") / "4x_tiny_esrgan.pth"
    torch.save(network.state_dict(), path)
    return path


def test_a_model_file_is_loaded_safely_and_enlarges_4x(esrgan_file):
    upscaler = load_upscaler(esrgan_file)
    assert isinstance(upscaler, ModelUpscaler) and upscaler.scale == 4
    face = np.random.default_rng(1).random((64, 64, 3), dtype=np.float32)
    assert upscaler.upscale(face, 3.0).shape == (256, 256, 3)
    assert enlarge(upscaler, face, 200, 200).shape == (200, 200, 3)


def test_a_file_that_is_no_upscaler_is_refused_with_what_it_is(small_weights_file, tmp_path):
    pytest.importorskip("spandrel")
    with pytest.raises(UpscalerError, match=r"is not a model spandrel knows|is not a super-resolution model"):
        load_upscaler(small_weights_file)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UpscalerError, match=r"junk\.pth"):
        load_upscaler(tmp_path / "junk.pth")


def test_the_command_line_enlarges_faces_and_images(tmp_path, astronaut, small_weights_file, esrgan_file, capsys):
    from lib_codeformer.frontends import cli

    big = np.asarray(Image.fromarray(astronaut).resize((2048, 2048), Image.LANCZOS))  # the face's crop: ~700 px
    Image.fromarray(big).save(tmp_path / "portrait.png")
    weights = ["--weights", str(small_weights_file), "--detector", "yunet", "--quiet"]
    out = tmp_path / "faces"
    args = ["restore", str(tmp_path / "portrait.png"), "-o", str(out), "--face-upscaler", str(esrgan_file), *weights]
    assert cli.main(args) == 0
    assert Image.open(out / "portrait.png").size == (2048, 2048)
    assert "portrait.png: 1 face enlarged with 4x_tiny_esrgan.pth" in capsys.readouterr().err
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(astronaut).save(small / "a.png")
    args = ["restore", str(small / "a.png"), "-o", str(tmp_path / "twice"), "--upscale", "2", *weights]
    assert cli.main(args) == 0
    assert Image.open(tmp_path / "twice" / "a.png").size == (1024, 1024)
    assert "enlarged 2 times with lanczos" in capsys.readouterr().err
    limited = ["--upscale", "2", "--max-pixels", "300000"]
    args = ["restore", str(small / "a.png"), "-o", str(tmp_path / "limited"), *limited, *weights]
    assert cli.main(args) == 0
    assert Image.open(tmp_path / "limited" / "a.png").size == (512, 512)  # nothing lost: restored at its size
    assert "not enlarged: 2 times would be 1048576 pixels, over --max-pixels 300000" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--upscale", "0.5"], "--upscale: upscale must be a number in [1, 8]"),
        (["--upscale", "two"], "--upscale: upscale must be a number in [1, 8] (got 'two')"),
        (["--face-upscaler", "/nonexistent.pth"], "--face-upscaler: /nonexistent.pth is no file"),
    ],
)
def test_bad_upscaling_flags_are_usage_errors_before_any_work(tmp_path, astronaut, small_weights_file, capsys, flags, message):
    from lib_codeformer.frontends import cli

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    weights = ["--weights", str(small_weights_file)]
    status = cli.main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *weights, *flags])
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_model_that_is_no_upscaler_is_a_usage_error_naming_the_flag(tmp_path, astronaut, small_weights_file, capsys):
    pytest.importorskip("spandrel")
    from lib_codeformer.frontends import cli

    Image.fromarray(astronaut).save(tmp_path / "a.png")
    flags = ["--weights", str(small_weights_file), "--face-upscaler", str(small_weights_file)]
    assert cli.main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), *flags]) == 2
    assert "--face-upscaler: " in capsys.readouterr().err


def test_video_frames_enlarge_their_large_faces_with_the_restorers_upscaler(astronaut):
    from lib_codeformer.testing.steadiness import SteadyClip
    from lib_codeformer.video.pipeline import restore_array_frames

    frames = list(SteadyClip(astronaut, width=1200, height=1200, frames=3, scale=3.6, second_shot=False, noise=0))
    pattern = Pattern()
    restorer = FaceRestorer(IdentityNetwork(), detector="yunet", device="cpu", face_upscaler=pattern)
    results = list(restore_array_frames(restorer, frames))
    assert [frame.restored_count for frame in results] == [1, 1, 1]
    assert len(pattern.calls) == 3  # once per frame's face, each at its own scale on that frame
    scales = [frame.results[0].upscaled for frame in results]
    assert all(scale > 1.1 for scale in scales), scales
    for (shape, scale), upscaled in zip(pattern.calls, scales, strict=True):
        assert shape == (512, 512, 3) and round(512 * scale) == round(512 * upscaled)
    assert all(frame.restored.shape == (1200, 1200, 3) for frame in results)  # the frame keeps its size
