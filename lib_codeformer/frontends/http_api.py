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
import json
import secrets
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal, Optional

import numpy as np
import pydantic
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import options as option_specs
from ..storage import images

DEFAULT_MAX_PIXELS = option_specs.DEFAULT_MAX_PIXELS


class RestoreRequest(BaseModel):
    """Every option of the Extras step; omitted fields take the defaults listed by GET /codeformer/v1/options.

    Defaults and choices come from ``options.OPTIONS``; the ranges are the
    pipeline's (wider than the WebUI's sliders and number boxes). As in the
    WebUI's controls, 0 means "the detector's default" for ``confidence`` and
    "no limit" for ``max_faces`` and ``max_face_size`` (null too).
    """

    image: str = Field(..., description="the image, base64 (a data: URL prefix is accepted)")
    fidelity: float = Field(option_specs.default("fidelity"), ge=0.0, le=1.0)
    visibility: float = Field(option_specs.default("visibility"), ge=0.0, le=1.0)
    detector: Literal[option_specs.DETECTORS] = option_specs.default("detector")
    confidence: Optional[float] = Field(option_specs.default("confidence"), ge=0.0, le=1.0)  # noqa: UP045 - pydantic 1 needs Optional
    faces: Literal[option_specs.FACE_SELECTIONS] = option_specs.default("faces")
    max_faces: Optional[int] = Field(option_specs.default("max_faces"), ge=0, le=1000)  # noqa: UP045
    min_face_size: int = Field(option_specs.default("min_face_size"), ge=0)
    max_face_size: Optional[int] = Field(option_specs.default("max_face_size"), ge=0)  # noqa: UP045
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
    Combinations of options (min_face_size above max_face_size) are checked
    as the pipeline checks them, so they are a 422 too, not a failed restore.
    """
    try:
        payload = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(status_code=400, detail=f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise HTTPException(status_code=400, detail="body is nested too deeply to be a request") from None
    if not isinstance(payload, dict):
        raise HTTPException(status_code=422, detail="body must be a JSON object with at least an 'image' field")
    try:
        request = RestoreRequest(**payload)
    except pydantic.ValidationError as error:
        problems = [{"loc": list(problem["loc"]), "msg": problem["msg"]} for problem in error.errors()]
        raise HTTPException(status_code=422, detail=problems) from None
    try:
        values = option_specs.normalise({k: v for k, v in _fields(request).items() if k != "image"})
        option_specs.RestoreOptions.checked(**option_specs.restore_kwargs(values))
    except ValueError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    return request


def max_body_bytes(max_pixels: int) -> int:
    """The largest request body taken: the base64 of an uncompressed 8-bit RGBA image at the pixel limit, plus
    room for the options. Refused (413) before it is read whole."""
    return max_pixels * 4 * 4 // 3 + (1 << 20)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or HTTPException 413 as soon as it is known to be over ``limit`` bytes (from the header, else
    while streaming it): a huge request costs nothing beyond the limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status_code=413, detail=f"the request body is {declared} bytes; the limit is {limit}")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise HTTPException(status_code=413, detail=f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_image(data: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, list[str]]:
    """base64 (or a data URL; line breaks allowed) to upright pixels (8 or 16 bits), and notes on what was done.

    The same decoder as the command line's (``storage.images``): the pixel
    limit is checked from the header before any pixel is decoded (413), and
    only PNG, JPEG, WebP, BMP, TIFF and GIF are read (400 for anything else,
    for bad base64, and for damaged files).
    """
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)  # as the base64 tool prints it: wrapped lines
    except (binascii.Error, ValueError):
        raise HTTPException(status_code=400, detail="image is not valid base64") from None
    if not raw:
        raise HTTPException(status_code=400, detail="image is empty")
    try:
        loaded = images.decode_image(raw, max_pixels)
    except images.ImageTooLarge as error:
        raise HTTPException(status_code=413, detail=f"image: {error}") from None
    except images.ImageFileError as error:
        raise HTTPException(status_code=400, detail=f"image could not be decoded: {error}") from None
    return loaded.pixels, loaded.notes


def encode_png(image: np.ndarray) -> str:
    """Pixels as a base64 PNG of their own depth."""
    return base64.b64encode(images.encode_png(image)).decode("ascii")


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
    max_pixels: Callable[[], int] = lambda: DEFAULT_MAX_PIXELS,
    auth: dict[str, str] | None = None,
    concurrent_decodes: int = 2,
) -> None:
    """Add the routes to ``app``.

    ``restore(image, values)`` returns a ``webui.Outcome``-like result that
    also carries ``faces`` (the pipeline's face list) when it has one.
    ``max_pixels()`` is read per request (the WebUI setting can change at run
    time) and bounds the body too. At most ``concurrent_decodes`` requests
    hold a decoded image at once (restoring runs one at a time under
    ``lock``; the others wait before decoding). With ``auth`` ({user:
    password}, from ``--api-auth``) every route demands HTTP Basic credentials.
    """
    dependencies = [Depends(basic_auth(auth))] if auth else []
    decoding = threading.BoundedSemaphore(concurrent_decodes)

    def options() -> dict[str, Any]:
        return {"options": [spec.schema() for spec in option_specs.OPTIONS]}

    async def restore_route(request: Request) -> dict[str, Any]:
        limit = int(max_pixels())
        body = parse_request(await read_body(request, max_body_bytes(limit)))
        return await run_in_threadpool(restore_request, body, limit)

    def restore_request(body: RestoreRequest, limit: int) -> dict[str, Any]:
        values = _fields(body)
        data = values.pop("image")
        del body  # the base64 text is the largest thing held; only ``data`` keeps it until decoded
        with decoding:
            image, notes = decode_image(data, limit)
            del data
            with lock if lock is not None else nullcontext():
                outcome = restore(image, values)
            del image
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
