"""Frames in, restored frames out: follow the faces, restore them in shared batches, overlap the stages.

Four stages run at once, each in its own thread, joined by small bounded
queues (so memory holds a few frames, whatever the clip's length):

1. decoding (``io``, or any iterable of frames);
2. analysis: cut detection, face motion, detection when the tracker asks
   for it, tracking and smoothing (``tracking``);
3. restoration: frames are gathered until their faces fill the restorer's
   network batch, then restored together (``FaceRestorer.restore_many``
   with the tracked landmarks, so the restorer does not detect again);
4. encoding (``io``), in the caller's thread.

Items that are not frames (audio packets, for one) pass through every stage
in their place, so the output keeps the input's order. A frame in which no
face is restored is passed on as it was decoded (``ClipFrame.restored`` is
None), so the encoder can reuse the decoded pixels exactly.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from ..faces.detection import DEFAULT_CONFIDENCE, detect_faces
from ..options import RestoreOptions
from ..restorer import FaceRestorer
from . import motion
from .encoding import EncodingOptions
from .frames import ClipFrame
from .smoothing import TemporalFaceFilter
from .tracking import FaceTracker, TrackingParameters

Item = TypeVar("Item")
Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]

# Frames a restoration chunk may hold while it waits for enough faces to fill a network batch.
MAX_FRAMES_PER_CHUNK = 16
# Items each queue between two stages holds.
QUEUE_SIZE = 8


class VideoInterrupted(Exception):
    """``should_stop()`` asked to stop; nothing was written."""


@dataclass
class VideoResult:
    """What ``restore_video`` did."""

    frames: int = 0  # frames written
    faces_restored: int = 0  # faces restored, summed over frames
    faces_enlarged: int = 0  # of those, faces the restorer's face upscaler enlarged (larger than the 512 px crop)
    frames_with_faces: int = 0
    tracks: int = 0  # distinct faces followed
    detections: int = 0  # frames detection ran on
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what could not be kept as it was (audio re-encoded, ...)
    destination: Path | None = None


def in_thread(items: Iterable[Item], name: str, maxsize: int = QUEUE_SIZE) -> Iterator[Item]:
    """Iterate ``items`` in a thread of its own, ``maxsize`` items ahead; its exceptions come out here.

    When the consumer stops early (an error, ``close()``), the thread stops
    at its next item and the iterable is closed in it.
    """
    handoff: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def put(entry: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as error:  # handed to the consumer, raised there
            put(("error", error))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=run, name=f"codeformer-video-{name}", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stop.set()
        worker.join()


def analyse(
    items: Iterable[Any], restorer: FaceRestorer, settings: RestoreOptions, tracking: TrackingParameters
) -> Iterator[Any]:
    """Give each frame its tracked faces (detecting where the tracker asks); other items pass through."""
    tracker = FaceTracker(tracking)
    detector = restorer.detector(settings.detector)
    threshold = settings.confidence if settings.confidence is not None else DEFAULT_CONFIDENCE[detector.name]
    previous_thumbnail = None
    for item in items:
        if isinstance(item, ClipFrame):
            gray = motion.gray(item.image)
            thumbnail = motion.thumbnail(gray)
            cut = motion.is_cut(previous_thumbnail, thumbnail)
            previous_thumbnail = thumbnail
            if tracker.advance(gray, cut):
                tracker.correct(detect_faces(detector, item.image, threshold, restorer.detection_max_side))
                item.detected = True
            item.faces = tracker.faces
        yield item


def restore_chunks(
    items: Iterable[Any],
    restorer: FaceRestorer,
    options: dict[str, Any],
    tracking: TrackingParameters,
    should_stop: ShouldStop | None = None,
    coverage: bool = False,
) -> Iterator[Any]:
    """Restore frames in chunks whose faces fill whole network batches; items come out in their order."""
    temporal = None if tracking.temporal is None else TemporalFaceFilter(tracking.temporal)
    chunk: list[Any] = []
    faces = frames = 0
    for item in items:
        chunk.append(item)
        if isinstance(item, ClipFrame):
            frames += 1
            faces += len(item.faces)
        if (faces and faces % restorer.batch_size == 0) or frames >= MAX_FRAMES_PER_CHUNK:
            if should_stop is not None and should_stop():
                raise VideoInterrupted("stopped on request")
            _restore_chunk(chunk, restorer, options, temporal, coverage)
            yield from chunk
            chunk, faces, frames = [], 0, 0
    if chunk:
        _restore_chunk(chunk, restorer, options, temporal, coverage)
        yield from chunk


def _restore_chunk(
    chunk: list[Any],
    restorer: FaceRestorer,
    options: dict[str, Any],
    temporal: TemporalFaceFilter | None,
    coverage: bool = False,
) -> None:
    frames = [item for item in chunk if isinstance(item, ClipFrame) and item.faces]
    if temporal is not None:
        last = next((item for item in reversed(chunk) if isinstance(item, ClipFrame)), None)
        alive = {face.track_id for face in (last.faces if last is not None else [])}
        alive.update(face.track_id for frame in frames for face in frame.faces)
        temporal.keep_only(alive)
    if not frames:
        return
    track_ids = [[face.track_id for face in frame.faces] for frame in frames]
    results = restorer.restore_many(
        [frame.image for frame in frames],
        landmarks=[[face.landmarks for face in frame.faces] for frame in frames],
        face_filter=None if temporal is None else temporal.for_frames(track_ids),
        coverage=coverage,
        **options,
    )
    for frame, result in zip(frames, results, strict=True):
        frame.results = result.faces
        frame.coverage = result.coverage
        frame.changed = result.changed
        if result.restored_count:
            frame.restored = result.image


def restore_frames(
    restorer: FaceRestorer,
    items: Iterable[Any],
    *,
    tracking: TrackingParameters | None = None,
    should_stop: ShouldStop | None = None,
    coverage: bool = False,
    **options: Any,
) -> Iterator[Any]:
    """Every ``ClipFrame`` of ``items`` with its faces restored, in order; other items pass through.

    Decoding (iterating ``items``), analysis and restoration each run in a
    thread of their own; the caller's thread takes the results (and encodes).
    """
    settings = RestoreOptions.checked(**options)
    if settings.aligned:
        raise ValueError("aligned inputs are single faces, not video frames: leave out aligned=True for videos")
    tracking = tracking or TrackingParameters()
    decoded = in_thread(items, "decode")
    analysed = in_thread(analyse(decoded, restorer, settings, tracking), "analyse")
    yield from in_thread(restore_chunks(analysed, restorer, options, tracking, should_stop, coverage), "restore")


def restore_array_frames(
    restorer: FaceRestorer,
    frames: Iterable[np.ndarray],
    *,
    tracking: TrackingParameters | None = None,
    should_stop: ShouldStop | None = None,
    coverage: bool = False,
    **options: Any,
) -> Iterator[ClipFrame]:
    """``restore_frames`` for frames held in memory as RGB arrays (a ComfyUI IMAGE batch; no decoder needed);
    ``coverage``: each frame also says where faces were pasted (``ClipFrame.coverage``)."""
    numbered = (ClipFrame(index, image) for index, image in enumerate(frames))
    yield from restore_frames(restorer, numbered, tracking=tracking, should_stop=should_stop, coverage=coverage, **options)


def restore_video(
    restorer: FaceRestorer,
    source: str | Path | IO[bytes],
    destination: str | Path | IO[bytes],
    *,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    tracking: TrackingParameters | None = None,
    encoding: EncodingOptions | None = None,
    **options: Any,
) -> VideoResult:
    """Restore every face of a video file (paths or binary file objects) with ``restorer``, steadily; needs PyAV.

    Takes ``FaceRestorer.restore``'s options, plus ``encoding`` (how the
    output is written) and ``tracking`` (how faces are followed; see
    ``tracking.tracking_parameters`` for the two options every front end
    shows). Frames are decoded, restored and encoded as a stream;
    ``progress(done, total)`` is called per frame written, ``should_stop()``
    asked between batches (``VideoInterrupted``: nothing is written).
    """
    from .transcode import transcode

    settings = RestoreOptions.checked(**options)
    if settings.aligned:
        raise ValueError("aligned inputs are single faces, not video frames: leave out aligned=True for videos")
    encoding = encoding or EncodingOptions()
    started = time.perf_counter()
    result = VideoResult()
    track_ids: set[int] = set()

    def restored(items: Iterable[Any]) -> Iterator[Any]:
        for item in restore_frames(restorer, items, tracking=tracking, should_stop=should_stop, **options):
            if isinstance(item, ClipFrame):
                result.faces_restored += item.restored_count
                result.faces_enlarged += sum(face.enlarged for face in item.results)
                result.frames_with_faces += bool(item.restored_count)
                result.detections += item.detected
                track_ids.update(face.track_id for face in item.faces)
            yield item

    transcoded = transcode(source, destination, restored, encoding, progress=progress)
    result.frames = transcoded.frames
    result.notes = transcoded.notes
    result.destination = transcoded.destination
    result.tracks = len(track_ids)
    result.seconds = time.perf_counter() - started
    return result
