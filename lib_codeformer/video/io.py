"""Decoding, encoding, sound and metadata with PyAV (FFmpeg's libraries in a wheel; no ``ffmpeg`` binary).

``transcode`` reads a video, hands its frames (``ClipFrame``) and its audio
packets, in the file's order, to a processing function (the restoration
pipeline), and writes what comes back:

- video: the same resolution, frame timestamps (variable frame rate too),
  frame count, rotation, colour range and colour space tags; frames are
  restored upright (as the viewer sees them) and turned back before
  encoding. A frame that was not changed is encoded from the decoded frame
  itself, so its pixels are exactly the decoded ones. The codec: H.264 where
  the container takes it and the encoder exists, else a lossless or visually
  lossless one the container takes (VP9 for WebM, FFV1, MPEG-4 at its best
  quality), or the one asked for. 4:2:0 needs even sizes: for an odd width or
  height the frame is written 4:4:4 where the codec has it, so no pixel is
  dropped;
- audio: every stream copied packet for packet where the container can hold
  its codec, else re-encoded (a note says so);
- container metadata (title, creation time, ...) copied.

The output is written to a temporary file in the destination's folder and
renamed when complete; on any failure it is removed. The input is only read.
Animated WebP, which FFmpeg cannot decode, is read with Pillow.
"""

from __future__ import annotations

import contextlib
import fractions
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import MissingDependency
from ..options import DEFAULT_MAX_PIXELS
from ..storage.atomic import move_into_place
from .frames import ClipFrame

Source = str | os.PathLike | IO[bytes]
Process = Callable[[Iterable[Any]], Iterable[Any]]
Progress = Callable[[int, int], None]

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
# Container tags that describe the input's own file format, not the video: not copied.
_FORMAT_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}
# Encoders known to refuse odd sizes in 4:2:0.
_EVEN_SIZE_CODECS = ("libx264", "libx265", "mpeg4", "h264", "hevc")


class VideoFileError(ValueError):
    """A video that cannot be read or written; the message names the file and says what to do."""


@dataclass(frozen=True)
class EncodingOptions:
    """How the output is written."""

    codec: str | None = None  # FFmpeg encoder name; None: H.264 where possible (see DEFAULT_CODECS)
    crf: int | None = None  # constant rate factor (lower: better, bigger); None: the codec's default here
    container: str | None = None  # output suffix (".mp4", ...); None: the destination's suffix, else the input's
    audio: bool = True  # copy the audio streams
    frames: tuple[int, int | None] | None = None  # only frames START (counted from 0) to END (excluded)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # refuse larger frames (checked before decoding)


@dataclass
class Transcoded:
    frames: int = 0
    notes: list[str] = field(default_factory=list)
    destination: Path | None = None


@dataclass(frozen=True)
class AudioPacket:
    """An audio packet passing through the pipeline in its place."""

    packet: Any
    stream_index: int


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


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The frame as the viewer sees it: turned ``rotation`` degrees counter-clockwise (multiples of 90)."""
    turns = (round(rotation / 90) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def as_stored(image: np.ndarray, rotation: int) -> np.ndarray:
    """Undo ``upright``."""
    turns = (round(rotation / 90) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(image, -turns)) if turns else image


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """``START:END`` (END excluded, either may be left out) as numbers; ValueError saying what is wrong."""
    start_text, colon, end_text = text.partition(":")
    if not colon:
        raise ValueError(f"--frames takes START:END (e.g. 0:100, 250:, :50); got {text!r}")
    try:
        start = int(start_text) if start_text.strip() else 0
        end = int(end_text) if end_text.strip() else None
    except ValueError:
        raise ValueError(f"--frames takes whole frame numbers START:END; got {text!r}") from None
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"--frames needs 0 <= START < END; got {text!r}")
    return start, end


def output_container(destination: Source, encoding: EncodingOptions, source: Source) -> str:
    """The muxer for the output: from ``encoding.container``, else the destination's suffix, else the input's."""
    for candidate in (encoding.container, _suffix(destination), _suffix(source)):
        if candidate:
            suffix = candidate if candidate.startswith(".") else f".{candidate}"
            if suffix.lower() in CONTAINERS:
                return CONTAINERS[suffix.lower()]
            if candidate is encoding.container:
                raise VideoFileError(f"unknown video format {candidate!r}; choose one of {', '.join(sorted(CONTAINERS))}")
    raise VideoFileError(f"{name_of(destination)}: cannot tell the video format from its name; give a suffix such as .mp4")


def _suffix(source: Source | None) -> str:
    if source is None:
        return ""
    return Path(name_of(source)).suffix


def is_animated_webp(source: Source) -> bool:
    return _suffix(source).lower() == ".webp"


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
        raise VideoFileError(f"--video-codec {requested!r}: this FFmpeg has no such video encoder")
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
    if odd and subsampled and codec_name in _EVEN_SIZE_CODECS:
        for full in ("yuvj444p", "yuv444p") if chosen.startswith("yuvj") else ("yuv444p",):
            if full in supported:
                return full, f"{width} x {height} is odd: written as 4:4:4 ({full}) so no pixel is dropped"
        raise VideoFileError(
            f"{width} x {height} is odd and {codec_name} cannot write odd sizes; choose another codec (--video-codec ffv1)"
        )
    return chosen, changed


def _open_input(av: Any, source: Source) -> Any:
    name = name_of(source)
    try:
        return av.open(source if not isinstance(source, os.PathLike) else os.fspath(source), "r")
    except FileNotFoundError:
        raise VideoFileError(f"{name}: no such file") from None
    except av.EOFError:
        raise VideoFileError(f"{name}: has no video frames (the file ends before any)") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoFileError(f"{name}: not a readable video: damaged, truncated or not a video ({_reason(error)})") from None


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return text.replace("avcodec_send_packet()", "").strip(" :'") or type(error).__name__


def _frame_rotation(frame: Any) -> int:
    try:
        return int(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):
        return 0


@dataclass
class _VideoSpec:
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


def _video_spec(stream: Any, container: Any) -> _VideoSpec:
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
    spec = _VideoSpec(
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


def probe(source: Source, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> _VideoSpec:
    """The video stream's size, rate, frame count and colour tags, checked against the pixel limit (nothing decoded)."""
    av = import_av()
    with _open_input(av, source) as container:
        stream = _video_stream(container, name_of(source))
        spec = _video_spec(stream, container)
    _check_size(spec.width, spec.height, max_pixels, name_of(source))
    return spec


def _video_stream(container: Any, name: str) -> Any:
    if not container.streams.video:
        raise VideoFileError(f"{name}: has no video stream (only sound, no frames at all, or not a video)")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise VideoFileError(f"{name}: its video codec cannot be decoded by this FFmpeg")
    return stream


def _check_size(width: int, height: int, max_pixels: int | None, name: str) -> None:
    if width <= 0 or height <= 0:
        raise VideoFileError(f"{name}: its video stream has no frame size ({width} x {height}); the file is damaged")
    if max_pixels is not None and width * height > max_pixels:
        raise VideoFileError(f"{name}: {width} x {height} pixels per frame is over the limit of {max_pixels} (--max-pixels)")


class _Writer:
    """The output container: the video stream (its rotation set from the first frame) and the audio streams."""

    def __init__(self, av: Any, target: Any, container_name: str, spec: _VideoSpec, encoding: EncodingOptions) -> None:
        self.av = av
        self.output = av.open(target, "w", format=container_name)
        self.output.metadata.update(spec.metadata)
        self.container_name = container_name
        self.spec = spec
        self.encoding = encoding
        self.notes: list[str] = []
        self.codec = choose_codec(av, container_name, encoding.codec)
        self.audio: dict[int, Any] = {}  # input stream index -> output stream (copied) or (decoder, encoder, resampler)
        self.rotation: int | None = None  # known from the first frame
        self.frames = 0
        self.end_seconds = 0.0  # where the last frame written ends
        self._last_pts: int | None = None
        # AVI has no timestamps, only a frame rate: times are counted in frames there.
        rate = spec.rate if spec.rate and spec.rate > 0 else fractions.Fraction(25)
        self.time_base = 1 / rate if container_name == "avi" else spec.time_base
        if container_name == "avi":
            self.notes.append(f"AVI holds a constant frame rate: timestamps are rounded to frames of {float(rate):g} fps")
        self.video = self._add_video()

    # Audio

    def add_audio(self, streams: list[Any]) -> None:
        if not streams:
            return
        if self.container_name in ("gif", "webp"):
            self.notes.append(f"{len(streams)} audio stream(s) left out: {self.container_name} holds no sound")
            return
        supported = getattr(self.output, "supported_codecs", set())
        for stream in streams:
            codec = stream.codec_context.name if stream.codec_context is not None else None
            if codec is not None and (not supported or codec in supported):
                try:
                    self.audio[stream.index] = self.output.add_stream_from_template(stream)
                    continue
                except (ValueError, self.av.FFmpegError):
                    pass
            self._reencode_audio(stream, codec)

    def _reencode_audio(self, stream: Any, codec: str | None) -> None:
        target = AUDIO_REENCODE.get(self.container_name)
        if codec is None or target is None:
            self.notes.append(f"audio stream {stream.index} left out: {self.container_name} cannot hold {codec or 'it'}")
            return
        rate = stream.codec_context.sample_rate or 48000
        if target == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
            rate = 48000
        encoder = self.output.add_stream(target, rate=rate)
        layout = stream.codec_context.layout.name if stream.codec_context.layout else "stereo"
        with contextlib.suppress(Exception):
            encoder.layout = layout
        resampler = self.av.AudioResampler(format=encoder.codec_context.format, layout=encoder.codec_context.layout, rate=rate)
        self.audio[stream.index] = (stream.codec_context, encoder, resampler)
        self.notes.append(
            f"audio stream {stream.index} ({codec}) re-encoded to {target}: {self.container_name} cannot hold {codec}"
        )

    def write_audio(self, item: AudioPacket, shift: float) -> None:
        target = self.audio.get(item.stream_index)
        if target is None:
            return
        packet = item.packet
        if packet.pts is not None and shift:
            offset = round(shift / packet.time_base)
            if packet.pts - offset < 0:
                return
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
        if not isinstance(target, tuple):
            packet.stream = target
            self.output.mux(packet)
            return
        decoder, encoder, resampler = target
        for frame in decoder.decode(packet):
            frame.pts = None
            for resampled in resampler.resample(frame):
                self.output.mux(encoder.encode(resampled))

    # Video

    def _add_video(self) -> Any:
        spec = self.spec
        if self.codec == "gif":
            pix_fmt = "pal8"  # each frame gets a palette of its own (``_palette_frame``)
        else:
            pix_fmt, note = choose_pixel_format(self.av, self.codec, spec.pix_fmt, spec.width, spec.height)
            if note:
                self.notes.append(note)
        options: dict[str, str] = {}
        crf = self.encoding.crf if self.encoding.crf is not None else DEFAULT_CRF.get(self.codec)
        if crf is not None:
            options["crf"] = str(crf)
        if self.codec in ("libvpx-vp9", "libvpx"):
            options["b"] = "0"
        if self.codec == "libwebp_anim":
            options["quality"] = str(90 if self.encoding.crf is None else max(0, min(100, 100 - 2 * self.encoding.crf)))
        rate = spec.rate if spec.rate and spec.rate > 0 else fractions.Fraction(25)
        try:
            video = self.output.add_stream(self.codec, rate=rate, options=options)
        except (ValueError, self.av.FFmpegError) as error:
            raise VideoFileError(f"{self.codec} cannot be written into {self.container_name} ({_reason(error)})") from None
        video.width, video.height, video.pix_fmt = spec.width, spec.height, pix_fmt
        if self.codec == "mpeg4":  # a fixed quantiser: 2 (its best but one) unless --video-crf says otherwise
            quantiser = 2 if self.encoding.crf is None else max(1, min(31, self.encoding.crf))
            video.codec_context.qmin = video.codec_context.qmax = quantiser
        time_base = 1 / rate if self.container_name == "avi" else spec.time_base
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if self.codec != "gif":
            for name in ("color_range", "colorspace", "color_primaries", "color_trc"):
                with contextlib.suppress(AttributeError, TypeError, ValueError):
                    setattr(video.codec_context, name, getattr(spec, name))
        return video

    def write_video(self, frame: ClipFrame, pts: int) -> None:
        """Encode a frame at ``pts`` (in the input's time base)."""
        if self.rotation is None:  # the first frame: its rotation goes into the header, written with it
            self.rotation = _frame_rotation(frame.source) if frame.source is not None else 0
            if self.rotation:
                self.video.set_display_rotation(self.rotation)
        duration = getattr(frame.source, "duration", None) or 0
        self.end_seconds = float((pts + duration) * self.spec.time_base)
        if self.time_base != self.spec.time_base:
            pts = round(pts * self.spec.time_base / self.time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # a damaged or duplicated timestamp: keep the order the encoder needs
        self._last_pts = pts
        encoded = self._frame_to_encode(frame)
        encoded.pts = pts
        encoded.time_base = self.time_base
        self.output.mux(self.video.encode(encoded))
        self.frames += 1

    def _frame_to_encode(self, frame: ClipFrame) -> Any:
        target = self.video.pix_fmt
        picture = frame.restored if frame.restored is not None else frame.image
        if target == "pal8":
            return _palette_frame(self.av, as_stored(picture, self.rotation or 0))
        source = frame.source
        if frame.restored is None and source is not None and getattr(source, "format", None) is not None:
            if source.format.name == target:
                return source  # exactly the decoded pixels
            return source.reformat(format=target, **_color_arguments(self.av, self.spec, to_rgb=False, from_frame=True))
        rgb = as_stored(picture, self.rotation or 0)
        new = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:, :, :3]), format="rgb24")
        if target == "rgb24":
            return new
        return new.reformat(format=target, **_color_arguments(self.av, self.spec, to_rgb=False))

    def finish(self) -> None:
        self.output.mux(self.video.encode(None))
        for target in self.audio.values():
            if isinstance(target, tuple):
                decoder, encoder, resampler = target
                for frame in decoder.decode(None):
                    frame.pts = None
                    for resampled in resampler.resample(frame):
                        self.output.mux(encoder.encode(resampled))
                self.output.mux(encoder.encode(None))
        self.output.close()


def _color_arguments(av: Any, spec: _VideoSpec, *, to_rgb: bool, from_frame: bool = False) -> dict[str, Any]:
    """swscale's colour arguments: the input's matrix and range on the YUV side, full range on the RGB side."""
    full = av.video.reformatter.ColorRange.JPEG
    video_range = spec.color_range or av.video.reformatter.ColorRange.MPEG
    space = spec.colorspace if spec.colorspace not in (0, 2) else None  # 0 RGB, 2 unspecified: swscale's default
    if from_frame:
        return {"src_color_range": video_range, "dst_color_range": video_range, "src_colorspace": space, "dst_colorspace": space}
    if to_rgb:
        return {"src_color_range": video_range, "dst_color_range": full, "src_colorspace": space}
    return {"src_color_range": full, "dst_color_range": video_range, "dst_colorspace": space}


def _palette_frame(av: Any, rgb: np.ndarray) -> Any:
    """An 8-bit palette frame (GIF) from RGB: Pillow's median cut, a palette of this frame's own."""
    from PIL import Image

    quantized = Image.fromarray(np.ascontiguousarray(rgb[:, :, :3])).quantize(256)
    colours = np.array(quantized.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255
    palette[: len(colours), 1:] = colours
    return av.VideoFrame.from_ndarray((np.array(quantized), palette), format="pal8")


def _decoded_rgb(av: Any, frame: Any, spec: _VideoSpec, rotation: int) -> np.ndarray:
    rgb = frame.reformat(format="rgb24", **_color_arguments(av, spec, to_rgb=True)).to_ndarray()
    return upright(rgb, rotation)


def _items(
    av: Any, container: Any, video: Any, audio: list[Any], spec: _VideoSpec, frames: tuple[int, int | None] | None, name: str
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
                    yield ClipFrame(index, _decoded_rgb(av, frame, spec, _frame_rotation(frame)), source=frame)
                index += 1
    except av.FFmpegError as error:
        raise VideoFileError(f"{name}: damaged or truncated at frame {index} ({_reason(error)})") from None


def _webp_items(source: Source, frames: tuple[int, int | None] | None) -> Iterator[Any]:
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


def _webp_spec(source: Source, max_pixels: int | None) -> _VideoSpec:
    from PIL import Image

    try:
        with Image.open(source) as image:
            width, height = image.size
            count = getattr(image, "n_frames", 1)
    except (OSError, ValueError, SyntaxError) as error:
        raise VideoFileError(f"{name_of(source)}: not a readable animated image ({error})") from None
    _check_size(width, height, max_pixels, name_of(source))
    return _VideoSpec(width, height, fractions.Fraction(1, 1000), fractions.Fraction(25), None, count, None)


@contextlib.contextmanager
def _output_target(destination: Source, container_name: str) -> Iterator[tuple[Any, Path | None]]:
    """What to write into: a temporary file beside the destination (renamed by the caller), or the stream given."""
    if not isinstance(destination, (str, os.PathLike)):
        yield destination, None
        return
    final = Path(destination)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(handle)
    try:
        with open_for_writing(Path(temporary)) as stream:
            yield stream, Path(temporary)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def open_for_writing(path: Path) -> IO[bytes]:
    """The temporary output file, opened for PyAV to write through (the tests replace it with a disk that fills up)."""
    return open(path, "wb")


def _same_file(source: Source, destination: Source) -> bool:
    paths = (str, os.PathLike)
    return isinstance(source, paths) and isinstance(destination, paths) and Path(source).resolve() == Path(destination).resolve()


def transcode(
    source: Source,
    destination: Source,
    process: Process,
    encoding: EncodingOptions,
    *,
    progress: Progress | None = None,
) -> Transcoded:
    """Decode ``source``, pass its frames and audio packets through ``process``, encode the result to ``destination``."""
    av = import_av()
    name = name_of(source)
    if _same_file(source, destination):
        raise VideoFileError(f"{name}: the output would replace the input; write it elsewhere")
    container_name = output_container(destination, encoding, source)
    if encoding.frames is not None and encoding.frames[1] is not None and encoding.frames[1] <= encoding.frames[0]:
        raise VideoFileError(f"--frames {encoding.frames[0]}:{encoding.frames[1]} selects no frame")
    with contextlib.ExitStack() as stack:
        if is_animated_webp(source):
            spec = _webp_spec(source, encoding.max_pixels)
            items: Iterator[Any] = _webp_items(source, encoding.frames)
            audio_streams: list[Any] = []
        else:
            container = stack.enter_context(_open_input(av, source))
            video = _video_stream(container, name)
            spec = _video_spec(video, container)
            _check_size(spec.width, spec.height, encoding.max_pixels, name)
            video.thread_type = "AUTO"
            audio_streams = list(container.streams.audio) if encoding.audio else []
            items = _items(av, container, video, audio_streams, spec, encoding.frames, name)
            spec.metadata = {key: value for key, value in container.metadata.items() if key.lower() not in _FORMAT_TAGS}
        total = _expected_frames(spec, encoding.frames)
        with _output_target(destination, container_name) as (target, temporary):
            result = _write(av, target, container_name, spec, encoding, items, audio_streams, process, progress, total, name)
        if temporary is not None:
            move_into_place(temporary, Path(destination))
            result.destination = Path(destination)
        return result


def _expected_frames(spec: _VideoSpec, frames: tuple[int, int | None] | None) -> int:
    total = spec.frames or (round(spec.duration * float(spec.rate)) if spec.duration and spec.rate else 0)
    if frames is None:
        return total
    start, end = frames
    if end is not None:
        return end - start if not total else max(0, min(end, total) - start)
    return max(0, total - start) if total else 0


def _write(
    av: Any,
    target: Any,
    container_name: str,
    spec: _VideoSpec,
    encoding: EncodingOptions,
    items: Iterator[Any],
    audio_streams: list[Any],
    process: Process,
    progress: Progress | None,
    total: int,
    name: str,
) -> Transcoded:
    try:
        writer = _Writer(av, target, container_name, spec, encoding)
    except (av.FFmpegError, OSError) as error:
        raise VideoFileError(f"could not start writing the output for {name} ({_reason(error)})") from None
    try:
        writer.add_audio(audio_streams)
        shift_pts: int | None = None
        shift_seconds = 0.0
        waiting_audio: list[AudioPacket] = []  # audio ahead of the first frame: written once the header is
        for item in process(items):
            if isinstance(item, ClipFrame):
                pts = _frame_pts(item, spec, writer.frames)
                if shift_pts is None:
                    shift_pts = pts if encoding.frames is not None else 0
                    shift_seconds = float(shift_pts * spec.time_base)
                writer.write_video(item, pts - shift_pts)
                for packet in waiting_audio:
                    writer.write_audio(packet, shift_seconds)
                waiting_audio = []
                if progress is not None:
                    progress(writer.frames, max(total, writer.frames))
            elif isinstance(item, AudioPacket):
                if shift_pts is None:
                    waiting_audio.append(item)
                else:
                    writer.write_audio(item, shift_seconds)
        if writer.frames == 0:
            raise VideoFileError(f"{name}: has no video frames" + (" in the range asked for" if encoding.frames else ""))
        _check_complete(spec, writer.frames, writer.end_seconds, encoding.frames, name)
        writer.finish()
    except OSError as error:
        raise VideoFileError(f"could not write the output for {name} ({error.strerror or error})") from None
    except av.FFmpegError as error:
        raise VideoFileError(f"could not write the output for {name} ({_reason(error)})") from None
    finally:
        with contextlib.suppress(Exception):
            writer.output.close()
    return Transcoded(writer.frames, writer.notes)


def _frame_pts(frame: ClipFrame, spec: _VideoSpec, written: int) -> int:
    """The frame's timestamp in the stream's time base; one from its position where the file has none."""
    pts = getattr(frame.source, "pts", None)
    if pts is not None:
        return int(pts)
    rate = spec.rate if spec.rate and spec.rate > 0 else fractions.Fraction(25)
    return round(written / rate / spec.time_base)


def _check_complete(spec: _VideoSpec, written: int, end: float, frames: tuple[int, int | None] | None, name: str) -> None:
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
