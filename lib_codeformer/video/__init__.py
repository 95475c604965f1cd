"""Video restoration: every face of a clip, followed from frame to frame and held steady, sound kept.

Sits above ``restorer`` in the layering (it uses ``FaceRestorer``'s public
API; nothing below imports it). PyAV (``av``, the ``[video]`` extra) is
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

import importlib
from typing import Any

_EXPORTS = {
    "restore_video": "pipeline",
    "VideoResult": "pipeline",
    "VideoFileError": "io",
    "VIDEO_SUFFIXES": "cli",
    "is_video_file": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lib_codeformer.video' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
