"""A video in, its restored copy out: decode, process the frames in order, encode, written atomically.

``transcode`` reads a video, hands its frames (``ClipFrame``) and its audio
packets, in the file's order, to a processing function (the restoration
pipeline), and writes what comes back. The output is written to a temporary
file in the destination's folder (named as every file the project writes,
``storage.atomic``, so that a later run removes what a killed one left) and
renamed when complete; on any failure it is removed. The input is only read.
"""

from __future__ import annotations

import contextlib
import fractions
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..storage.atomic import atomic_output
from . import decoding
from .containers import Source, import_av, is_animated_webp, name_of, output_container
from .decoding import AudioPacket, VideoSpec
from .encoding import EncodingOptions, Writer
from .errors import VideoFileError, ffmpeg_reason
from .frames import ClipFrame

Process = Callable[[Iterable[Any]], Iterable[Any]]
Progress = Callable[[int, int], None]


@dataclass
class Transcoded:
    frames: int = 0
    notes: list[str] = field(default_factory=list)
    destination: Path | None = None


@contextlib.contextmanager
def _output_target(destination: Source) -> Iterator[Any]:
    """What to write into: a temporary file beside the destination (``storage.atomic``: renamed onto it when
    complete, removed on failure, left for the next run's clean-up if this process is killed), or the stream given."""
    if not isinstance(destination, (str, os.PathLike)):
        yield destination
        return
    with atomic_output(Path(destination)) as temporary, open_for_writing(temporary) as stream:
        yield stream


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
    container_name = output_container(destination, encoding.container, source)
    if encoding.frames is not None and encoding.frames[1] is not None and encoding.frames[1] <= encoding.frames[0]:
        raise VideoFileError(f"the frames option {encoding.frames[0]}:{encoding.frames[1]} selects no frame")
    with contextlib.ExitStack() as stack:
        if is_animated_webp(source):
            spec = decoding.webp_spec(source, encoding.max_pixels)
            items: Iterator[Any] = decoding.webp_frames(source, encoding.frames)
            audio_streams: list[Any] = []
        else:
            container = stack.enter_context(decoding.open_input(av, source))
            video = decoding.video_stream(container, name)
            spec = decoding.video_spec(video, container)
            decoding.check_size(spec.width, spec.height, encoding.max_pixels, name)
            video.thread_type = "AUTO"
            audio_streams = list(container.streams.audio) if encoding.audio else []
            items = decoding.frames_and_audio(av, container, video, audio_streams, spec, encoding.frames, name)
            spec.metadata = {key: value for key, value in container.metadata.items() if key.lower() not in decoding.FORMAT_TAGS}
        total = decoding.expected_frames(spec, encoding.frames)
        with _output_target(destination) as target:
            result = _write(av, target, container_name, spec, encoding, items, audio_streams, process, progress, total, name)
        if isinstance(destination, (str, os.PathLike)):
            result.destination = Path(destination)
        return result


def _write(
    av: Any,
    target: Any,
    container_name: str,
    spec: VideoSpec,
    encoding: EncodingOptions,
    items: Iterator[Any],
    audio_streams: list[Any],
    process: Process,
    progress: Progress | None,
    total: int,
    name: str,
) -> Transcoded:
    try:
        writer = Writer(av, target, container_name, spec, encoding)
    except (av.FFmpegError, OSError) as error:
        raise VideoFileError(f"could not start writing the output for {name} ({ffmpeg_reason(error)})") from None
    processed = None
    try:
        writer.add_audio(audio_streams)
        shift_pts: int | None = None
        shift_seconds = 0.0
        waiting_audio: list[AudioPacket] = []  # audio ahead of the first frame: written once the header is
        processed = process(items)
        for item in processed:
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
        decoding.check_complete(spec, writer.frames, writer.end_seconds, encoding.frames, name)
        writer.finish()
    except OSError as error:
        raise VideoFileError(f"could not write the output for {name} ({error.strerror or error})") from None
    except av.FFmpegError as error:
        raise VideoFileError(f"could not write the output for {name} ({ffmpeg_reason(error)})") from None
    finally:
        # However the writing ends, the pipeline's threads stop now, not whenever the garbage collector reaches a
        # generator that an error's traceback still holds.
        close = getattr(processed, "close", None)
        if close is not None:
            close()
        with contextlib.suppress(Exception):
            writer.output.close()
    return Transcoded(writer.frames, writer.notes)


def _frame_pts(frame: ClipFrame, spec: VideoSpec, written: int) -> int:
    """The frame's timestamp in the stream's time base; one from its position where the file has none."""
    pts = getattr(frame.source, "pts", None)
    if pts is not None:
        return int(pts)
    rate = spec.rate if spec.rate and spec.rate > 0 else fractions.Fraction(25)
    return round(written / rate / spec.time_base)
