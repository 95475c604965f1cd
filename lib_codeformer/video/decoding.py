"""Reading a video: its stream's description, its frames (upright RGB) and audio packets in the file's order.

Frames are turned upright (as the viewer sees them) by their rotation;
``as_stored`` turns a restored frame back. Animated WebP, which FFmpeg
cannot decode, is read with Pillow. A file that ends well before its header
says it does is truncated (``check_complete``): an error, not a shorter video.
"""

from __future__ import annotations

import contextlib
import fractions
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..options import DEFAULT_MAX_PIXELS
from .containers import Source, import_av, name_of
from .errors import VideoFileError, ffmpeg_reason
from .frames import ClipFrame

# Container tags that describe the input's own file format, not the video: not copied.
FORMAT_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}


@dataclass(frozen=True)
class AudioPacket:
    """An audio packet passing through the pipeline in its place."""

    packet: Any
    stream_index: int


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as the viewer sees it: turned ``rotation`` degrees counter-clockwise (multiples of 90)."""
    turns = (round(rotation / 90) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def as_stored(image: np.ndarray, rotation: int) -> np.ndarray:
    """Undo ``upright``."""
    turns = (round(rotation / 90) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, -turns)) if turns else image


def open_input(av: Any, source: Source) -> Any:
    name = name_of(source)
    try:
        return av.open(source if not isinstance(source, os.PathLike) else os.fspath(source), "r")
    except FileNotFoundError:
        raise VideoFileError(f"{name}: no such file") from None
    except av.EOFError:
        raise VideoFileError(f"{name}: has no video frames (the file ends before any)") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        reason = ffmpeg_reason(error)
        raise VideoFileError(f"{name}: not a readable video: damaged, truncated or not a video ({reason})") from None


def frame_rotation(frame: Any) -> int:
    try:
        return int(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0


@dataclass
class VideoSpec:
    """What the output video stream copies from the input."""

    width: int
    height: int
    time_base: fractions.Fraction
    rate: fractions.Fraction | None
    pix_fmt: str | None
    frames: int  # the container's count, 0 when unknown
    duration: float | None  # seconds, when known
    color_range: int = 0
    colorspace: int = 2  # unspecified
    color_primaries: int = 2
    color_trc: int = 2
    metadata: dict[str, str] = field(default_factory=dict)  # the container's tags (title, creation time, ...)


def video_spec(stream: Any, container: Any) -> VideoSpec:
    """The input's video stream as the output copies it, and how long it should be (to tell a truncated file).

    The expected length is taken only where the file states it reliably: the
    sample count of MP4/MOV (whose index is at the start when "fast start",
    so a truncated file still opens), the video's own duration in Matroska
    (or the file's, when the video is its only stream). AVI counts dropped
    frames in its header, so it is not held to it.
    """
    context = stream.codec_context
    formats = set(container.format.name.split(","))
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    spec = VideoSpec(
        width=context.width,
        height=context.height,
        time_base=stream.time_base or fractions.Fraction(1, 1000),
        rate=rate,
        pix_fmt=context.pix_fmt,
        frames=int(stream.frames or 0) if formats & {"mov", "mp4"} else 0,
        duration=None,
    )
    if "matroska" in formats:
        if stream.duration and stream.time_base:
            spec.duration = float(stream.duration * stream.time_base)
        elif container.duration and len(container.streams) == 1:
            spec.duration = container.duration / 1_000_000
    for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
        with contextlib.suppress(AttributeError, TypeError, ValueError):
            setattr(spec, name, int(getattr(context, name)))
    return spec


def probe(source: Source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> VideoSpec:
    """The video stream's size, rate, frame count and colour tags, checked against the pixel limit (nothing decoded)."""
    av = import_av()
    with open_input(av, source) as container:
        stream = video_stream(container, name_of(source))
        spec = video_spec(stream, container)
    check_size(spec.width, spec.height, max_pixels, name_of(source))
    return spec


def video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        raise VideoFileError(f"{name}: has no video stream (only sound, no frames at all, or not a video)")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoFileError(f"{name}: its video codec cannot be decoded by this FFmpeg")
    return stream


def check_size(width: int, height: int, max_pixels: int | None, name: str) -> None:
    if width <= 0 or height <= 0:
        raise VideoFileError(f"{name}: its video stream has no frame size ({width} x {height}); the file is damaged")
    if max_pixels is not None and width * height > max_pixels:
        limit = f"the limit of {max_pixels} (the max_pixels option)"
        raise VideoFileError(f"{name}: {width} x {height} pixels per frame is over {limit}")


def color_arguments(av: Any, spec: VideoSpec, *, to_rgb: bool, from_frame: bool = False) -> dict[str, Any]:
    """swscale's colour arguments: the input's matrix and range on the YUV side, full range on the RGB side."""
    full = av.video.reformatter.ColorRange.JPEG
    video_range = spec.color_range or av.video.reformatter.ColorRange.MPEG
    space = spec.colorspace if spec.colorspace not in (0, 2) else None  # 0 RGB, 2 unspecified: swscale's default
    if from_frame:
        return {"src_color_range": video_range, "dst_color_range": video_range, "src_colorspace": space, "dst_colorspace": space}
    if to_rgb:
        return {"src_color_range": video_range, "dst_color_range": full, "src_colorspace": space}
    return {"src_color_range": full, "dst_color_range": video_range, "dst_colorspace": space}


def _decoded_rgb(av: Any, frame: Any, spec: VideoSpec, rotation: int) -> np.ndarray:
    rgb = frame.reformat(format="rgb24", **color_arguments(av, spec, to_rgb=True)).to_ndarray()
    return upright(rgb, rotation)


def frames_and_audio(
    av: Any, container: Any, video: Any, audio: list[Any], spec: VideoSpec, frames: tuple[int, int | None] | None, name: str
) -> Iterator[Any]:
    """The file's video frames (decoded, upright RGB) and audio packets, in the file's order."""
    start, end = frames if frames is not None else (0, None)
    index = 0
    audio_indices = {stream.index for stream in audio}
    try:
        for packet in container.demux([video, *audio]):
            if packet.stream.index in audio_indices:
                if packet.dts is not None and index >= start:
                    yield AudioPacket(packet, packet.stream.index)
                continue
            for frame in video.decode(packet):
                if end is not None and index >= end:
                    return
                if index >= start:
                    yield ClipFrame(index, _decoded_rgb(av, frame, spec, frame_rotation(frame)), source=frame)
                index += 1
    except av.FFmpegError as error:
        raise VideoFileError(f"{name}: damaged or truncated at frame {index} ({ffmpeg_reason(error)})") from None


def webp_frames(source: Source, frames: tuple[int, int | None] | None) -> Iterator[Any]:
    """An animated WebP's frames through Pillow (FFmpeg cannot decode animated WebP), with their timestamps in ms."""
    from PIL import Image, ImageSequence

    start, end = frames if frames is not None else (0, None)
    time_ms = 0
    try:
        with Image.open(source) as image:
            for index, frame in enumerate(ImageSequence.Iterator(image)):
                if end is not None and index >= end:
                    return
                duration = int(frame.info.get("duration") or 40)
                if index >= start:
                    rgb = np.array(frame.convert("RGB"))
                    yield ClipFrame(index, rgb, source=_WebpFrame(time_ms))
                time_ms += duration
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise VideoFileError(f"{name_of(source)}: not a readable animated image ({error})") from None


@dataclass(frozen=True)
class _WebpFrame:
    """Where a Pillow-decoded frame sits in time (milliseconds)."""

    pts: int
    format: Any = None
    rotation: int = 0
    time: float = 0.0


def webp_spec(source: Source, max_pixels: int | None) -> VideoSpec:
    from PIL import Image

    try:
        with Image.open(source) as image:
            width, height = image.size
            count = getattr(image, "n_frames", 1)
    except (OSError, ValueError, SyntaxError) as error:
        raise VideoFileError(f"{name_of(source)}: not a readable animated image ({error})") from None
    check_size(width, height, max_pixels, name_of(source))
    return VideoSpec(width, height, fractions.Fraction(1, 1000), fractions.Fraction(25), None, count, None)


def expected_frames(spec: VideoSpec, frames: tuple[int, int | None] | None) -> int:
    total = spec.frames or (round(spec.duration * float(spec.rate)) if spec.duration and spec.rate else 0)
    if frames is None:
        return total
    start, end = frames
    if end is not None:
        return end - start if not total else max(0, min(end, total) - start)
    return max(0, total - start) if total else 0


def check_complete(spec: VideoSpec, written: int, end: float, frames: tuple[int, int | None] | None, name: str) -> None:
    """A file that ends well before its header says it does is truncated: an error, not a shorter video.

    ``end``: where the last frame written ends, in seconds.
    """
    if frames is not None:
        return
    if spec.frames and written < spec.frames:
        raise VideoFileError(f"{name}: truncated: {written} of its {spec.frames} frames could be decoded")
    frame_time = 1.0 / float(spec.rate) if spec.rate else 0.04
    if spec.duration and end < spec.duration - 2 * frame_time:
        raise VideoFileError(f"{name}: truncated: it ends at {end:.2f} s of its {spec.duration:.2f} s")
