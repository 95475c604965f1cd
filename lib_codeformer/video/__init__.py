"""Video restoration: every face of a clip, followed from frame to frame and held steady, sound kept.

Sits below ``restorer`` in the layering: it drives the ``FaceRestorer`` it is
handed, through its public API (its imports of ``restorer`` are for type
checking only), and ``FaceRestorer.restore_video`` calls into it. PyAV (``av``, the ``[video]`` extra) is
imported only by ``io``, so the pure parts (``smoothing``, ``motion``,
``tracking``, ``steadiness``, ``pipeline``) work without it.

- ``smoothing``: how a face's five landmarks are filtered over time (pure numpy);
- ``motion``: how far a face moved between two frames (optical flow), and scene cuts;
- ``tracking``: one track per face, detections matched to tracks;
- ``pipeline``: frames in, restored frames out, stages overlapping in threads;
- ``io``: decoding, encoding, audio and metadata with PyAV;
- ``steadiness``: the test clip with known motion, and the flicker and lag metrics;
- ``cli``: what the command line's ``restore`` needs for video inputs.
"""

from __future__ import annotations

from ..exports import lazy_exports

_EXPORTS = {
    "restore_video": "pipeline",
    "VideoResult": "pipeline",
    "VideoFileError": "io",
    "VIDEO_SUFFIXES": "cli",
    "is_video_file": "cli",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
