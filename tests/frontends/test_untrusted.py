"""Untrusted images and request bodies: every one gets a result or a clear 4xx, never a 5xx."""

from __future__ import annotations

import base64
import io
import json
import sys

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
    assert api.decode_image("data:image/png;base64," + jpeg_as_anything)[0].shape == (32, 32, 3)  # the label does not matter


def test_animated_gif_first_frame_and_a_note():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image, notes = api.decode_image(base64.b64encode(buffer.getvalue()).decode())
    assert image.shape == (30, 40, 3)
    assert notes == ["animated image: only the first of its 3 frames was restored"]


@pytest.mark.parametrize(
    ("mode", "shape", "dtype"),
    [
        ("CMYK", (16, 16, 3), np.uint8),
        ("P", (16, 16, 3), np.uint8),
        ("LA", (16, 16, 4), np.uint8),
        ("1", (16, 16), np.uint8),  # 1-bit is gray
        ("I;16", (16, 16), np.uint16),
    ],
)
def test_unusual_modes_become_what_the_pipeline_takes(mode, shape, dtype):
    if mode == "I;16":  # Pillow 9.5 (AUTOMATIC1111's) cannot convert RGB to I;16
        source = Image.fromarray(np.full((16, 16), 40000, np.uint16))
    else:
        source = Image.new("RGB", (16, 16), (200, 100, 50)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image, _ = api.decode_image(encode(source, fmt))
    assert image.shape == shape and image.dtype == dtype
    if mode == "I;16":  # 16-bit gray came back nearly all white (clipped to 8 bits)
        assert (image == 40000).all()


def test_exif_rotated_jpeg_is_turned_upright():
    tall = Image.new("RGB", (20, 40), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: the viewer turns it 90 degrees
    image, notes = api.decode_image(encode(tall, "JPEG", exif=exif.tobytes()))
    assert image.shape[:2] == (20, 40) and "EXIF orientation (6)" in notes[0]


def test_icc_profile_image_decodes():
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image, _ = api.decode_image(encode(Image.new("RGB", (8, 8)), "PNG", icc_profile=profile))
    assert image.shape == (8, 8, 3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2048).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=256)))
def test_fuzz_decoding_raises_only_4xx(data):
    try:
        image, _ = api.decode_image(data)
    except HTTPException as error:
        assert error.status_code in (400, 413)
    else:
        assert image.dtype in (np.uint8, np.uint16) and image.ndim in (2, 3)


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


def post(body: dict | str | bytes):
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return CLIENT.post("/codeformer/v1/restore", content=content, headers={"Content-Type": "application/json"})


def test_deeply_nested_body_is_a_400_not_a_500():
    assert post("[" * 100_000 + "]" * 100_000).status_code in (400, 422)
    assert post('{"image": ' + "[" * 100_000 + "]" * 100_000 + "}").status_code in (400, 422)


def test_option_combinations_are_a_422_like_single_options():
    response = post({"image": SMALL_PNG, "min_face_size": 300, "max_face_size": 100})
    assert response.status_code == 422 and "max_face_size must be >= min_face_size" in response.text


def test_base64_with_line_breaks_as_the_base64_tool_prints_it():
    wrapped = "\n".join(SMALL_PNG[i : i + 76] for i in range(0, len(SMALL_PNG), 76)) + "\n"
    assert post({"image": wrapped}).status_code == 200


def test_an_icon_wrapping_a_large_png_is_refused_before_decoding():
    """An ICO's directory can claim 256 x 256 while the PNG inside is far larger: such formats are not decoded."""
    response = post({"image": encode(Image.new("RGB", (64, 64)), "ICO")})
    assert response.status_code == 400 and "not a readable image" in response.text


def test_sixteen_bit_gray_comes_back_sixteen_bit():
    deep = np.tile(np.arange(0, 65536, 257, dtype=np.uint16)[:64], (32, 1))
    response = post({"image": base64.b64encode(_png16(deep)).decode()})
    assert response.status_code == 200
    back = Image.open(io.BytesIO(base64.b64decode(response.json()["image"])))
    np.testing.assert_array_equal(np.asarray(back).astype(np.uint16), deep)


def _png16(gray: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", gray)[1].tobytes()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident set from /proc")
def test_a_large_request_costs_a_bounded_multiple_of_its_image():
    """One 8000 x 6000 request peaked at ~5.5x the decoded image in the server; the copies are now dropped early."""
    from pathlib import Path

    large = np.full((6000, 8000, 3), 120, np.uint8)
    large[::7] = 30  # not trivially compressible
    body = json.dumps({"image": api.encode_png(large)}).encode()
    status = Path("/proc/self/status")

    def kib(field: str) -> int:
        return int(next(line for line in status.read_text().splitlines() if line.startswith(field)).split()[1])

    post({"image": SMALL_PNG})  # warm up
    Path("/proc/self/clear_refs").write_text("5")
    before = kib("VmRSS:")
    assert post(body).status_code == 200
    growth = (kib("VmHWM:") - before) * 1024
    del body
    assert growth < 3.5 * large.nbytes, f"peak grew by {growth / 2**20:.0f} MiB for a {large.nbytes / 2**20:.0f} MiB image"


def test_at_most_two_requests_hold_a_decoded_image():
    """Decoding happened before the queue lock: every waiting request held a decoded image."""
    import threading
    import time

    from lib_codeformer.storage import images

    holding, most = [0], [0]
    lock = threading.Lock()
    real_decode = images.decode_image

    def counting_decode(data, max_pixels=None):
        with lock:
            holding[0] += 1
            most[0] = max(most[0], holding[0])
        return real_decode(data, max_pixels)

    def slow_restore(image, values):
        time.sleep(0.2)
        with lock:
            holding[0] -= 1
        return Outcome(image, values={})

    app = FastAPI()
    api.add_routes(app, slow_restore)
    client = TestClient(app)
    images.decode_image, original = counting_decode, images.decode_image
    try:
        arguments = {"args": ("/codeformer/v1/restore",), "kwargs": {"json": {"image": SMALL_PNG}}}
        threads = [threading.Thread(target=client.post, **arguments) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        images.decode_image = original
    assert most[0] <= 2 and holding[0] == 0
