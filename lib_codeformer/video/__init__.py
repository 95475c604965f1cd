"""Video restoration: every face of a clip, followed from frame to frame and held steady, sound kept.

A client of the restorer, as batches and clusters are: it drives the
``FaceRestorer`` it is handed through its public API
(``restore_video(restorer, source, destination, ...)``), and the restorer
knows nothing of video. PyAV (``av``, the ``[video]`` extra) is imported
only when a file is decoded or encoded, so the pure parts work without it.

- ``smoothing``: how a face's five landmarks are filtered over time (pure numpy);
- ``motion``: how far a face moved between two frames (optical flow), and scene cuts;
- ``tracking``: one track per face, detections matched to tracks;
- ``pipeline``: frames in, restored frames out, stages overlapping in threads;
- ``containers``: which files are videos, and the muxer, encoder and pixel format for each;
- ``decoding``, ``encoding``: frames and sound out of a file and into one, with PyAV;
- ``transcode``: one file in, its restored copy out, written atomically;
- ``frames``, ``errors``: the frame on its way through, and what goes wrong with a file.
"""

from __future__ import annotations

from ..exports import lazy_exports

_EXPORTS = {
    "restore_video": "pipeline",
    "restore_array_frames": "pipeline",
    "VideoResult": "pipeline",
    "VideoInterrupted": "pipeline",
    "EncodingOptions": "encoding",
    "VideoFileError": "errors",
    "VIDEO_SUFFIXES": "containers",
    "is_video_file": "containers",
    "tracking_parameters": "tracking",
    "TrackingParameters": "tracking",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
