"""The extension's HTTP API: ``POST /codeformer/v1/restore`` and ``GET /codeformer/v1/options``.

Works with pydantic 1 (AUTOMATIC1111's fastapi 0.94) and pydantic 2 (Forge,
SD.Next). Bad input is a 4xx with a message that says what to fix: 422 for
invalid options (FastAPI's validation), 400 for bad base64 or bytes that are
not an image, 413 for an image over the pixel limit. The restoration itself
runs under the WebUI's queue lock, like the WebUI's own API calls.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, Optional

import numpy as np
import pydantic
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from PIL import Image, ImageOps
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import options as option_specs

DEFAULT_MAX_PIXELS = option_specs.DEFAULT_MAX_PIXELS


class RestoreRequest(BaseModel):
    """Every option of the Extras step; omitted fields take the defaults listed by GET /codeformer/v1/options.

    Defaults and choices come from ``options.OPTIONS``; the ranges are the
    pipeline's (wider than the WebUI's sliders and number boxes).
    """

    image: str = Field(..., description="the image, base64 (a data: URL prefix is accepted)")
    fidelity: float = Field(option_specs.default("fidelity"), ge=0.0, le=1.0)
    visibility: float = Field(option_specs.default("visibility"), ge=0.0, le=1.0)
    detector: Literal[option_specs.DETECTORS] = option_specs.default("detector")
    confidence: Optional[float] = Field(option_specs.default("confidence"), gt=0.0, le=1.0)  # noqa: UP045 - pydantic 1 needs Optional
    faces: Literal[option_specs.FACE_SELECTIONS] = option_specs.default("faces")
    max_faces: Optional[int] = Field(option_specs.default("max_faces"), ge=1, le=1000)  # noqa: UP045
    min_face_size: int = Field(option_specs.default("min_face_size"), ge=0)
    max_face_size: Optional[int] = Field(option_specs.default("max_face_size"), ge=1)  # noqa: UP045
    blend: float = Field(option_specs.default("blend"), ge=0.0, le=1.0)
    mask: Literal[option_specs.MASKS] = option_specs.default("mask")
    color_correction: bool = option_specs.default("color_correction")
    keep_grayscale: bool = option_specs.default("keep_grayscale")

    # A misspelt option is an error, not silently ignored.
    if pydantic.VERSION.startswith("1."):

        class Config:
            extra = "forbid"

    else:
        model_config = pydantic.ConfigDict(extra="forbid")


def _fields(request: RestoreRequest) -> dict[str, Any]:
    dump = getattr(request, "model_dump", None) or request.dict
    return dump()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_request(raw: bytes) -> RestoreRequest:
    """The request body, validated; HTTPException 400 (not JSON) or 422 (invalid fields, each named).

    Parsed here rather than by FastAPI: FastAPI echoes invalid input in its
    422 response and fails (500) when that input is NaN or Infinity.
    """
    try:
        payload = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(status_code=400, detail=f"body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise HTTPException(status_code=422, detail="body must be a JSON object with at least an 'image' field")
    try:
        return RestoreRequest(**payload)
    except pydantic.ValidationError as error:
        problems = [{"loc": list(problem["loc"]), "msg": problem["msg"]} for problem in error.errors()]
        raise HTTPException(status_code=422, detail=problems) from None


def decode_image(data: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """base64 (or a data URL) to a loaded, upright RGB/RGBA image, and notes on what was done to it.

    The pixel limit is checked from the header, before any pixel is
    decoded, so a small file that would decode to a huge image costs
    nothing. HTTPException 400 (not base64, not an image, truncated) or 413
    (over the limit) for everything else.
    """
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(status_code=400, detail="image is not valid base64") from None
    if not raw:
        raise HTTPException(status_code=400, detail="image is empty")
    notes: list[str] = []
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise HTTPException(
                    status_code=413, detail=f"image is {width} x {height} pixels; the limit is {max_pixels} pixels"
                )
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                notes.append(f"animated image: only the first of its {frames} frames was restored")
            orientation = _orientation(opened)
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            if orientation not in (None, 1):
                notes.append(f"turned upright by its EXIF orientation ({orientation})")
            has_alpha = "A" in upright.mode or "transparency" in upright.info
            image = upright.convert("RGBA" if has_alpha else "RGB")
    except HTTPException:
        raise
    except Image.DecompressionBombError as error:  # Pillow's own limit, checked while opening
        raise HTTPException(status_code=413, detail=f"image is too large: {error}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise HTTPException(status_code=400, detail=f"image could not be decoded: {error}") from None
    return image, notes


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a broken EXIF block is not a reason to refuse the image
        return None


def encode_png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_api_auth(value: str | None) -> dict[str, str]:
    """The WebUI's ``--api-auth user:pass[,user2:pass2]`` as {user: password}."""
    credentials = {}
    for pair in (value or "").split(","):
        user, separator, password = pair.strip().partition(":")
        if separator and user:
            credentials[user] = password
    return credentials


def basic_auth(credentials: dict[str, str]) -> Callable[..., None]:
    """A FastAPI dependency demanding HTTP Basic credentials from ``credentials`` (compared in constant time)."""
    scheme = HTTPBasic(auto_error=False)

    def check(given: Optional[HTTPBasicCredentials] = Depends(scheme)) -> None:  # noqa: UP045, B008
        if given is not None:
            expected = credentials.get(given.username)
            # An unknown user is compared against a random password, so timing does not tell users apart.
            reference = expected if expected is not None else secrets.token_hex(16)
            if secrets.compare_digest(given.password.encode(), reference.encode()) and expected is not None:
                return
        raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check


def add_routes(
    app: FastAPI,
    restore: Callable[[np.ndarray, dict[str, Any]], Any],
    *,
    lock: AbstractContextManager | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    auth: dict[str, str] | None = None,
) -> None:
    """Add the routes to ``app``. ``restore(image, values)`` returns a ``webui.Outcome``-like result
    that also carries ``faces`` (the pipeline's face list) when it has one. With ``auth``
    ({user: password}, from ``--api-auth``) every route demands HTTP Basic credentials."""
    dependencies = [Depends(basic_auth(auth))] if auth else []

    def options() -> dict[str, Any]:
        return {"options": [spec.schema() for spec in option_specs.OPTIONS]}

    async def restore_route(request: Request) -> dict[str, Any]:
        body = parse_request(await request.body())
        return await run_in_threadpool(restore_request, body)

    def restore_request(body: RestoreRequest) -> dict[str, Any]:
        values = _fields(body)
        image, notes = decode_image(values.pop("image"), max_pixels)
        with lock if lock is not None else nullcontext():
            outcome = restore(np.asarray(image), values)
        if outcome.error is not None:
            raise HTTPException(status_code=503, detail=outcome.error)
        info = outcome.infotext()
        if notes:
            info["CodeFormer input"] = "; ".join(notes)
        return {
            "image": encode_png(outcome.image),
            "faces": [_face_json(face) for face in getattr(outcome, "faces", [])],
            "info": info,
        }

    app.add_api_route("/codeformer/v1/options", options, methods=["GET"], dependencies=dependencies)
    app.add_api_route("/codeformer/v1/restore", restore_route, methods=["POST"], dependencies=dependencies)


def _face_json(face) -> dict[str, Any]:
    return {
        "box": [round(float(v), 2) for v in face.box],
        "score": round(float(face.score), 4),
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        "restored": bool(face.restored),
        "reason": face.reason,
    }
