"""Image files in and out: what comes out looks as the input looked, keeps its metadata and its losslessness."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from lib_codeformer.storage.images import (
    ImageFileError,
    ImageTooLarge,
    LoadedImage,
    apply_orientation,
    check_writable,
    decode_image,
    encode_image,
)


def picture(height: int = 40, width: int = 60, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """An asymmetric test picture, so any rotation or flip shows."""
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [xx * 4 + yy, yy * 6, (xx + 2 * yy) * 2, np.full((height, width), 200)][:channels]  # smooth: fair to JPEG
    values = np.clip(np.stack(planes, axis=2).astype(np.float64), 0, 255) / 255 * top
    return np.squeeze(np.rint(values).astype(dtype))


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def round_trip(data: bytes) -> tuple[LoadedImage, bytes]:
    loaded = decode_image(data)
    return loaded, encode_image(loaded.pixels, loaded)


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "CameraMaker"
    return exif.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exactly(orientation):
    stored = picture()
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = Image.fromarray(stored)
    image.info["exif"] = exif.tobytes()
    image.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(apply_orientation(stored, orientation), expected)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "TIFF", "WEBP"])
def test_orientation_is_applied_and_written_as_upright(image_format):
    """A viewer shows the result as it showed the input (the hostile run found PNG and TIFF shown rotated)."""
    stored = picture()
    options = {"quality": 100} if image_format in ("JPEG", "WEBP") else {}
    data = encoded(Image.fromarray(stored), image_format, exif=exif_with_orientation(6), **options)
    loaded, written = round_trip(data)
    assert loaded.pixels.shape[:2] == (60, 40)  # turned 90 degrees
    with Image.open(io.BytesIO(written)) as result:
        assert result.getexif().get(0x0112) in (None, 1)
        assert result.getexif().get(0x010F) == "CameraMaker"  # the rest of the EXIF (a TIFF's Make tag) is kept
        shown = np.asarray(ImageOps.exif_transpose(result).convert("RGB")).astype(int)
    expected = np.rot90(stored, -1).astype(int)  # orientation 6: the viewer turns the stored pixels 90 degrees clockwise
    difference = np.abs(shown - expected)
    if image_format in ("PNG", "TIFF"):
        assert difference.max() == 0
    else:  # re-encoded at quality 95 (the input was 100)
        assert difference.mean() < 8


@pytest.mark.parametrize("image_format", [".png", ".tif"])
def test_sixteen_bit_orientation_is_applied_once(image_format):
    import tifffile

    deep = picture(dtype=np.uint16)
    if image_format == ".png":
        from lib_codeformer.storage.formats.png import png_with_metadata

        png = cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))[1].tobytes()
        data = png_with_metadata(png, {"exif": exif_with_orientation(6)})
    else:
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, deep, photometric="rgb", extratags=[(274, "H", 1, 6, True)], metadata=None)
        data = buffer.getvalue()
    loaded = decode_image(data)
    np.testing.assert_array_equal(loaded.pixels, np.rot90(deep, -1))


def test_sixteen_bit_png_keeps_depth_text_icc_and_exif():
    deep = picture(dtype=np.uint16)
    png = cv2.imencode(".png", cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))[1].tobytes()
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    from lib_codeformer.storage.formats.png import png_with_metadata

    source = png_with_metadata(png, {"text": {"parameters": "a photo, Steps: 20", "comment": "naïve ☃"}, "icc_profile": profile})
    loaded, written = round_trip(source)
    assert loaded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(loaded.pixels, deep)
    restored = cv2.cvtColor(cv2.imdecode(np.frombuffer(written, np.uint8), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(restored, deep)
    with Image.open(io.BytesIO(written)) as result:
        assert result.text == {"parameters": "a photo, Steps: 20", "comment": "naïve ☃"}
        assert result.info["icc_profile"] == profile


def test_eight_bit_png_text_chunks_and_palette():
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "Steps: 20")
    paletted = Image.fromarray(picture()).quantize(16)
    loaded, written = round_trip(encoded(paletted, "PNG", pnginfo=info))
    assert loaded.pixels.shape == (40, 60, 3)
    with Image.open(io.BytesIO(written)) as result:
        assert result.text["parameters"] == "Steps: 20"
        np.testing.assert_array_equal(np.asarray(result.convert("RGB")), np.asarray(paletted.convert("RGB")))


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_multi_strip_lzw_tiff_with_tags(channels, dtype):
    """OpenCV writes LZW TIFFs in many strips; Pillow 9.5 (AUTOMATIC1111's) refused them ("multistrip")."""
    stored = picture(channels=channels, dtype=dtype)
    to_bgr = {1: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}[channels]
    data = cv2.imencode(".tif", stored if to_bgr is None else cv2.cvtColor(stored, to_bgr))[1].tobytes()
    loaded, written = round_trip(data)
    np.testing.assert_array_equal(loaded.pixels, stored)
    back = decode_image(written)  # (OpenCV would premultiply an unassociated alpha: not a reader to check with)
    assert back.format == "TIFF" and back.pixels.dtype == dtype
    np.testing.assert_array_equal(back.pixels, stored)


def test_tiff_tags_and_profile_are_kept_at_both_depths():
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for image in (Image.fromarray(picture()), Image.fromarray(picture(channels=1, dtype=np.uint16))):
        data = encoded(image, "TIFF", tiffinfo={270: "a description", 305: "a camera app"}, icc_profile=profile)
        _, written = round_trip(data)
        with Image.open(io.BytesIO(written)) as result:
            assert result.tag_v2.get(270) == "a description" and result.tag_v2.get(305) == "a camera app"
            assert result.info.get("icc_profile") == profile


def test_sixteen_bit_colour_tiff_keeps_its_tags():
    import tifffile

    deep = picture(dtype=np.uint16)
    buffer = io.BytesIO()
    profile = (34675, 7, 20, b"not really a profile", True)
    tifffile.imwrite(buffer, deep, photometric="rgb", description="sixteen", extratags=[profile], metadata=None)
    loaded, written = round_trip(buffer.getvalue())
    np.testing.assert_array_equal(loaded.pixels, deep)
    with tifffile.TiffFile(io.BytesIO(written)) as result:
        np.testing.assert_array_equal(result.asarray(), deep)
        assert result.pages[0].description == "sixteen"
        assert result.pages[0].tags["InterColorProfile"].value == b"not really a profile"


def test_lossless_webp_stays_lossless_and_lossy_stays_lossy():
    stored = picture()
    lossless, _ = round_trip(encoded(Image.fromarray(stored), "WEBP", lossless=True))
    written = encode_image(lossless.pixels, lossless)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(written))), stored)
    lossy = decode_image(encoded(Image.fromarray(stored), "WEBP", quality=80))
    assert lossless.metadata["lossless"] is True and lossy.metadata["lossless"] is False


def test_cmyk_jpeg_becomes_rgb_without_the_cmyk_profile():
    cmyk = Image.fromarray(picture()).convert("CMYK")
    source = encoded(cmyk, "JPEG", quality=100)
    loaded, written = round_trip(source)
    assert loaded.pixels.shape == (40, 60, 3) and "CMYK converted to RGB" in loaded.notes[0]
    with Image.open(io.BytesIO(written)) as result, Image.open(io.BytesIO(source)) as shown:
        assert result.mode == "RGB"
        assert not result.info.get("icc_profile")
        assert np.abs(np.asarray(result).astype(int) - np.asarray(shown.convert("RGB")).astype(int)).mean() < 3


def test_mpo_keeps_its_exif():
    first, second = Image.fromarray(picture()), Image.fromarray(picture()[::-1].copy())
    data = encoded(first, "MPO", save_all=True, append_images=[second], exif=exif_with_orientation(1), quality=95)
    with Image.open(io.BytesIO(data)) as check:
        if check.format != "MPO":
            pytest.skip("this Pillow cannot write MPO files")
    loaded, written = round_trip(data)
    assert loaded.format == "JPEG"
    with Image.open(io.BytesIO(written)) as result:
        assert result.getexif().get(0x010F) == "CameraMaker"


def test_formats_that_are_not_read_are_refused_with_a_reason():
    icon = encoded(Image.fromarray(picture()), "ICO")  # an ICO can wrap a PNG larger than its header says
    with pytest.raises(ImageFileError, match="not a readable image"):
        decode_image(icon)
    with pytest.raises(ImageFileError, match="not a readable image"):
        decode_image(b"/* XPM */\nstatic char *x[] = {\n};\n")


def test_a_format_that_cannot_be_written_is_refused_before_any_work():
    unwritable = LoadedImage(picture(), "PSD")
    with pytest.raises(ImageFileError, match="PSD files can be read but not written"):
        check_writable(unwritable)


def test_damaged_exif_is_dropped_with_a_note_not_fatal():
    data = bytearray(encoded(Image.fromarray(picture()), "JPEG", exif=exif_with_orientation(1)))
    start = data.find(b"Exif\0\0")
    data[start + 6 : start + 14] = b"MM\0\x2a\xff\xff\xff\xff"  # an IFD offset far past the end
    loaded = decode_image(bytes(data))
    assert loaded.pixels.shape == (40, 60, 3)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(ImageFileError, match="over the limit"):
        decode_image(encoded(Image.new("1", (3000, 3000)), "PNG"), max_pixels=1000)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_wide_samples_come_back_exactly_or_are_refused(mode):
    """32-bit integer and float samples: kept exactly (as 16 bits) where they fit, else refused, never clipped."""
    fitting = (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.int32 if mode == "I" else np.float32)
    buffer = io.BytesIO()
    Image.fromarray(fitting, mode=mode).save(buffer, format="TIFF")
    loaded = decode_image(buffer.getvalue())
    assert loaded.pixels.dtype == np.uint16 and np.array_equal(loaded.pixels, fitting)
    again = decode_image(encode_image(loaded.pixels, loaded))
    assert np.array_equal(again.pixels, fitting)
    for beyond in (fitting + 70000, fitting - 1, fitting + 0.5):
        buffer = io.BytesIO()
        Image.fromarray(beyond.astype(fitting.dtype), mode=mode).save(buffer, format="TIFF")
        if mode == "I" and not float(beyond.flat[1]).is_integer():
            continue  # an integer image cannot hold a half
        with pytest.raises(ImageFileError, match="do not fit the 16 bits"):
            decode_image(buffer.getvalue())


def test_a_pixel_limit_above_pillows_own_guard_is_the_one_that_counts(monkeypatch):
    """Pillow refuses images above its bomb guard before our limit is asked; a higher limit replaces it."""
    from PIL import Image as PillowImage

    monkeypatch.setattr(PillowImage, "MAX_IMAGE_PIXELS", 1000)  # as if this image were above Pillow's 179 Mpx
    buffer = io.BytesIO()
    PillowImage.fromarray(picture(100, 100)).save(buffer, format="PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(buffer.getvalue())  # no limit of ours given: Pillow's guard holds
    assert decode_image(buffer.getvalue(), max_pixels=20_000).pixels.shape == (100, 100, 3)
    with pytest.raises(ImageTooLarge, match="over the limit of 9999 pixels"):
        decode_image(buffer.getvalue(), max_pixels=9_999)
    assert PillowImage.MAX_IMAGE_PIXELS == 1000  # put back
