"""Writing a video: the encoder for the container, the input's timing, colour tags and rotation, the sound.

Video keeps the input's resolution, frame timestamps (variable frame rate
too), frame count, rotation, colour range and colour space tags. A frame
that was not changed is encoded from the decoded frame itself, so its pixels
are exactly the decoded ones. The codec: H.264 where the container takes it
and the encoder exists, else a lossless or visually lossless one the
container takes (``containers.DEFAULT_CODECS``), or the one asked for.
4:2:0 needs even sizes: for an odd width or height the frame is written
4:4:4 where the codec has it, so no pixel is dropped. Every audio stream is
copied packet for packet where the container can hold its codec, else
re-encoded (a note says so); the container's metadata is copied.
"""

from __future__ import annotations

import contextlib
import fractions
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..options import DEFAULT_MAX_PIXELS
from .containers import AUDIO_REENCODE, DEFAULT_CRF, choose_codec, choose_pixel_format
from .decoding import AudioPacket, VideoSpec, as_stored, color_arguments, frame_rotation
from .errors import VideoFileError, ffmpeg_reason
from .frames import ClipFrame


@dataclass(frozen=True)
class EncodingOptions:
    """How the output is written."""

    codec: str | None = None  # FFmpeg encoder name; None: H.264 where possible (see DEFAULT_CODECS)
    crf: int | None = None  # constant rate factor (lower: better, bigger); None: the codec's default here
    container: str | None = None  # output suffix (".mp4", ...); None: the destination's suffix, else the input's
    audio: bool = True  # copy the audio streams
    frames: tuple[int, int | None] | None = None  # only frames START (counted from 0) to END (excluded)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # refuse larger frames (checked before decoding)


class Writer:
    """The output container: the video stream (its rotation set from the first frame) and the audio streams."""

    def __init__(self, av: Any, target: Any, container_name: str, spec: VideoSpec, encoding: EncodingOptions) -> None:
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
            raise VideoFileError(f"{self.codec} cannot be written into {self.container_name} ({ffmpeg_reason(error)})") from None
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
            self.rotation = frame_rotation(frame.source) if frame.source is not None else 0
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
            return source.reformat(format=target, **color_arguments(self.av, self.spec, to_rgb=False, from_frame=True))
        rgb = as_stored(picture, self.rotation or 0)
        new = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:, :, :3]), format="rgb24")
        if target == "rgb24":
            return new
        return new.reformat(format=target, **color_arguments(self.av, self.spec, to_rgb=False))

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


def _palette_frame(av: Any, rgb: np.ndarray) -> Any:
    """An 8-bit palette frame (GIF) from RGB: Pillow's median cut, a palette of this frame's own."""
    from PIL import Image

    quantized = Image.fromarray(np.ascontiguousarray(rgb[:, :, :3])).quantize(256)
    colours = np.array(quantized.getpalette()[: 256 * 3], dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)
    palette[:, 0] = 255
    palette[: len(colours), 1:] = colours
    return av.VideoFrame.from_ndarray((np.array(quantized), palette), format="pal8")
