"""Untrusted images and request bodies: every one gets a result or a clear 4xx, never a 5xx."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lib_codeformer.frontends import http_api as api
from lib_codeformer.frontends.webui.runtime import Outcome


def encode(image: Image.Image, format: str = "PNG", **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def test_decompression_bomb_is_refused_before_decoding():
    bomb = Image.new("1", (20000, 20000))  # a 400-megapixel PNG of a few kilobytes
    data = encode(bomb)
    assert len(data) < 200_000
    with pytest.raises(HTTPException) as refused:
        api.decode_image(data)
    assert refused.value.status_code == 413 and "400000000 pixels" in refused.value.detail
    with pytest.raises(HTTPException) as over_our_limit:
        api.decode_image(encode(Image.new("1", (5000, 5000))), max_pixels=10_000_000)
    assert over_our_limit.value.status_code == 413 and "5000 x 5000" in over_our_limit.value.detail


def test_truncated_and_mislabelled_files():
    png = base64.b64decode(encode(Image.new("RGB", (64, 64), "red")))
    with pytest.raises(HTTPException) as truncated:
        api.decode_image(base64.b64encode(png[: len(png) // 2]).decode())
    assert truncated.value.status_code == 400
    jpeg_as_anything = encode(Image.new("RGB", (32, 32), "blue"), "JPEG")
    assert api.decode_image("data:image/png;base64," + jpeg_as_anything)[0].size == (32, 32)  # the label does not matter


def test_animated_gif_first_frame_and_a_note():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image, notes = api.decode_image(base64.b64encode(buffer.getvalue()).decode())
    assert image.mode == "RGB" and image.size == (40, 30)
    assert notes == ["animated image: only the first of its 3 frames was restored"]


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "I;16", "1"])
def test_unusual_modes_become_rgb_or_rgba(mode):
    if mode == "I;16":  # Pillow 9.5 (AUTOMATIC1111's) cannot convert RGB to I;16
        source = Image.fromarray(np.full((16, 16), 40000, np.uint16))
    else:
        source = Image.new("RGB", (16, 16), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image, _ = api.decode_image(encode(source, fmt))
    assert image.mode == ("RGBA" if mode == "LA" else "RGB")


def test_exif_rotated_jpeg_is_turned_upright():
    tall = Image.new("RGB", (20, 40), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the viewer turns it 90 degrees
    image, notes = api.decode_image(encode(tall, "JPEG", exif=exif.tobytes()))
    assert image.size == (40, 20) and "EXIF orientation (6)" in notes[0]


def test_icc_profile_image_decodes():
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image, _ = api.decode_image(encode(Image.new("RGB", (8, 8)), "PNG", icc_profile=profile))
    assert image.size == (8, 8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=256)))
def test_fuzz_decoding_raises_only_4xx(data):
    try:
        image, _ = api.decode_image(data)
    except HTTPException as error:
        assert error.status_code in (400, 413)
    else:
        assert image.mode in ("RGB", "RGBA")


def _app() -> TestClient:
    app = FastAPI()

    def restore(image: np.ndarray, values: dict) -> Outcome:
        return Outcome(image, values={"fidelity": values.get("fidelity", 0.5)})

    api.add_routes(app, restore)
    return TestClient(app, raise_server_exceptions=False)


CLIENT = _app()
SMALL_PNG = encode(Image.new("RGB", (8, 8)))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
OPTION_NAMES = st.sampled_from(
    [
        "image",
        "fidelity",
        "visibility",
        "detector",
        "confidence",
        "faces",
        "max_faces",
        "min_face_size",
        "max_face_size",
        "blend",
        "mask",
        "color_correction",
        "keep_grayscale",
        "other",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(OPTION_NAMES, JSON_VALUES | st.just(SMALL_PNG), max_size=6))
def test_fuzz_api_bodies_never_5xx(body):
    response = CLIENT.post(
        "/codeformer/v1/restore", content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"}
    )
    assert response.status_code < 500, (body, response.text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_raw_bodies_never_5xx(raw):
    response = CLIENT.post("/codeformer/v1/restore", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code < 500
