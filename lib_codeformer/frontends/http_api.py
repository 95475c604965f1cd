"""The extension's HTTP API: ``POST /codeformer/v1/restore`` and ``GET /codeformer/v1/options``.

Works with pydantic 1 (AUTOMATIC1111's fastapi 0.94) and pydantic 2 (Forge,
SD.Next). The request's fields and their rules are the HTTP options of
``options.OPTIONS``. Bad input is a 4xx with a message that says what to
fix: 422 for invalid options (each named, in the words of every front end),
400 for bad base64 or bytes that are not an image, 413 for an image over the
pixel limit. The restoration itself runs under the WebUI's queue lock, like
the WebUI's own API calls.
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
FIELDS = option_specs.shown_in(option_specs.HTTP)


def _field_annotation(option: option_specs.Option) -> Any:
    annotation: Any = Literal[option.choices] if option.choices and not option.open_choices else option.type
    return Optional[annotation] if option.none_means is not None else annotation  # noqa: UP045 - pydantic 1 needs Optional


def _request_model() -> type[BaseModel]:
    """The request body's model, from ``options.OPTIONS``: it documents the route (OpenAPI); the options' own
    rules validate it (``parse_request``), so that the API takes exactly what the other front ends take."""
    fields: dict[str, Any] = {"image": (str, Field(..., description="the image, base64 (a data: URL prefix is accepted)"))}
    for option in FIELDS:
        description = f"{option.requirement()}. {option.help}"
        fields[option.key] = (_field_annotation(option), Field(option.default, description=description))
    if pydantic.VERSION.startswith("1."):

        class Config:
            extra = "forbid"

        return pydantic.create_model("RestoreRequest", __config__=Config, **fields)
    return pydantic.create_model("RestoreRequest", __config__=pydantic.ConfigDict(extra="forbid"), **fields)


RestoreRequest = _request_model()


def request_schema() -> dict[str, Any]:
    """The request body's JSON schema, for the route's OpenAPI description."""
    schema = getattr(RestoreRequest, "model_json_schema", None) or RestoreRequest.schema
    return schema()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_request(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The request body's image and its options, each checked by its option's rule; HTTPException 400 (not JSON)
    or 422 (every invalid field named, in the words every front end uses).

    Parsed here rather than by FastAPI: FastAPI echoes invalid input in its
    422 response and fails (500) when that input is NaN or Infinity; and
    pydantic's own coercion (text to numbers, numbers to text) would accept
    values the Python API and the command line refuse.
    """
    try:
        payload = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise HTTPException(status_code=400, detail=f"body is not valid JSON: {error}") from None
    except RecursionError:
        raise HTTPException(status_code=400, detail="body is nested too deeply to be a request") from None
    if not isinstance(payload, dict):
        raise HTTPException(status_code=422, detail="body must be a JSON object with at least an 'image' field")
    image = payload.pop("image", None)
    problems = []
    if not isinstance(image, str):
        got = "it is missing" if image is None else f"got {type(image).__name__}"
        problems.append({"loc": ["image"], "msg": f"image must be the image file as base64 text ({got})"})
    try:
        values = option_specs.check_values(payload, allowed=[option.key for option in FIELDS])
    except option_specs.OptionError as error:
        problems += [{"loc": [key], "msg": message} for key, message in error.problems]
    if problems:
        raise HTTPException(status_code=422, detail=problems)
    # Omitted fields take the defaults GET /codeformer/v1/options lists; those without one (None: "no limit",
    # "the detector's default") are left to the host's settings.
    return image, {**{option.key: option.default for option in FIELDS if option.default is not None}, **values}


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
    host_choices: Callable[[], dict[str, list[str]]] = dict,
) -> None:
    """Add the routes to ``app``.

    ``restore(image, values)`` returns a ``webui.Outcome``-like result that
    also carries ``faces`` (the pipeline's face list) when it has one.
    ``max_pixels()`` is read per request (the WebUI setting can change at run
    time) and bounds the body too. At most ``concurrent_decodes`` requests
    hold a decoded image at once (restoring runs one at a time under
    ``lock``; the others wait before decoding). With ``auth`` ({user:
    password}, from ``--api-auth``) every route demands HTTP Basic credentials.
    ``host_choices()``: choices the host decides, by option key (its
    upscalers), listed by GET /codeformer/v1/options in place of the
    declared ones.
    """
    dependencies = [Depends(basic_auth(auth))] if auth else []
    decoding = threading.BoundedSemaphore(concurrent_decodes)

    def options() -> dict[str, Any]:
        listed = host_choices()
        return {"options": [option_schema(option, listed.get(option.key)) for option in FIELDS]}

    async def restore_route(request: Request) -> dict[str, Any]:
        limit = int(max_pixels())
        data, values = parse_request(await read_body(request, max_body_bytes(limit)))
        return await run_in_threadpool(restore_request, [data], values, limit)

    def restore_request(holder: list[str], values: dict[str, Any], limit: int) -> dict[str, Any]:
        data = holder.pop()  # the base64 text is the largest thing held: only ``data`` keeps it, until decoded
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
    body = {"content": {"application/json": {"schema": request_schema()}}, "required": True}
    app.add_api_route(
        "/codeformer/v1/restore",
        restore_route,
        methods=["POST"],
        dependencies=dependencies,
        openapi_extra={"requestBody": body},
    )


def option_schema(option: option_specs.Option, choices: list[str] | None = None) -> dict[str, Any]:
    """One option as GET /codeformer/v1/options lists it (``choices``: the host's, where it has its own)."""
    entry: dict[str, Any] = {
        "key": option.key,
        "label": option.label,
        "default": option.default,
        "kind": option.widget,
        "help": option.help,
        "values": option.requirement(),
    }
    if option.minimum is not None:
        entry["minimum"] = option.minimum
    if option.maximum is not None:
        entry["maximum"] = option.maximum
    if choices or option.choices:
        entry["choices"] = list(choices or option.choices)
    if option.none_means is not None:
        entry["nullable"] = True
        entry["null_means"] = option.none_means
    if option.zero_is_none:
        entry["zero_means_null"] = True
    return entry


def _face_json(face) -> dict[str, Any]:
    return {
        "box": [round(float(v), 2) for v in face.box],
        "score": round(float(face.score), 4),
        "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        "restored": bool(face.restored),
        "reason": face.reason,
    }
