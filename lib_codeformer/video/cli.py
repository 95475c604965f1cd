"""What ``python -m lib_codeformer restore`` needs for video inputs: the suffixes, the options, one file restored.

The command line (``frontends/cli.py``) wires these in:

- ``VIDEO_SUFFIXES`` for ``storage.images.iter_inputs`` (images and videos,
  also inside folders), and ``is_video_file`` to send each input to the image
  path or to ``restore_video_file``;
- ``add_arguments(restore_parser)`` for the video options, and
  ``settings_from_args(args)`` to read them (``ValueError``: a usage error);
- ``video_target`` for a video's output path (its suffix follows ``--video-format``);
- ``restore_video_file`` per video: temporary file renamed when complete, a
  progress bar with frames/s and time left, a one-line summary; it raises
  ``VideoFileError`` (a message for that file: the others go on, exit 1);
- ``summary_line`` for the end of the run.

PyAV is imported only when a video is restored, so a command line without
it restores images as before and says what to install for videos.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import DEFAULT_MAX_PIXELS
from .smoothing import UNSMOOTHED
from .tracking import DEFAULT_DETECT_EVERY, TrackingParameters

if TYPE_CHECKING:
    from ..restorer import FaceRestorer
    from .io import EncodingOptions
    from .pipeline import VideoResult

# Always videos. GIF and WebP are videos when they have more than one frame (else images).
VIDEO_ONLY_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
ANIMATED_SUFFIXES = frozenset({".gif", ".webp"})
VIDEO_SUFFIXES = VIDEO_ONLY_SUFFIXES | ANIMATED_SUFFIXES
VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm", "avi", "gif", "webp")


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the command line restores ``path`` as a video: a video suffix, or an animated GIF/WebP."""
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The video options of ``restore`` (the image options apply to videos too)."""
    group = parser.add_argument_group("videos (.mp4 .mov .mkv .webm .avi, animated .gif/.webp; needs PyAV: pip install av)")
    group.add_argument(
        "--video-crf",
        type=int,
        default=None,
        metavar="Q",
        help="video quality, lower is better (constant rate factor; default 18 for H.264, visually lossless)",
    )
    group.add_argument(
        "--video-codec",
        default=None,
        metavar="NAME",
        help="FFmpeg encoder (default: libx264 where the container takes it, else a (visually) lossless one)",
    )
    group.add_argument(
        "--video-format",
        choices=VIDEO_FORMATS,
        default=None,
        help="container of the results (default: the input's)",
    )
    group.add_argument("--frames", default=None, metavar="START:END", help="only frames START to END-1 (counted from 0)")
    group.add_argument("--no-audio", action="store_true", help="leave the sound out (by default every audio stream is copied)")
    group.add_argument(
        "--detect-every",
        type=int,
        default=DEFAULT_DETECT_EVERY,
        metavar="N",
        help=f"detect faces on every N-th frame, follow them by optical flow between (default {DEFAULT_DETECT_EVERY})",
    )
    group.add_argument(
        "--no-steady",
        action="store_true",
        help="align each frame on its own detection (as frame-by-frame restoration does): faces flicker more",
    )


@dataclass(frozen=True)
class VideoSettings:
    encoding: EncodingOptions
    tracking: TrackingParameters
    video_format: str | None = None


def settings_from_args(args: argparse.Namespace) -> VideoSettings:
    """The video settings from parsed arguments; ValueError naming every problem (a usage error)."""
    from .io import EncodingOptions, parse_frame_range

    problems = []
    frames = None
    if args.frames is not None:
        try:
            frames = parse_frame_range(args.frames)
        except ValueError as error:
            problems.append(str(error))
    if args.video_crf is not None and not 0 <= args.video_crf <= 63:
        problems.append(f"--video-crf must be in 0..63 (got {args.video_crf})")
    if args.detect_every < 1:
        problems.append(f"--detect-every must be at least 1 (got {args.detect_every})")
    if problems:
        raise ValueError("; ".join(problems))
    encoding = EncodingOptions(
        codec=args.video_codec,
        crf=args.video_crf,
        container=f".{args.video_format}" if args.video_format else None,
        audio=not args.no_audio,
        frames=frames,
        max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
    )
    return VideoSettings(encoding, steadiness(args.detect_every, steady=not args.no_steady), args.video_format)


def steadiness(detect_every: int, *, steady: bool) -> TrackingParameters:
    """Tracking as the command line runs it; ``steady=False`` is frame-by-frame alignment (every frame detected)."""
    if not steady:
        return TrackingParameters(detect_every=1, max_missed=0, smoothing=UNSMOOTHED, follow_motion=False, temporal=None)
    return TrackingParameters(detect_every=detect_every)


def video_target(relative: Path, settings: VideoSettings) -> Path:
    """A video's output path relative to the output folder: its own name, the suffix of ``--video-format`` if given."""
    if settings.video_format is None:
        return relative
    suffix = ".mkv" if settings.video_format == "mkv" else f".{settings.video_format}"
    return relative.with_suffix(suffix)


@dataclass
class VideoCounts:
    """What the run's summary says about videos."""

    videos: int = 0
    frames: int = 0
    faces: int = 0
    failed: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, result: VideoResult) -> None:
        self.videos += 1
        self.frames += result.frames
        self.faces += result.faces_restored
        self.seconds += result.seconds


def restore_video_file(
    restorer: FaceRestorer,
    source: Path,
    target: Path,
    settings: VideoSettings,
    options: dict[str, Any],
    *,
    quiet: bool = False,
) -> VideoResult:
    """Restore one video to ``target`` (written to a temporary file, renamed when complete), with a progress bar.

    Raises ``VideoFileError`` (or ``MissingDependency`` without PyAV) with
    a message for this file; nothing is left at ``target`` then, and the
    input is never modified.
    """
    from tqdm import tqdm

    from .io import VideoFileError
    from .pipeline import VideoInterrupted, restore_video

    started = time.perf_counter()
    with tqdm(total=0, unit="frame", disable=quiet, file=sys.stderr, desc=source.name, leave=False) as bar:

        def progress(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            result = restore_video(
                restorer, source, target, progress=progress, tracking=settings.tracking, encoding=settings.encoding, **options
            )
        except (VideoFileError, VideoInterrupted):
            raise
        except ValueError as error:  # the options, or a frame the pipeline cannot take
            raise VideoFileError(f"{source}: {error}") from None
    elapsed = time.perf_counter() - started
    if not quiet:
        rate = result.frames / elapsed if elapsed > 0 else 0.0
        print(
            f"{source}: {result.frames} frames, {result.faces_restored} faces restored "
            f"({result.tracks} followed), {elapsed:.1f} s ({rate:.2f} frames/s) -> {target}",
            file=sys.stderr,
        )
        for note in result.notes:
            print(f"  note: {note}", file=sys.stderr)
    return result


def summary_line(counts: VideoCounts) -> str:
    """The run's summary for its videos."""
    rate = counts.frames / counts.seconds if counts.seconds > 0 else 0.0
    return (
        f"{counts.videos} videos written ({counts.frames} frames, {counts.faces} faces restored, "
        f"{counts.seconds:.1f} s, {rate:.2f} frames/s), {counts.failed} failed"
    )


def restore_videos(
    restorer: FaceRestorer,
    work: Iterable[tuple[Path, Path]],
    settings: VideoSettings,
    options: dict[str, Any],
    *,
    quiet: bool = False,
) -> VideoCounts:
    """Each (source, target) in turn; a failure is reported and counted, the other videos are still restored."""
    from ..errors import MissingDependency, WeightsError
    from .io import VideoFileError

    counts = VideoCounts()
    for source, target in work:
        try:
            counts.add(restore_video_file(restorer, source, target, settings, options, quiet=quiet))
        except WeightsError:
            raise
        except (VideoFileError, MissingDependency, OSError) as error:
            counts.failed += 1
            message = str(error) if str(source) in str(error) else f"{source}: {error}"
            print(f"failed: {message}", file=sys.stderr)
        except Exception as error:
            counts.failed += 1
            print(f"failed: {source}: {type(error).__name__}: {error}", file=sys.stderr)
    return counts
