"""Video containers and codecs: which suffixes are videos, which muxer and encoder write each, pixel formats.

PyAV is imported only through ``import_av`` (when a video is restored), so
a command line without it restores images and says what to install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from ..errors import MissingDependency
from .errors import VideoFileError

Source = str | os.PathLike | IO[bytes]

# Always videos. GIF and WebP are videos when they have more than one frame (else images).
VIDEO_ONLY_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
ANIMATED_SUFFIXES = frozenset({".gif", ".webp"})
VIDEO_SUFFIXES = VIDEO_ONLY_SUFFIXES | ANIMATED_SUFFIXES
# Container format for each output suffix (FFmpeg's muxer names).
CONTAINERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".gif": "gif",
    ".webp": "webp",
}
# The codecs tried for each container, first that exists wins: H.264, else a (visually) lossless fallback.
DEFAULT_CODECS = {
    "mp4": ("libx264", "mpeg4"),
    "mov": ("libx264", "mpeg4"),
    "matroska": ("libx264", "ffv1"),
    "webm": ("libvpx-vp9", "libvpx"),
    "avi": ("libx264", "ffv1"),
    "gif": ("gif",),
    "webp": ("libwebp_anim",),
}
# Audio codecs each container takes (what is copied), and what is re-encoded to otherwise.
AUDIO_REENCODE = {"mp4": "aac", "mov": "aac", "matroska": "aac", "avi": "mp3", "webm": "libopus"}
# Quality (constant rate factor) defaults where the user gives none: x264 18 is visually lossless.
DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libvpx-vp9": 24, "libvpx": 10}
# Encoders known to refuse odd sizes in 4:2:0.
EVEN_SIZE_CODECS = ("libx264", "libx265", "mpeg4", "h264", "hevc")


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is restored as a video: a video suffix, or an animated GIF/WebP."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_ONLY_SUFFIXES:
        return True
    if suffix not in ANIMATED_SUFFIXES:
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, SyntaxError):
        return suffix == ".gif"  # an unreadable GIF is reported by the video path (GIF is no image format here)


def import_av() -> Any:
    """PyAV, or an error saying how to install it."""
    try:
        import av
    except ImportError:
        raise MissingDependency(
            "restoring videos needs PyAV, which is not installed. Install it with: "
            "pip install av (or pip install 'sd-webui-codeformer[video]'); its wheels include FFmpeg"
        ) from None
    return av


def name_of(source: Source) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>")


def output_container(destination: Source, requested: str | None, source: Source) -> str:
    """The muxer for the output: the ``requested`` suffix, else the destination's, else the input's."""
    for candidate in (requested, suffix_of(destination), suffix_of(source)):
        if candidate:
            suffix = candidate if candidate.startswith(".") else f".{candidate}"
            if suffix.lower() in CONTAINERS:
                return CONTAINERS[suffix.lower()]
            if candidate is requested:
                raise VideoFileError(f"unknown video format {candidate!r}; choose one of {', '.join(sorted(CONTAINERS))}")
    raise VideoFileError(f"{name_of(destination)}: cannot tell the video format from its name; give a suffix such as .mp4")


def suffix_of(source: Source | None) -> str:
    if source is None:
        return ""
    return Path(name_of(source)).suffix


def is_animated_webp(source: Source) -> bool:
    return suffix_of(source).lower() == ".webp"


def choose_codec(av: Any, container: str, requested: str | None) -> str:
    """The encoder: the one asked for (checked), else the first of DEFAULT_CODECS that this FFmpeg has."""
    candidates = (requested,) if requested else DEFAULT_CODECS[container]
    for name in candidates:
        try:
            codec = av.codec.Codec(name, "w")
        except Exception:
            continue
        if codec.type == "video":
            return name
    if requested:
        raise VideoFileError(f"the video_codec option {requested!r}: this FFmpeg has no such video encoder")
    raise VideoFileError(f"no encoder for {container} in this FFmpeg (tried {', '.join(candidates)})")


def choose_pixel_format(av: Any, codec_name: str, wanted: str | None, width: int, height: int) -> tuple[str, str | None]:
    """The encoder's pixel format (the input's where the encoder takes it), and a note when it had to differ."""
    codec = av.codec.Codec(codec_name, "w")
    supported = [f.name for f in (codec.video_formats or [])]
    if not supported:
        return wanted or "yuv420p", None
    chosen = wanted if wanted in supported else ("yuv420p" if "yuv420p" in supported else supported[0])
    changed = f"written as {chosen}: {codec_name} cannot write {wanted}" if wanted and chosen != wanted else None
    odd = width % 2 or height % 2
    subsampled = chosen in ("yuv420p", "yuvj420p", "nv12", "yuv422p", "yuvj422p")
    if odd and subsampled and codec_name in EVEN_SIZE_CODECS:
        for full in ("yuvj444p", "yuv444p") if chosen.startswith("yuvj") else ("yuv444p",):
            if full in supported:
                return full, f"{width} x {height} is odd: written as 4:4:4 ({full}) so no pixel is dropped"
        raise VideoFileError(
            f"{width} x {height} is odd and {codec_name} cannot write odd sizes; "
            "choose another codec (the video_codec option: ffv1)"
        )
    return chosen, changed
