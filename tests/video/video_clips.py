"""Writing and reading the video tests' clips with PyAV (imported by the tests and their conftest)."""

from __future__ import annotations

import fractions
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="the video tests need PyAV (pip install av)")


def write_clip(
    path: Path,
    frames: Sequence[np.ndarray],
    *,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fmt: str | None = None,
    times_ms: Sequence[int] | None = None,
    audio: str | None = None,
    rotation: int = 0,
    color_range: str | None = None,
    title: str | None = None,
    crf: int | None = None,
) -> Path:
    """Encode RGB ``frames`` (timestamps in ms; 25 fps unless given), optionally with a 440 Hz tone."""
    times = list(times_ms) if times_ms is not None else [40 * i for i in range(len(frames))]
    with av.open(str(path), "w", format=fmt) as out:
        if title:
            out.metadata["title"] = title
        options = {"crf": str(crf)} if crf is not None else {}
        video = out.add_stream(codec, rate=25, options=options)
        height, width = frames[0].shape[:2] if frames else (64, 64)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.time_base = fractions.Fraction(1, 1000)
        video.codec_context.time_base = fractions.Fraction(1, 1000)
        if color_range == "full":
            video.codec_context.color_range = av.video.reformatter.ColorRange.JPEG
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=48000) if audio else None
        full = av.video.reformatter.ColorRange.JPEG
        target_range = full if color_range == "full" else av.video.reformatter.ColorRange.MPEG
        for image, time_ms in zip(frames, times, strict=True):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = frame.reformat(format=pix_fmt, src_color_range=full, dst_color_range=target_range)
            frame.pts = time_ms
            frame.time_base = fractions.Fraction(1, 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            end_ms = (times[-1] + 40) if times else 400
            samples = int(48 * end_ms)
            tone = (0.3 * np.sin(np.arange(samples) * (2 * np.pi * 440 / 48000))).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = tone[start : start + 1024]
                piece = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
                piece.sample_rate, piece.pts = 48000, start
                out.mux(sound.encode(piece))
            out.mux(sound.encode(None))
    return path


def decoded(path: Path) -> tuple[list[np.ndarray], list[int], object]:
    """Every frame of a file as RGB, its timestamps, and its video stream's description (for assertions)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        images, times = [], []
        for frame in container.decode(stream):
            images.append(frame.to_ndarray(format="rgb24"))
            times.append(frame.pts)
        info = {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "time_base": stream.time_base,
            "audio": [s.codec_context.name for s in container.streams.audio],
            "title": container.metadata.get("title"),
            "color_range": int(stream.codec_context.color_range),
        }
        return images, times, info


def rotation_of(path: Path) -> int:
    with av.open(str(path)) as container:
        return next(iter(container.decode(video=0))).rotation
