"""The restore command's videos: one file at a time, with a progress bar and a line of what was done.

``lib_codeformer.video`` does the work (decoding, tracking, restoring,
encoding); this module adds what a terminal user sees, and the flag names
to the library's messages where an option was at fault.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import VideoSettings, with_flags

if TYPE_CHECKING:
    from ...restorer import FaceRestorer
    from ...video.pipeline import VideoResult


def video_target(relative: Path, settings: VideoSettings) -> Path:
    """A video's output path relative to the output folder: its own name, the suffix of ``--video-format`` if given."""
    if settings.video_format is None:
        return relative
    return relative.with_suffix(f".{settings.video_format}")


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

    from ...video import restore_video
    from ...video.errors import VideoFileError
    from ...video.pipeline import VideoInterrupted

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
        except VideoFileError as error:
            raise VideoFileError(with_flags(str(error))) from None
        except VideoInterrupted:
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
        if result.faces_enlarged and restorer.face_upscaler is not None:
            faces = f"{result.faces_enlarged} face{'s' if result.faces_enlarged > 1 else ''}"
            print(f"  note: {faces} enlarged with {restorer.face_upscaler.name}", file=sys.stderr)
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
    from ...errors import MissingDependency, WeightsError
    from ...video.errors import VideoFileError

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
